"""Running jobs from the job store: in this process, in worker processes, or (cluster.py) on Ray actors.

Every consumer does the same thing: take the oldest queued job with an atomic claim
(`JobStore.claim_next`), run it through a `JobRunner`, keep its record (progress, stage, outputs)
in the store while it runs, renew its claim, stop it when a face asked (`JobStore.request_stop`),
and record how it ended.

`WorkerPool` starts N worker processes (multiprocessing, spawn: no forked CUDA or threads), each
with its own host and loaded pipeline, all taking jobs from the same store; the process that
serves HTTP only reads and queues. Hosts are built in the worker by a picklable factory from the
composition root (this layer never imports a host).

`reclaim_stale` runs when a store is opened: a job whose process died while running it (a crash,
SIGKILL, a power cut) becomes resumable from its checkpoints, or is queued again: resumed from its
checkpoint when auto-resume is on, from its start when it saved no checkpoint yet (at most
`MAX_RESTARTS` times, so a job that kills its process cannot loop forever).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from framepack.jobs.handle import JobHandle, Resume, start_from_dict
from framepack.jobs.store import JobStore, StoredJob, owner_id
from framepack.request.events import Done, SectionDone, Stage, Status

log = logging.getLogger("framepack.jobs")

SAVE_EVERY_S = 0.5
"""Progress reaches the store at most this often (section ends, stages and the end at once)."""
HEARTBEAT_S = 10.0
POLL_S = 0.5
"""How often an idle worker looks for queued jobs (a submission in this process wakes it at once)."""
MAX_RESTARTS = 2


# ------------------------------------------------------------------------------------------ one job

class StoreSync:
    """A job's listener: its record into the store (throttled), and a stop asked through the store."""

    def __init__(self, store: JobStore, handle: JobHandle, owner: str):
        self.store, self.handle, self.owner = store, handle, owner
        self._saved = 0.0

    def __call__(self, event: object) -> None:
        now = time.monotonic()
        if now - self._saved < SAVE_EVERY_S and not isinstance(event, (SectionDone, Stage, Done)):
            return
        self._saved = now
        try:
            self.store.save_record(self.handle.record, self.owner)
            if self.store.stop_requested(self.handle.id) and self.handle.control is not None:
                self.handle.control.stop()
        except Exception:  # the store being busy must never break the job; the next event retries
            log.warning("FramePack job %s: could not save its progress", self.handle.id, exc_info=True)


class Heartbeat:
    """Renews a running job's claim every few seconds (loading a model can be silent for minutes)."""

    def __init__(self, store: JobStore, job_id: str, owner: str, every: float = HEARTBEAT_S):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(store, job_id, owner, every),
                                        name=f"framepack-lease-{job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _beat(self, store: JobStore, job_id: str, owner: str, every: float) -> None:
        while not self._stop.wait(every):
            try:
                store.renew(job_id, owner)
            except Exception:
                log.warning("FramePack job %s: could not renew its claim", job_id, exc_info=True)


def handle_from_stored(job: StoredJob, control, handle: JobHandle | None = None) -> JobHandle:
    """The runtime handle of a claimed job (the one this process already has, or a new one)."""
    from framepack.request.model import GenerationRequest
    from framepack.request.output import build_output_from

    request = GenerationRequest.from_json(job.request) if job.request else None
    if request is None and not isinstance(start_from_dict(job.start), Resume):
        raise ValueError(f"job {job.id} has no saved request")
    if handle is None:
        handle = JobHandle(request, build_output_from(job.options), control, record=job.record,
                           start=start_from_dict(job.start))
    else:
        handle.request = handle.request or request
        handle.start = start_from_dict(job.start)
        handle.record = job.record
    handle.record.status = Status.RUNNING
    return handle


def run_claimed(store: JobStore, runner, handle: JobHandle, owner: str) -> tuple[Status, str | None]:
    """Run a job this owner claimed, keeping the store up to date; its record says how it ended."""
    sync = StoreSync(store, handle, owner)
    handle.add_listener(sync)
    with Heartbeat(store, handle.id, owner):
        status, error = runner.run(handle)
    record = handle.record
    record.status, record.error, record.finished = status, error, time.time()
    record.updates += 1
    store.finish(record, owner)
    return status, error


def fail_unreadable(store: JobStore, job: StoredJob, owner: str, problem: BaseException) -> None:
    record = job.record
    record.status, record.error, record.finished = Status.FAILED, f"its saved settings cannot be read: {problem}", \
        time.time()
    store.finish(record, owner)
    log.warning("FramePack job %s failed: %s", job.id, record.error)


# ---------------------------------------------------------------------------------- after a crash

def reclaim_stale(store: JobStore, video_dir: Path, auto_resume: bool = False) -> list[str]:
    """Settle the jobs whose runner died: resumable (or queued again with `auto_resume`); their ids."""
    return [job.id for job in store.stale() if settle_lost(store, job, video_dir, auto_resume)]


