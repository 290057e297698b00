"""The job queue and runner on the standalone host and the tiny model: order, cancel, failures, records."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from framepack.errors import InputError, ModelError
from framepack.host.standalone import StandaloneHost
from framepack.jobs.queue import JobQueue
from framepack.jobs.record import JobRecord
from framepack.request.events import Done, Progress, SectionDone, Stage, Status
from framepack.request.model import build_request
from framepack.request.output import OutputOptions

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False, preview=True, variant="f1")


def request(seed=1, sections=1, **fields):
    image = np.random.default_rng(max(seed, 0)).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return build_request(**{**FAST, "image": image, "prompt": "rain", "seed": seed, "duration": 0.4 * sections,
                            **fields})


@pytest.fixture
def host(tiny_model_dir, tmp_path):
    return StandaloneHost(output_dir=tmp_path, model=str(tiny_model_dir))


class Gate:
    """A listener that holds the worker at the job's first step until the test opens it."""

    def __init__(self):
        self.reached, self.open = threading.Event(), threading.Event()

    def __call__(self, event):
        if isinstance(event, Progress) and not self.reached.is_set():
            self.reached.set()
            assert self.open.wait(60)


def test_jobs_run_in_order_and_record_outputs(host):
    queue = JobQueue(host)
    jobs = [queue.submit(request(seed)) for seed in (1, 2, 3)]
    for job in jobs:
        assert job.wait(120)
    assert [job.status for job in jobs] == [Status.COMPLETED] * 3
    records = [job.record for job in jobs]
    assert records[0].started <= records[1].started <= records[2].started
    assert all(a.finished <= b.started for a, b in zip(records, records[1:]))  # one at a time
    videos = [host.video_dir() / records[i].video.rsplit("/", 1)[-1] for i in range(3)]
    assert all(video.exists() for video in videos)
    assert host.outputs == videos
    record = records[0]
    assert record.progress == 1.0 and record.frame_count == 13 and record.worker == "standalone"
    assert record.sections == record.sections_done == 1 and record.timings and record.error is None
    assert jobs[0].preview is not None and jobs[0].preview.dtype == np.uint8
    assert all(job.request is None for job in jobs)  # a finished job keeps its record, not its images
    queue.shutdown()


def test_a_record_is_plain_data_that_round_trips_through_json(host):
    queue = JobQueue(host)
    job = queue.submit(request(4, section_prompts="1: the rain stops"))
    assert job.wait(120)
    data = json.loads(json.dumps(job.record.to_dict()))
    assert data["status"] == "completed" and data["seed"] == 4 and data["outputs"]["video"].endswith(".mp4")
    assert data["settings"]["section_prompts"] == "1: the rain stops" and data["settings"]["output"]["codec"]
    assert JobRecord.from_dict(data) == job.record
    queue.shutdown()


def test_a_random_seed_is_resolved_at_submission(host):
    queue = JobQueue(host)
    job = queue.submit(request(seed=-1))
    assert 0 <= job.record.seed < 2**32 and job.request.seed == job.record.seed
    assert job.wait(120) and job.status == Status.COMPLETED
    queue.shutdown()


def test_events_reach_the_listener_by_type(host):
    events = []
    queue = JobQueue(host)
    job = queue.submit(request(5, sections=2), listener=events.append)
    assert job.wait(120)
    assert isinstance(events[0], Stage) and events[0].name == "loading"
    assert [e.position for e in events if isinstance(e, SectionDone)] == [0, 1]
    assert isinstance(events[-1], Done) and events[-1].status == Status.COMPLETED
    queue.shutdown()


def test_cancelled_only_before_it_started_interrupted_after(host):
    gate = Gate()
    queue = JobQueue(host)
    running = queue.submit(request(1, sections=6), listener=gate)
    waiting = queue.submit(request(2))
    assert gate.reached.wait(120)
    assert queue.ahead_of(waiting) == 1 and queue.ahead_of(running) == 0
    assert queue.cancel(waiting.id).status == Status.CANCELLED and waiting.wait(0)
    assert waiting.record.started is None and waiting.request is None
    queue.cancel(running.id)
    gate.open.set()
    assert running.wait(120)
    assert running.status == Status.INTERRUPTED and running.record.sections_done < 6
    assert queue.cancel(running.id).status == Status.INTERRUPTED  # finished: nothing changes
    queue.shutdown()


def test_an_interrupted_job_keeps_its_partial_video(host):
    def stop_after_the_first_section(event):
        if isinstance(event, SectionDone):
            queue.cancel(job.id)

    queue = JobQueue(host)
    job = queue.submit(request(1, sections=6), listener=stop_after_the_first_section)
    assert job.wait(120) and job.status == Status.INTERRUPTED
    assert job.record.sections_done == 1 and job.record.video is not None  # keep-incomplete
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
    assert first.status == Status.FAILED and "missing config.json" in first.record.error
    assert isinstance(first.exception, ModelError)
    assert second.status == Status.COMPLETED
    queue.shutdown()


def test_nothing_to_keep_when_incomplete_outputs_are_off(host):
    gate = Gate()
    queue = JobQueue(host)
    job = queue.submit(request(1, sections=6), OutputOptions(keep_incomplete=False), listener=gate)
    assert gate.reached.wait(120)
    queue.cancel(job.id)
    gate.open.set()
    assert job.wait(120) and job.status == Status.INTERRUPTED and job.record.video is None
    # no output; only the job's checkpoint (it stopped in its first section), kept to resume it
    assert [p.name for p in host.video_dir().iterdir()] == [".framepack-work"]
    assert job.record.resumable and Path(job.record.checkpoint).parent == host.video_dir() / ".framepack-work"
    queue.discard(job.id)
    assert list(host.video_dir().iterdir()) == [] and not job.record.resumable
    queue.shutdown()


def test_submission_checks_name_their_field_and_queue_nothing(host, tmp_path):
    queue = JobQueue(host)
    with pytest.raises(InputError) as refused:
        queue.submit(request(1, loras=[f"{tmp_path}/missing.safetensors:0.5"]),
                     OutputOptions(codec="nope264"))
    assert [problem.field for problem in refused.value.problems()] == [("output", "codec"), ("loras", 0)]
    assert queue.list() == []
    queue.shutdown()


def test_the_host_task_is_queued_at_submission_and_finished_with_the_job(host):
    calls = []

    class TaskHost(StandaloneHost):
        def task_queued(self, task_id):
            calls.append(("queued", task_id))

        def task_finished(self, task_id):
            calls.append(("finished", task_id, self.job.status))

    gate = Gate()
    task_host = TaskHost(output_dir=host.output_dir, model=host.model)
    queue = JobQueue(task_host)
    task_host.job = queue.submit(request(1, sections=2), task_id="task(a)", listener=gate)
    assert calls == [("queued", "task(a)")]
    waiting = queue.submit(request(2), task_id="task(b)")
    queue.cancel(waiting.id)  # removed before it started: its task ends at once
    assert calls[-1][:2] == ("finished", "task(b)")
    gate.open.set()
    assert task_host.job.wait(120)
    assert calls[-1] == ("finished", "task(a)", Status.COMPLETED)  # closed before waiters wake
    queue.shutdown()
