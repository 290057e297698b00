"""The job store (SQLite) and the queue on it: claims, stale claims, restarts, batches, the batch API."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import requests

from framepack.errors import InputErrors
from framepack.host.standalone import StandaloneHost
from framepack.jobs.batch import BatchEntry, batch_state, cancel_batch, retry_batch, submit_batch
from framepack.jobs.queue import JobQueue
from framepack.jobs.record import JobRecord
from framepack.jobs.store import SCHEMA_VERSION, STORE_NAME, JobStore, StoreError, owner_id
from framepack.jobs.workers import MAX_RESTARTS, reclaim_stale
from framepack.request.events import Status
from framepack.request.model import build_request
from framepack.request.output import OutputOptions
from test_api_helpers import API, LiveServer, b64, job_body, png_bytes, wait_finished

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False, preview=False, variant="f1")


def request(seed=1, **fields):
    image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return build_request(**{**FAST, "image": image, "prompt": "rain", "seed": seed, "duration": 0.4, **fields})


def queued(store: JobStore, count: int) -> list[str]:
    ids = []
    for n in range(count):
        record = JobRecord(seed=n)
        store.add(record, request(n + 1).to_json(), OutputOptions().model_dump(mode="json"))
        ids.append(record.id)
    return ids


@pytest.fixture
def host(tiny_model_dir, tmp_path):
    return StandaloneHost(output_dir=tmp_path, model=str(tiny_model_dir))


# ------------------------------------------------------------------------------------ the store

def test_claims_are_atomic_between_threads(tmp_path):
    store = JobStore(tmp_path / STORE_NAME)
    ids = queued(store, 30)
    taken: dict[str, list[str]] = {}

    def worker(name):
        owner, mine = owner_id(name), []
        while (job := store.claim_next(owner)) is not None:
            mine.append(job.id)
        taken[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = [job_id for mine in taken.values() for job_id in mine]
    assert sorted(claimed) == sorted(ids)  # every job taken exactly once
    assert all(job.status == Status.RUNNING and job.owner for job in store.jobs())


def test_claims_are_atomic_between_processes(tmp_path):
    store = JobStore(tmp_path / STORE_NAME)
    ids = queued(store, 20)
    code = ("import sys, json; from framepack.jobs.store import JobStore, owner_id\n"
            "s = JobStore(sys.argv[1]); o = owner_id(sys.argv[2]); got = []\n"
            "while (j := s.claim_next(o)) is not None: got.append(j.id)\n"
            "print(json.dumps(got))")
    processes = [subprocess.Popen([sys.executable, "-c", code, str(store.path), f"p{n}"], stdout=subprocess.PIPE,
                                  text=True, cwd=os.path.dirname(os.path.dirname(__file__))) for n in range(3)]
    claimed = [job_id for process in processes for job_id in json.loads(process.communicate(timeout=120)[0])]
    assert sorted(claimed) == sorted(ids)


def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / STORE_NAME
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="schema version 2"):
        JobStore(path)


def test_a_claim_of_a_dead_process_is_reclaimed(tmp_path):
    store = JobStore(tmp_path / STORE_NAME)
    [job_id] = queued(store, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = owner_id("gone").split(":")
    owner[1] = dead.stdout.strip()  # a process that has ended
    store.claim(job_id, ":".join(owner))
    live = JobRecord(seed=9)
    store.add(live, request(9).to_json(), {})
    store.claim(live.id, owner_id("alive"))  # this process: not stale
    assert [job.id for job in store.stale()] == [job_id]
    for attempt in range(MAX_RESTARTS):  # no checkpoint yet: it starts again, a bounded number of times
        assert reclaim_stale(store, tmp_path) == [job_id]
        again = store.get(job_id)
        assert again.status == Status.QUEUED and again.record.resumes == attempt + 1
        store.claim(job_id, ":".join(owner))
    assert reclaim_stale(store, tmp_path) == [job_id]
    assert store.get(job_id).status == Status.FAILED and "more than once" in store.get(job_id).record.error
    assert store.get(live.id).status == Status.RUNNING


# ----------------------------------------------------------------------------- the queue on a store

def test_queued_jobs_survive_a_restart_and_run_once(host):
    store = JobStore.in_folder(host.video_dir())
    before = JobQueue(host, store=store, run_here=False)  # a server that dies before running anything
    jobs = [before.submit(request(seed)) for seed in (1, 2)]
    assert [job.status for job in jobs] == [Status.QUEUED] * 2
    del before
    after = JobQueue(host, store=JobStore.in_folder(host.video_dir()))
    handles = [after.get(job.id) for job in jobs]
    assert all(handle is not None for handle in handles)
    for handle in handles:
        assert handle.wait(120)
    assert [after.get(job.id).status for job in jobs] == [Status.COMPLETED] * 2
    names = sorted(path.name for path in host.video_dir().glob("*.mp4"))
    assert names == ["framepack-1.mp4", "framepack-2.mp4"]  # each ran once
    stored = {job.id: job for job in after.store.jobs(with_request=True)}
    assert all(stored[job.id].status == Status.COMPLETED and stored[job.id].request is None for job in jobs)
    after.shutdown()


def test_cancel_through_the_store_and_a_record_that_names_its_worker(host):
    queue = JobQueue(host, store=JobStore.in_folder(host.video_dir()), run_here=False)
    job = queue.submit(request(3))
    assert queue.cancel(job.id).status == Status.CANCELLED
    assert queue.store.get(job.id).status == Status.CANCELLED and queue.store.claim_next(owner_id("w")) is None
    queue.shutdown()


# ------------------------------------------------------------------------------------------- batches

def test_a_batch_runs_cancels_and_retries_as_one(host):
    queue = JobQueue(host, store=JobStore.in_folder(host.video_dir()), run_here=False)
    entries = [BatchEntry(request(seed), OutputOptions(filename=f"b{seed}"), f"item {seed}") for seed in (1, 2, 3)]
    batch_id, jobs = submit_batch(queue, entries, "three")
    state = batch_state(queue, batch_id)
    assert state["name"] == "three" and state["total"] == 3 and state["counts"]["queued"] == 3
    cancel_batch(queue, batch_id)
    assert batch_state(queue, batch_id)["counts"]["cancelled"] == 3
    retried = retry_batch(queue, batch_id)
    assert [job.id for job in retried] == [job.id for job in jobs]
    runner = JobQueue(host, store=JobStore.in_folder(host.video_dir()))  # a worker on the same folder
    for job in jobs:
        assert runner.get(job.id).wait(120)
    state = batch_state(queue, batch_id)
    assert state["counts"]["completed"] == 3 and state["finished"]
    assert sorted(p.name for p in host.video_dir().glob("*.mp4")) == ["b1-1.mp4", "b2-2.mp4", "b3-3.mp4"]
    runner.shutdown()
    queue.shutdown()


def test_a_batch_is_all_or_nothing_and_names_the_bad_entry(host):
    queue = JobQueue(host, store=JobStore.in_folder(host.video_dir()), run_here=False)
    entries = [BatchEntry(request(1), OutputOptions(), "cat.png"),
               BatchEntry(request(2), OutputOptions(codec="no-such-codec"), "dog.png")]
    with pytest.raises(InputErrors, match="dog.png") as error:
        submit_batch(queue, entries)
    assert error.value.problems()[0].field[:2] == ("items", 1)
    assert queue.store.jobs() == []
    queue.shutdown()


def test_the_batch_api(host):
    from framepack.app import create_app

    app = create_app(host, ui=False)
    with LiveServer(app) as server:
        base = server.url + API
        items = [{"image": b64(png_bytes(n)), "prompt": f"caption {n}"} for n in range(2)]
        bad = requests.post(f"{base}/batches", json={"items": [items[0], {"prompt": "x", "image": "@@"}]}, timeout=30)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["body", "items", 1]
        assert requests.post(f"{base}/batches", json={"items": []}, timeout=30).status_code == 422
        shared = {key: value for key, value in job_body().items() if key not in ("image", "prompt")}
        created = requests.post(f"{base}/batches", json={**shared, "name": "pair", "items": items}, timeout=30)
        assert created.status_code == 202, created.text
        batch = created.json()
        assert batch["total"] == 2 and batch["name"] == "pair"
        states = [wait_finished(server.url, job["id"]) for job in batch["jobs"]]
        assert [state["status"] for state in states] == ["completed"] * 2
        assert all(state["batch"] == batch["id"] and state["worker"] == "standalone" for state in states)
        listed = requests.get(f"{base}/batches/{batch['id']}", timeout=10).json()
        assert listed["counts"]["completed"] == 2 and listed["finished"]
        assert [b["id"] for b in requests.get(f"{base}/batches", timeout=10).json()["batches"]] == [batch["id"]]
        assert requests.get(f"{base}/batches/nope", timeout=10).status_code == 404
        prompts = [requests.get(server.url + state["video_url"], timeout=10).status_code for state in states]
        assert prompts == [200, 200]


def test_prompt_lists_are_read_the_same_way_by_every_face():
    """framepack.jobs.batch.prompt_list: the CLI's and the tab's prompt lists (plain text and JSONL)."""
    from framepack.errors import InputError
    from framepack.jobs.batch import prompt_list

    text = "# a comment\n\n  a boat  \nlast line"
    assert list(prompt_list(text, "p.txt", jsonl=False)) == [("p.txt line 3", {"prompt": "a boat"}),
                                                              ("p.txt line 4", {"prompt": "last line"})]
    assert list(prompt_list('{"prompt": "x", "seed": 3}\n\n', "j.jsonl", jsonl=True)) == [
        ("j.jsonl line 1", {"prompt": "x", "seed": 3})]
    for line, message in (("[1]", "j.jsonl line 2: expected a JSON object"), ("{no", "j.jsonl line 2: not valid JSON"),
                          ("[" * 100_000 + "]" * 100_000, "j.jsonl line 2: not valid JSON")):  # nesting: no crash
        with pytest.raises(InputError, match=re.escape(f"Batch files: {message}")):
            list(prompt_list('{"prompt": "ok"}\n' + line, "j.jsonl", jsonl=True, what="Batch files"))
