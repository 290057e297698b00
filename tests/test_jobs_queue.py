"""The job queue on the standalone host and the tiny model: order, cancel, failures."""

from __future__ import annotations

import numpy as np
import pytest

from framepack.errors import ModelError
from framepack.host.standalone import StandaloneHost
from framepack.request.output import OutputOptions
from framepack.jobs.queue import CANCELLED, DONE, FAILED, JobQueue
from framepack.request.model import build_request

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False, preview=True, variant="f1")


def request(seed=1, sections=1):
    image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return build_request(**FAST, image=image, prompt="rain", seed=seed, duration=0.4 * sections)


@pytest.fixture
def host(tiny_model_dir, tmp_path):
    return StandaloneHost(output_dir=tmp_path, model=str(tiny_model_dir))


def test_jobs_run_in_order_and_record_outputs(host):
    queue = JobQueue(host)
    jobs = [queue.submit(request(seed)) for seed in (1, 2, 3)]
    for job in jobs:
        assert job.wait(120)
    assert [job.status for job in jobs] == [DONE] * 3
    assert jobs[0].started <= jobs[1].started <= jobs[2].started
    assert all(a.finished <= b.started for a, b in zip(jobs, jobs[1:]))  # one at a time
    assert all(job.video.exists() and job.video.parent == host.video_dir() for job in jobs)
    assert host.outputs == [job.video for job in jobs]
    summary = jobs[0].to_dict()
    assert summary["progress"] == 1.0 and summary["frame_count"] == 13 and summary["video"] is True
    assert jobs[0].preview is not None and jobs[0].preview.dtype == np.uint8
    queue.shutdown()


def test_cancel_queued_and_running(host):
    queue = JobQueue(host)
    running = queue.submit(request(1, sections=6))
    waiting = queue.submit(request(2))
    while running.position < 1:  # one section finished, so there are frames to keep
        running.wait(0.05)
    assert queue.cancel(waiting.id).status == CANCELLED
    queue.cancel(running.id)
    assert running.wait(120)
    assert running.status == CANCELLED and running.position < 6
    assert running.video is not None  # keep-incomplete: the partial video is kept
    queue.shutdown()


def test_a_failed_job_never_blocks_the_queue(tiny_model_dir, tmp_path):
    class FlakyHost(StandaloneHost):
        calls = 0

        def pipeline(self, variant):
            FlakyHost.calls += 1
            if FlakyHost.calls == 1:
                raise ModelError("transformer: /models/x is missing config.json")
            return super().pipeline(variant)

    queue = JobQueue(FlakyHost(output_dir=tmp_path, model=str(tiny_model_dir)))
    first, second = queue.submit(request(1)), queue.submit(request(2))
    assert first.wait(60) and second.wait(120)
    assert first.status == FAILED and "missing config.json" in first.error
    assert second.status == DONE
    queue.shutdown()


def test_nothing_to_keep_when_incomplete_outputs_are_off(host):
    queue = JobQueue(host)
    job = queue.submit(request(1, sections=6), OutputOptions(keep_incomplete=False))
    while job.step == 0:
        job.wait(0.05)
    queue.cancel(job.id)
    assert job.wait(120) and job.status == CANCELLED and job.video is None
    assert list(host.video_dir().iterdir()) == []
    queue.shutdown()
