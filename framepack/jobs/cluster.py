"""Jobs on a Ray cluster: one actor per GPU, each with its own host and loaded pipeline.

    serve --cluster ray                 a local Ray (started here)
    serve --cluster ray://HEAD:10001    an existing cluster (Ray Client)

Ray is an optional extra (`pip install .[cluster]`, requirements-cluster.txt) imported only
here, only when a cluster is asked for: never by default, never inside SD.Next.

The serving process stays the only writer of the job store. For every actor it runs a
dispatcher thread that claims the oldest queued job (the claim names the actor), sends the job to
its actor, copies the actor's progress into the store, passes a stop request on, and records how
the job ended. Results go to the shared output folder when the actors can see it (the same
machine, or a network folder mounted at the same path), or come back through Ray as file bytes and
are written here. When an actor dies, its job is queued again to resume from its last checkpoint
(checkpoints live in the shared output folder), and a new actor takes the dead one's place.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from framepack.errors import FramePackError
from framepack.jobs.record import JobRecord
from framepack.jobs.store import JobStore, StoredJob, owner_id
from framepack.request.events import Status

log = logging.getLogger("framepack.jobs")

POLL_S = 0.5
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024
"""A local Ray's object store: jobs pass settings and progress through it, not frames."""


class FramePackActor:
    """A Ray actor's body (made remote in `RayWorkers`): runs one job at a time on its own host.

    Threaded (max_concurrency > 1), so `progress` and `stop` answer while `run` works.
    """

    def __init__(self, host_factory: Callable[..., Any], name: str, shared_output: str | None):
        from framepack.engine.heap import map_large_buffers
        from framepack.jobs.runner import JobRunner

        map_large_buffers()  # a Ray worker process of its own
        self.name = name
        self.local_output = None if shared_output else tempfile.mkdtemp(prefix="framepack-ray-")
        self.host = host_factory(output_dir=shared_output or self.local_output)
        if shared_output:
            self.host.videos = Path(shared_output)  # exactly the folder the server writes to
        self.runner = JobRunner(self.host, name=name)
        self.current = None

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return socket.gethostname()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from framepack.jobs.workers import handle_from_stored

        stored = StoredJob(id=job["id"], status=JobRecord.from_dict(job["record"]).status,
                           record=JobRecord.from_dict(job["record"]), options=job["options"],
                           request=job["request"], start=job["start"])
        handle = handle_from_stored(stored, self.host.new_control(None))
        self.current = handle
        try:
            status, error = self.runner.run(handle)
        finally:
            self.current = None
        record = handle.record
        record.status, record.error, record.finished = status, error, time.time()
        result: dict[str, Any] = {"record": record.to_dict()}
        if self.local_output:  # no shared folder: the files travel back through Ray
            result["files"] = {kind: (Path(path).name, Path(path).read_bytes())
                               for kind, path in record.outputs.items() if Path(path).is_file()}
            for path in record.outputs.values():
                shutil.rmtree(path, ignore_errors=True) if Path(path).is_dir() else Path(path).unlink(missing_ok=True)
        return result

    def progress(self) -> dict[str, Any] | None:
        handle = self.current
        return None if handle is None else handle.record.to_dict()

    def stop(self) -> None:
        handle = self.current
        if handle is not None and handle.control is not None:
            handle.control.stop()