def settle_lost(store: JobStore, job: StoredJob, video_dir: Path, resume: bool) -> bool:
    """A running job whose runner is gone: queued to resume from its checkpoint (`resume`), else resumable;
    queued from its start when it saved no checkpoint yet (at most `MAX_RESTARTS` times), else failed."""
    from framepack.io.workdir import work_root
    from framepack.jobs.checkpoint import is_resumable

    record, start = job.record, job.start
    folder = Path(start["resume"]) if start and "resume" in start else work_root(video_dir) / job.id
    resumable = folder.is_dir() and is_resumable(folder)
    record.started, record.finished, record.stage = None, None, None
    if resumable and resume:
        record.status, record.error, record.checkpoint, record.resumable = Status.QUEUED, None, None, False
        record.resumes += 1
        start = {"resume": str(folder)}
    elif resumable:
        record.status, record.finished = Status.INTERRUPTED, time.time()
        record.error = "the process running it ended (crash, kill or restart); it can be resumed"
        record.checkpoint, record.resumable = str(folder), True
    elif record.resumes < MAX_RESTARTS and not (start and "resume" in start):
        record.status, record.error, record.sections_done, record.progress = Status.QUEUED, None, 0, 0.0
        record.resumes += 1  # it saved no checkpoint: it starts again, in a fresh work folder
        _remove_dead_folder(folder)
    else:
        record.status, record.finished = Status.FAILED, time.time()
        record.error = "the process running it ended before it saved a checkpoint, more than once"
    record.updates += 1
    if not store.settle_stale(job, record, start=start):
        return False
    log.info("FramePack job %s: the process running it ended; now %s", job.id, record.status)
    return True


def _remove_dead_folder(folder: Path) -> None:
    from framepack.io.workdir import WorkFolder

    if folder.is_dir():
        try:
            WorkFolder.claim(folder).close()
        except Exception:  # a live owner, or not ours: the runner reports it when the job starts
            log.warning("FramePack: could not remove the work folder %s", folder, exc_info=True)


# --------------------------------------------------------------------------------- worker processes

@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs: the store, a host factory (picklable), its name."""

    store_path: str
    host_factory: Callable[[], Any]
    name: str
    parent: int
    """The serving process: a worker whose parent died (SIGKILL) stops, leaving its job resumable."""


def worker_main(spec: WorkerSpec, stop: Any) -> None:
    """A worker process: load nothing until the first job, then run queued jobs until told to stop."""
    from framepack.engine.heap import map_large_buffers
    from framepack.jobs.runner import JobRunner

    map_large_buffers()  # a process of its own: its heap is ours to tune (spawned, it inherits nothing)
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s [{spec.name}] %(message)s")
    store = JobStore(spec.store_path)
    host = spec.host_factory()
    runner = JobRunner(host, name=spec.name)
    owner = owner_id(spec.name)
    orphaned = lambda: os.getppid() != spec.parent  # noqa: E731
    while not stop.is_set() and not orphaned():
        job = store.claim_next(owner)
        if job is None:
            stop.wait(POLL_S)
            continue
        try:
            handle = handle_from_stored(job, host.new_control(None))
        except Exception as problem:
            fail_unreadable(store, job, owner, problem)
            continue
        run_claimed(store, runner, stop_with_pool(handle, stop, orphaned), owner)
    store.close()


def stop_with_pool(handle: JobHandle, stop, orphaned: Callable[[], bool]) -> JobHandle:
    """Stop the job after its step when the pool is told to stop or its server died (its checkpoint is kept)."""
    def listener(event: object) -> None:
        if (stop.is_set() or orphaned()) and handle.control is not None:
            handle.control.stop()

    handle.add_listener(listener)
    return handle


class WorkerPool:
    """N worker processes fed from one store; `stop()` ends them (running jobs stop after their step)."""

    def __init__(self, store_path: str | Path, factories: list[Callable[[], Any]], names: list[str]):
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self.names = list(names)
        self.processes = [context.Process(target=worker_main, args=(WorkerSpec(str(store_path), factory, name, os.getpid()),
                                                                    self._stop),
                                          name=f"framepack-{name}", daemon=True)
                          for factory, name in zip(factories, names)]

    def start(self) -> "WorkerPool":
        for process in self.processes:
            process.start()
        return self

    def alive(self) -> list[str]:
        return [name for name, process in zip(self.names, self.processes) if process.is_alive()]

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)


def worker_names(count: int, devices: list[str]) -> list[tuple[str, str]]:
    """(name, device) for `count` workers over `devices` in turn: worker-1 (cuda:0), ..."""
    return [(f"worker-{n + 1}", devices[n % len(devices)]) for n in range(count)]
