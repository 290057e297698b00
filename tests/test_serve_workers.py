"""Real `serve` processes on a job store: SIGKILL and restart, --workers 2, --cluster ray; a batch from the
CLI; a Ray worker killed mid-job."""

from __future__ import annotations

import base64
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from test_serve import CLI, ENV, ROOT, free_port

API = "/framepack/v1"
BODY = {"resolution": 32, "steps": 2, "latent_window_size": 3, "teacache": False, "variant": "f1", "duration": 0.4,
        "prompt": "rain"}


def start_serve(model: Path, out: Path, *extra: str):
    port = free_port()
    process = subprocess.Popen([*CLI, "serve", "--no-ui", "--port", str(port), "--model", str(model), "--output-dir",
                                str(out), "--log-level", "warning", *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    base = f"http://127.0.0.1:{port}{API}"
    deadline = time.monotonic() + 180
    while True:
        try:
            requests.get(f"{base}/codecs", timeout=30)
            return process, base
        except requests.ConnectionError:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "serve did not start in 180 s"
            time.sleep(0.3)


def stop(process) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.communicate(timeout=120)[1]
        except subprocess.TimeoutExpired:
            process.kill()
    return process.communicate()[1]


def image() -> str:
    return base64.b64encode((ROOT / "assets" / "demo.png").read_bytes()).decode()


def submit(base: str, seed: int, **fields) -> str:
    response = requests.post(f"{base}/jobs", json={**BODY, "image": image(), "seed": seed, **fields}, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_all(base: str, ids: list[str], timeout: float = 400) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        states = {job_id: requests.get(f"{base}/jobs/{job_id}", timeout=30).json() for job_id in ids}
        if all(state["status"] in ("completed", "failed", "interrupted", "cancelled") for state in states.values()):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.3)


def test_sigkill_serve_with_queued_jobs_then_restart(tiny_model_dir, tmp_path):
    process, base = start_serve(tiny_model_dir, tmp_path)
    try:
        first = submit(base, 10, duration=1.6)  # 4 sections: it is killed after the first
        waiting = [submit(base, seed) for seed in (11, 12, 13)]
        deadline = time.monotonic() + 180
        while requests.get(f"{base}/jobs/{first}", timeout=30).json()["sections_done"] < 1:
            assert time.monotonic() < deadline, "the first job made no progress"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    process, base = start_serve(tiny_model_dir, tmp_path, "--auto-resume")
    try:
        listed = {job["id"] for job in requests.get(f"{base}/jobs", timeout=30).json()["jobs"]}
        assert {first, *waiting} <= listed  # every job is still known
        states = wait_all(base, [first, *waiting])
    finally:
        stop(process)
    assert {state["status"] for state in states.values()} == {"completed"}, states
    assert states[first]["resumes"] == 1 and states[first]["frame_count"] == 49  # resumed, not started again
    assert all(states[job_id]["resumes"] == 0 for job_id in waiting)
    videos = sorted(path.name for path in tmp_path.glob("*.mp4"))
    assert videos == ["framepack-10.mp4", "framepack-11.mp4", "framepack-12.mp4", "framepack-13.mp4"]  # once each


@pytest.mark.parametrize("mode", [["--workers", "2"], ["--cluster", "ray", "--workers", "2"]], ids=["processes", "ray"])
def test_two_workers_finish_four_jobs(tiny_model_dir, tmp_path, mode):
    if mode[:2] == ["--cluster", "ray"]:
        pytest.importorskip("ray")
    process, base = start_serve(tiny_model_dir, tmp_path, *mode, "--device", "cpu")
    try:
        ids = [submit(base, seed, duration=0.8) for seed in (1, 2, 3, 4)]
        states = wait_all(base, ids)
    finally:
        stderr = stop(process)
    assert [states[job_id]["status"] for job_id in ids] == ["completed"] * 4, (states, stderr)
    workers = {states[job_id]["worker"] for job_id in ids}
    assert len(workers) == 2, workers  # both workers ran jobs
    assert len(list(tmp_path.glob("*.mp4"))) == 4


def test_batch_of_a_folder_with_captions(tiny_model_dir, tmp_path):
    import framepack_cli
    from framepack.io.reader import open_frames

    folder = tmp_path / "in"
    folder.mkdir()
    captions = {"boat": "a paper boat drifts", "cat": "a cat turns its head", "tree": "leaves fall from a tree"}
    for n, (name, caption) in enumerate(captions.items()):
        Image.fromarray(np.random.default_rng(n).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
    out = tmp_path / "out"
    code = framepack_cli.main(["batch", str(folder), "--model", str(tiny_model_dir), "--resolution", "32", "--steps",
                               "2", "--latent-window", "3", "--duration", "0.4", "--variant", "f1", "--no-teacache",
                               "--out", str(out), "--quiet"])
    assert code == 0
    videos = sorted(out.glob("*.mp4"))
    assert [video.name.split("-")[0] for video in videos] == ["boat", "cat", "tree"]
    for video in videos:
        with open_frames(video) as source:
            assert source.describe()["settings"]["settings"]["prompt"] == captions[video.name.split("-")[0]]


def test_batch_errors_name_the_line(tiny_model_dir, tmp_path, capsys):
    import framepack_cli

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "one"}\n{"prompt": "two", "steps": 0}\nnot json\n', encoding="utf-8")
    assert framepack_cli.main(["batch", str(jobs), "--image", str(ROOT / "assets" / "demo.png"), "--model",
                               str(tiny_model_dir), "--out", str(tmp_path)]) == 2
    assert "jobs.jsonl line 3: not valid JSON" in capsys.readouterr().err
    jobs.write_text('{"prompt": "one"}\n{"prompt": "two", "steps": 0}\n', encoding="utf-8")
    assert framepack_cli.main(["batch", str(jobs), "--image", str(ROOT / "assets" / "demo.png"), "--model",
                               str(tiny_model_dir), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "jobs.jsonl line 2: --steps" in error and "line 1" not in error
    assert not list(tmp_path.glob("*.mp4"))


def test_a_killed_ray_worker_resumes_its_job_elsewhere(tiny_model_dir, tmp_path):
    ray = pytest.importorskip("ray")
    from framepack.cli.serve import worker_host
    from framepack.host.standalone import StandaloneHost
    from framepack.jobs.cluster import RayWorkers
    from framepack.jobs.queue import JobQueue
    from framepack.jobs.store import JobStore
    from framepack.request.model import build_request

    host = StandaloneHost(output_dir=tmp_path, model=str(tiny_model_dir))
    store = JobStore.in_folder(host.video_dir())
    queue = JobQueue(host, store=store, run_here=False)
    factory = functools.partial(worker_host, output_dir=str(tmp_path), model=str(tiny_model_dir), cache_dir=None,
                                offline=True, settings={"keep_incomplete": True})
    workers = RayWorkers("ray", store, factory, count=2, shared_output=str(host.video_dir()), device="cpu")
    try:
        workers.start()
        pids = workers.pids()
        start = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        # long enough (about ten sections) that the 0.5 s progress poll sees it running after a checkpoint
        job = queue.submit(build_request(**{k: v for k, v in BODY.items() if k != "duration"}, image=start, seed=5,
                                         duration=4.0, fps=30))
        deadline = time.monotonic() + 300
        while (state := queue.get(job.id).record).sections_done < 1 or state.status != "running":
            assert time.monotonic() < deadline and state.status in ("queued", "running"), state
            time.sleep(0.05)
        victim = state.worker
        os.kill(pids[victim], signal.SIGKILL)
        deadline = time.monotonic() + 400
        while not queue.get(job.id).wait(0.3):
            assert time.monotonic() < deadline, queue.get(job.id).record
        record = queue.get(job.id).record
        assert record.status == "completed" and record.resumes == 1 and record.frame_count == 121, record
        assert len(list(host.video_dir().glob("*.mp4"))) == 1
    finally:
        workers.stop()
        queue.shutdown()
        ray.shutdown()