class RayWorkers:
    """Ray actors fed from the store by dispatcher threads in this process."""

    def __init__(self, address: str, store: JobStore, host_factory: Callable[..., Any], *, count: int | None = None,
                 shared_output: str | None = None, device: str | None = None, local_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise FramePackError("--cluster needs Ray: pip install -r requirements-cluster.txt "
                                 "(or pip install .[cluster])") from None
        self.ray, self.store, self.shared_output = ray, store, shared_output
        self.video_dir = Path(shared_output) if shared_output else store.path.parent
        if not ray.is_initialized():
            if address == "ray":
                ray.init(num_cpus=local_cpus or max(2, count or 1), include_dashboard=False,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.WARNING,
                         log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.count = count or max(1, gpus)
        self.gpu_per_actor = 1 if gpus and device != "cpu" else 0
        device = device or ("cuda" if self.gpu_per_actor else "cpu")
        self._factory = _with_device(host_factory, device)
        self.remote = ray.remote(num_cpus=1, num_gpus=self.gpu_per_actor, max_concurrency=4)(FramePackActor)
        self.names = [f"ray-{n + 1}" for n in range(self.count)]
        self.actors: dict[str, Any] = {name: self._new_actor(name) for name in self.names}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _new_actor(self, name: str):
        return self.remote.remote(self._factory, name, self.shared_output)

    def start(self) -> "RayWorkers":
        for name in self.names:
            thread = threading.Thread(target=self._dispatch, args=(name,), name=f"framepack-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def pids(self) -> dict[str, int]:
        return {name: self.ray.get(actor.pid.remote(), timeout=60) for name, actor in self.actors.items()}

    def stop(self, timeout: float = 30.0) -> None:
        """Stop running jobs after their step (they stay resumable), end the dispatchers and the actors."""
        self._stop.set()
        for actor in self.actors.values():
            try:
                actor.stop.remote()
            except Exception:
                pass
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        for actor in self.actors.values():
            try:
                self.ray.kill(actor)
            except Exception:
                pass

    # ---- one dispatcher per actor --------------------------------------------------------------
    def _dispatch(self, name: str) -> None:
        owner = owner_id(name)
        while not self._stop.is_set():
            try:
                job = self.store.claim_next(owner)
            except FramePackError:
                log.warning("FramePack %s: cannot read the job store", name, exc_info=True)
                job = None
            if job is None:
                self._stop.wait(POLL_S)
                continue
            self._run_on_actor(name, owner, self.store.get(job.id) or job)

    def _run_on_actor(self, name: str, owner: str, job: StoredJob) -> None:
        from framepack.jobs.workers import settle_lost

        ray = self.ray
        payload = {"id": job.id, "record": job.record.to_dict(), "options": job.options, "request": job.request,
                   "start": job.start}
        reference = self.actors[name].run.remote(payload)
        stop_sent = False
        while True:
            ready, _ = ray.wait([reference], timeout=POLL_S)
            if ready:
                break
            stop_sent = self._follow(name, owner, job.id, stop_sent)
        try:
            result = ray.get(reference)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
            log.warning("FramePack %s died while running job %s (%s); it resumes from its last checkpoint",
                        name, job.id, type(error).__name__)
            current = self.store.get(job.id)
            settle_lost(self.store, current or job, self.video_dir, resume=True)
            self.actors[name] = self._new_actor(name)
            return
        except Exception as error:  # a failure of Ray itself: the job fails, the dispatcher goes on
            record = job.record
            record.status, record.error, record.finished = Status.FAILED, f"the Ray worker failed: {error}", time.time()
            self.store.finish(record, owner)
            return
        record = JobRecord.from_dict(result["record"])
        if "files" in result:
            record.outputs = self._write_files(result["files"])
        self.store.finish(record, owner)

    def _follow(self, name: str, owner: str, job_id: str, stop_sent: bool) -> bool:
        """Progress from the actor into the store; a stop request from the store to the actor."""
        try:
            progress = self.ray.get(self.actors[name].progress.remote(), timeout=10)
            if progress is not None:
                self.store.save_record(JobRecord.from_dict(progress), owner)
            if not stop_sent and (self.store.stop_requested(job_id) or self._stop.is_set()):
                self.actors[name].stop.remote()
                return True
        except Exception:  # a slow or dying actor: its run() reference says what happened
            pass
        return stop_sent

    def _write_files(self, files: dict[str, tuple[str, bytes]]) -> dict[str, str]:
        """Outputs that came back through Ray, written here under fresh names (atomically)."""
        from framepack.io.paths import unique_output_path
        from framepack.jobs.checkpoint import write_atomic

        written = {}
        for kind, (name, data) in files.items():
            stem, ext = os.path.splitext(Path(name).name)
            path = unique_output_path(self.video_dir, stem, ext)
            write_atomic(path, data)
            written[kind] = str(path)
        return written


def _with_device(factory: Callable[..., Any], device: str) -> Callable[..., Any]:
    import functools

    return functools.partial(factory, device=device)
