"""The tab's Stop / Skip / Pause routes (framepack/ui/routes.py), called the way the page's script does."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from framepack.host.standalone import StandaloneHost  # noqa: E402
from framepack.jobs.queue import JobQueue  # noqa: E402
from framepack.request.model import build_request  # noqa: E402
from framepack.ui import logic  # noqa: E402
from framepack.ui.routes import MAX_BODY, PAGE_PREFIX, register_page_routes  # noqa: E402

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False, variant="f1")


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    host = StandaloneHost(output_dir=tmp_path_factory.mktemp("routes"), model=str(tiny_model_dir))
    queue = JobQueue(host)
    app = FastAPI()
    names = ("stop", "skip", "pause", "jobs", "resume", "cancel-batch")
    assert register_page_routes(app.add_api_route, queue) == [f"POST {PAGE_PREFIX}/{name}" for name in names]
    yield TestClient(app), queue
    queue.shutdown()


def long_job(queue, task=None):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    job = queue.submit(build_request(**FAST, image=image, duration=20.0))
    if task:
        logic.PAGE_TASKS.bind(task, job, queue)
    deadline = time.monotonic() + 60
    while job.status == "queued" and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    return job


def test_pause_resume_skip_and_stop_reach_the_page_job_by_its_task(served):
    client, queue = served
    job = long_job(queue, task="task(routes1)")
    paused = client.post(f"{PAGE_PREFIX}/pause", json={"job": "", "task": "task(routes1)"}).json()
    assert paused["label"] == "Resume" and f"Job {job.id} paused" in paused["status"] and job.control.paused
    resumed = client.post(f"{PAGE_PREFIX}/pause", json={"job": job.id}).json()
    assert resumed["label"] == "Pause" and not job.control.paused
    assert "Skipping" in client.post(f"{PAGE_PREFIX}/skip", json={"task": "task(routes1)"}).json()["status"]
    stopped = client.post(f"{PAGE_PREFIX}/stop", json={"job": "", "task": "task(routes1)"}).json()["status"]
    assert job.wait(60) and job.status == "interrupted"
    # Stop waits up to a second for the step to end: then its answer is the final line (a busy machine: "Stopping")
    assert (f"Job {job.id} interrupted" in stopped and 'data-fpk-final="task(routes1)"' in stopped) \
        or stopped == logic.stopping_line(job)


def test_nothing_running(served):
    client, _ = served
    assert "Nothing to stop" in client.post(f"{PAGE_PREFIX}/stop", json={}).json()["status"]
    assert "Nothing to skip" in client.post(f"{PAGE_PREFIX}/skip", json={"job": "nope"}).json()["status"]
    assert client.post(f"{PAGE_PREFIX}/pause", json={"job": "nope"}).json()["label"] == "Pause"


@pytest.mark.parametrize("body, message", [
    (b"[1]", "expected a JSON object"),
    (b"{not json", "expected a JSON object"),
    (b'{"job": 5}', "job: expected a text"),
    (b'{"task": "' + b"x" * 300 + b'"}', "task: expected a text of at most 200"),
    (b'{"job": "' + b"x" * MAX_BODY + b'"}', "body larger than"),
])
def test_bad_bodies_get_a_400_naming_the_field(served, body, message):
    client, _ = served
    response = client.post(f"{PAGE_PREFIX}/stop", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and message in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_only_json_bodies_are_read(served, content_type):
    """Another site's page may POST text/plain or a form without a CORS preflight: such a request stops nothing."""
    client, queue = served
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"{PAGE_PREFIX}/stop", content=b'{"job": "", "task": ""}', headers=headers)
    assert response.status_code == 415 and "application/json" in response.json()["detail"]


def test_jobs_panel_lists_running_and_queued_jobs_and_stops_one_by_its_id(served):
    client, queue = served
    running = long_job(queue)
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    waiting = queue.submit(build_request(**FAST, image=image, duration=20.0, prompt="second"))
    html = client.post(f"{PAGE_PREFIX}/jobs", json={}).json()["html"]
    active = html.split("History")[0]
    assert active.index(running.id) < active.index(waiting.id)  # in run order
    assert "Waiting, 2nd in line" in active and 'data-fpk-job-action="stop"' in active
    assert client.post(f"{PAGE_PREFIX}/stop", json={"job": waiting.id}).json()["status"].count("removed")
    client.post(f"{PAGE_PREFIX}/stop", json={"job": running.id})
    assert running.wait(60) and waiting.status == "cancelled"
    history = client.post(f"{PAGE_PREFIX}/jobs", json={}).json()["html"].split("History")[1]
    # newest first: the running job finished after the queued one was removed
    assert history.index(running.id) < history.index(waiting.id) and "seed" in history
    assert "No job running" in client.post(f"{PAGE_PREFIX}/jobs", json={}).json()["html"]


def test_a_follower_that_starts_after_a_short_job_ended_still_shows_its_end_once(served):
    """Inside SD.Next the follow event can start seconds after Generate: a short job is over by then."""
    _, queue = served
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    job = queue.submit(build_request(**FAST, image=image, duration=0.4))
    logic.PAGE_TASKS.bind("task(late1)", job, queue, page_id="page-late")
    assert job.wait(120) and job.status == "completed"
    updates = list(logic.follow_page(queue, "page-late", linger=0))
    assert len(updates) == 1 and updates[0].finished
    assert f"Job {job.id} completed" in updates[0].status and updates[0].video == job.record.video
    again = list(logic.follow_page(queue, "page-late", linger=0))  # shown once: the next follower is quiet
    assert len(again) == 1 and not again[0].finished and again[0].status is logic.KEEP


def test_page_news_gives_the_running_line_then_the_end_once(served):
    """Inside SD.Next the page asks for news when its task starts and when it ends (no held follower)."""
    _, queue = served
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert logic.page_news(queue, "page-news") == logic.Update()  # a page without jobs: nothing changes
    job = queue.submit(build_request(**FAST, image=image, duration=0.8), task_id="task(news1)")
    logic.PAGE_TASKS.bind("task(news1)", job, queue, page_id="page-news")
    job.control.pause()  # held running, so the running line can be asked for
    try:
        while job.status == "queued":
            time.sleep(0.05)
        running = logic.page_news(queue, "page-news")
        assert f"Job {job.id} running · seed {job.record.seed}" in running.status and running.job_id == job.id
        assert not running.finished and running.video is logic.KEEP
    finally:
        job.control.resume()
    assert job.wait(120) and job.status == "completed"
    end = logic.page_news(queue, "page-news")
    assert end.finished and f"Job {job.id} completed" in end.status and end.video == job.record.video
    assert 'data-fpk-final="task(news1)"' in end.status  # the page's script knows its task has ended
    assert logic.page_news(queue, "page-news") == logic.Update()  # the end is shown once


def test_resume_and_cancel_batch_answer_with_a_status_line(served):
    client, _ = served
    resumed = client.post(f"{PAGE_PREFIX}/resume", json={"job": "nope"})
    assert resumed.status_code == 200 and "Resume: no job with id &#x27;nope&#x27;" in resumed.json()["status"]
    assert "no job given" in client.post(f"{PAGE_PREFIX}/resume", json={}).json()["status"]
    cancelled = client.post(f"{PAGE_PREFIX}/cancel-batch", json={"job": "nope"}).json()["status"]
    assert "Cancel batch: " in cancelled and "nope" in cancelled
    plain = client.post(f"{PAGE_PREFIX}/resume", content=b'{"job": "x"}', headers={"content-type": "text/plain"})
    assert plain.status_code == 415  # another site's page cannot resume a job
