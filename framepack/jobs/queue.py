"""A first-in, first-out queue of generation jobs, run one at a time through the `JobRunner`.

The REST API, the tab, SD.Next and the CLI all submit here, so a generation started from the
browser and one posted by a script never fight over the GPU. Submission validates what needs io
(codec, encoder options, LoRA files), resolves a random seed, and opens the host's progress task
when the face gave one; the task is closed when the job ends, however it ends. A job that fails
records its message and the queue moves on; a stopped job ends `interrupted` (keeping partial
outputs when keep-incomplete is on); a job removed before it started ends `cancelled`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque

from framepack.errors import FramePackError
from framepack.errors import InputErrors
from framepack.jobs.checks import check_job, host_model_problems
from framepack.jobs.handle import JobHandle, Listener
from framepack.jobs.runner import JobRunner
from framepack.request.events import Status
from framepack.request.limits import MAX_WAITING_JOBS
from framepack.request.model import GenerationRequest
from framepack.request.output import OutputOptions

log = logging.getLogger("framepack.jobs")


class QueueFull(FramePackError):
    """Too many jobs are waiting; the face asks the user to try again later (HTTP 429)."""


class JobQueue:
    """Runs submitted jobs in order on one worker thread.

    A finished job keeps its record, options and last preview, never its request or images; at
    most `max_waiting` jobs wait at a time and the last `history` jobs are remembered.
    """

    def __init__(self, host, history: int = 200, max_waiting: int = MAX_WAITING_JOBS,
                 runner: JobRunner | None = None):
        self.host = host
        self.runner = runner or JobRunner(host)
        self.history = history
        self.max_waiting = max_waiting
        self._jobs: OrderedDict[str, JobHandle] = OrderedDict()
        self._pending: deque[JobHandle] = deque()
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    # ---- faces ---------------------------------------------------------------------
    def submit(self, request: GenerationRequest, options: OutputOptions | None = None, *,
               task_id: str | None = None, listener: Listener | None = None, name: str | None = None,
               overwrite: bool = False) -> JobHandle:
        """Queue a job; raises `InputErrors` (located) for what the io checks refuse, `QueueFull`, or
        `FramePackError` when the queue is shutting down. `task_id`: the host progress task that
        follows this job (SD.Next's progress bar), queued now and closed when the job ends.
        `listener`: called with every event of the job, on the worker thread. `name`: the exact
        file name stem of the outputs (the CLI's `--out clip.mp4`; default `<filename>-<seed>`),
        `overwrite`: whether an existing file of that name is replaced."""
        options = options or OutputOptions(keep_incomplete=self.host.keep_incomplete())
        check_job(request, options)
        problems = host_model_problems(self.host, options, request)
        if problems:
            raise InputErrors(problems)
        handle = JobHandle(request.resolve_seed(), options, self.host.new_control(task_id), task_id, listener)
        handle.name, handle.overwrite = name, overwrite
        with self._lock:
            if self._closed:
                raise FramePackError("the job queue is shutting down")
            if len(self._pending) >= self.max_waiting:
                raise QueueFull(f"{len(self._pending)} jobs are already waiting, the most this server queues; "
                                f"submit again when one has started")
            if task_id:
                self.host.task_queued(task_id)  # before the worker can see the job, so "queued" comes first
            self._jobs[handle.id] = handle
            self._pending.append(handle)
            self._forget_old_locked()
            self._ensure_worker_locked()
            self._lock.notify_all()
        return handle

    def get(self, job_id: str) -> JobHandle | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[JobHandle]:
        with self._lock:
            return list(self._jobs.values())

    def ahead_of(self, handle: JobHandle) -> int:
        """Jobs that run before `handle` (0 unless it is queued)."""
        with self._lock:
            if handle.status != Status.QUEUED:
                return 0
            running = sum(1 for job in self._jobs.values() if job.status == Status.RUNNING)
            return running + next((n for n, job in enumerate(self._pending) if job is handle), 0)

    def cancel(self, job_id: str) -> JobHandle | None:
        """Remove a queued job at once (`cancelled`), or ask a running one to stop after its step."""
        with self._lock:
            handle = self._jobs.get(job_id)
            if handle is None or handle.status.finished:
                return handle
            if handle.status == Status.QUEUED:
                self._pending.remove(handle)
                self._finish_locked(handle, Status.CANCELLED)
                removed = True
            else:
                removed = False
        if removed:
            self._release(handle)
        else:
            handle.control.stop()
        return handle

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel the waiting jobs, stop the running one after its step, and end the worker."""
        with self._lock:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            for handle in pending:
                self._finish_locked(handle, Status.CANCELLED)
            running = [handle for handle in self._jobs.values() if handle.status == Status.RUNNING]
            self._lock.notify_all()
        for handle in pending:
            self._release(handle)
        for handle in running:
            handle.control.stop()
        if self._worker is not None:
            self._worker.join(timeout)

    # ---- worker --------------------------------------------------------------------
    def _ensure_worker_locked(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="framepack-jobs", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed and not self._pending:
                    return
                handle = self._pending.popleft()
                handle.record.status, handle.record.started = Status.RUNNING, time.time()
                handle.record.updates += 1
            status, error = self.runner.run(handle)
            with self._lock:
                self._finish_locked(handle, status, error)
            self._release(handle)

    def _finish_locked(self, handle: JobHandle, status: Status, error: str | None = None) -> None:
        record = handle.record
        record.status, record.error, record.finished = status, error, time.time()
        record.updates += 1

    def _release(self, handle: JobHandle) -> None:
        """After the job's end: close its host task, then wake whoever waits for it."""
        try:
            if handle.task_id:
                self.host.task_finished(handle.task_id)
        except Exception:  # the host's progress bar must not keep a finished job from reporting
            log.exception("FramePack job %s: closing progress task %s failed", handle.id, handle.task_id)
        finally:
            handle.mark_finished()

    def _forget_old_locked(self) -> None:
        finished = [job_id for job_id, handle in self._jobs.items() if handle.status.finished]
        for job_id in finished[: max(0, len(self._jobs) - self.history)]:
            del self._jobs[job_id]
