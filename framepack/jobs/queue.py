"""A first-in, first-out queue of generation jobs, run one at a time through the `JobRunner`.

The REST API, the tab, SD.Next and the CLI all submit here, so a generation started from the
browser and one posted by a script never fight over the GPU. Submission validates what needs io
(codec, encoder options, LoRA files), resolves a random seed, and opens the host's progress task
when the face gave one; the task is closed when the job ends, however it ends. A job that fails
records its message and the queue moves on; a stopped job ends `interrupted` (keeping partial
outputs when keep-incomplete is on); a job removed before it started ends `cancelled`.

Jobs survive: resume, re-roll, extend, retry, discard and recovery of jobs left by a crash
are the `ContinuationMixin` part of the queue (framepack.jobs.continuation).

With a `JobStore` (framepack.jobs.store: SQLite in the output folder; every host's queue has
one) every job is also saved there, so a restart keeps the queue: queued jobs run, a job whose
process died while running becomes resumable (or is queued again, `auto_resume`). The worker
takes jobs from the store with an atomic claim, so several processes sharing one output folder
never run the same job; with `run_here=False` this process only queues and reads (worker
processes or Ray actors run the jobs, framepack.jobs.workers / cluster), and what they report
reaches the handles here (`get`, `list`). Faces see the same handles, states and errors either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import replace

from framepack.errors import FramePackError, InputErrors
from framepack.jobs.checks import check_job, host_model_problems
from framepack.jobs.continuation import ContinuationMixin, JobConflict
from framepack.jobs.handle import JobHandle, Listener
from framepack.jobs.resources import plan_job, resources_dict
from framepack.jobs.runner import JobRunner
from framepack.request.events import Status
from framepack.request.limits import MAX_BATCH_JOBS, MAX_WAITING_JOBS
from framepack.request.model import GenerationRequest
from framepack.request.output import OutputOptions

log = logging.getLogger("framepack.jobs")

STORE_POLL_S = 1.0
"""How often an idle worker looks in the store for jobs other processes queued."""
SYNC_EVERY_S, SYNC_MARGIN_S = 0.25, 2.0
"""Handles are refreshed from the store at most this often, re-reading what changed shortly before."""

class QueueFull(FramePackError):
    """Too many jobs are waiting; the face asks the user to try again later (HTTP 429)."""


class JobQueue(ContinuationMixin):
    """Runs submitted jobs in order on one worker thread.

    A finished job keeps its record, options and last preview, never its request or images; at
    most `max_waiting` jobs wait at a time and the last `history` jobs are remembered.
    """

    def __init__(self, host, history: int = 200, max_waiting: int = MAX_WAITING_JOBS,
                 runner: JobRunner | None = None, recover: bool = True, *, store=None, run_here: bool = True,
                 auto_resume: bool = False):
        self.host = host
        self.runner = runner or JobRunner(host)
        self.history = history
        self.max_waiting = max_waiting
        self.store = store
        self.run_here = run_here
        self.auto_resume = auto_resume
        self._jobs: OrderedDict[str, JobHandle] = OrderedDict()
        self._pending: deque[JobHandle] = deque()
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._last_created = 0.0  # the wall clock can step back a little; queue order must not
        self._running_here: set[str] = set()
        self._synced_at = 0.0
        if store is not None:
            from framepack.jobs.store import owner_id
            from framepack.jobs.workers import reclaim_stale

            self._owner = owner_id(getattr(host, "name", "") or "")
            reclaim_stale(store, self.host.video_dir(), auto_resume)
        if recover:
            self.recover()
        if store is not None:
            self._sync(force=True)
            if run_here:
                with self._lock:
                    self._ensure_worker_locked()  # jobs queued before a restart run now

    # ---- faces ---------------------------------------------------------------------
    def _check_job(self, request: GenerationRequest, options: OutputOptions) -> None:
        """The io checks, then the host's own tools the options name (`sdnext:...`)."""
        check_job(request, options)
        problems = host_model_problems(self.host, options, request)
        if problems:
            raise InputErrors(problems)

    def submit(self, request: GenerationRequest, options: OutputOptions | None = None, *,
               task_id: str | None = None, listener: Listener | None = None, name: str | None = None,
               overwrite: bool = False, batch: str | None = None, label: str | None = None) -> JobHandle:
        """Queue a job; raises `InputErrors` (located) for what the io checks refuse, `QueueFull`, or
        `FramePackError` when the queue is shutting down. `task_id`: the host progress task that
        follows this job (SD.Next's progress bar), queued now and closed when the job ends.
        `listener`: called with every event of the job, on the worker thread. `name`: the exact
        file name stem of the outputs (the CLI's `--out clip.mp4`; default `<filename>-<seed>`),
        `overwrite`: whether an existing file of that name is replaced."""
        options = options or self._default_options()
        self._check_job(request, options)
        resources = self.plan_resources(request, options)
        handle = JobHandle(request.resolve_seed(), options, self.host.new_control(task_id), task_id, listener)
        handle.record.resources = resources
        handle.name, handle.overwrite = name, overwrite
        if batch is not None:  # a batch was checked as a whole; it may queue beyond the usual limit
            handle.batch = batch
            handle.record.source = {"batch": batch, **({"item": label} if label else {})}
            return self._enqueue(handle, task_id, limit=self.max_waiting + MAX_BATCH_JOBS)
        return self._enqueue(handle, task_id)

    # ---- submission ----------------------------------------------------------------------------
    def _default_options(self) -> OutputOptions:
        return OutputOptions(keep_incomplete=self.host.keep_incomplete())

    def _enqueue(self, handle: JobHandle, task_id: str | None, replacing: JobHandle | None = None,
                 limit: int | None = None) -> JobHandle:
        with self._lock:
            if self._closed:
                raise FramePackError("the job queue is shutting down")
            waiting = self.store.count("queued") if self.store is not None else len(self._pending)
            if waiting >= (self.max_waiting if limit is None else limit):
                raise QueueFull(f"{waiting} jobs are already waiting, the most this server queues; "
                                f"submit again when one has started")
            if replacing is not None and self._jobs.get(handle.id) is not replacing:
                raise JobConflict(f"job {handle.id} was resumed already")
            if task_id:
                self.host.task_queued(task_id)  # before the worker can see the job, so "queued" comes first
            if replacing is None:
                # when it joined the queue: creation order is queue order, even if the clock steps back
                handle.record.created = self._last_created = max(time.time(), self._last_created)
            if self.store is not None:
                from framepack.jobs.handle import start_to_dict

                request = handle.request.to_json() if handle.request is not None else None
                self.store.add(handle.record, request, handle.options.model_dump(mode="json"),
                               start=start_to_dict(handle.start), batch=handle.batch)
            self._jobs.pop(handle.id, None)
            self._jobs[handle.id] = handle
            if self.store is None:  # with a store, the worker takes jobs from it
                self._pending.append(handle)
            self._forget_old_locked()
            if self.run_here:
                self._ensure_worker_locked()
            self._lock.notify_all()
        return handle

    def plan_resources(self, request: GenerationRequest, options: OutputOptions | None = None) -> dict | None:
        """The request's resource plan on the host's machine (None when the host describes none);
        raises an `InputError` at `resolution`, naming what would fit, when the run would not fit."""
        describe = getattr(self.host, "resource_machine", None)
        machine = describe(request.variant) if describe is not None else None
        if machine is None:
            return None
        return resources_dict(plan_job(machine, request, options))

    def get(self, job_id: str) -> JobHandle | None:
        self._sync()
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[JobHandle]:
        self._sync()
        with self._lock:
            return list(self._jobs.values())

    def ahead_of(self, handle: JobHandle) -> int:
        """Jobs that run before `handle` (0 unless it is queued)."""
        self._sync()
        with self._lock:
            if handle.status != Status.QUEUED:
                return 0
            if self.store is not None:  # the store's order: queued jobs here are in it too
                before = list(self._jobs.values())
                before = before[: before.index(handle)] if handle in before else before
                return sum(1 for job in self._jobs.values() if job.status == Status.RUNNING) + \
                    sum(1 for job in before if job.status == Status.QUEUED)
            running = sum(1 for job in self._jobs.values() if job.status == Status.RUNNING)
            return running + next((n for n, job in enumerate(self._pending) if job is handle), 0)

    def cancel(self, job_id: str) -> JobHandle | None:
        """Remove a queued job at once (`cancelled`), or ask a running one to stop after its step."""
        if self.store is not None:
            return self._cancel_stored(job_id)
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
            self._drop_work(handle)
            self._release(handle)
        else:
            handle.control.stop()
        return handle

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel the waiting jobs, stop the running one after its step, and end the worker.

        With a store, waiting jobs stay queued there (they run after a restart)."""
        with self._lock:
            self._closed = True
            pending = [] if self.store is not None else list(self._pending)
            self._pending.clear()
            for handle in pending:
                self._finish_locked(handle, Status.CANCELLED)
            running = [handle for handle in self._jobs.values() if handle.status == Status.RUNNING]
            self._lock.notify_all()
        for handle in pending:
            self._drop_work(handle)
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
        if self.store is not None:
            return self._work_from_store()
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

    @staticmethod
    def _drop_work(handle: JobHandle) -> None:
        """A job cancelled before it ran leaves nothing: an uploaded clip's folder goes with it."""
        if handle.work is not None and not handle.work.released:
            handle.work.close()

    def _forget_old_locked(self) -> None:
        finished = [job_id for job_id, handle in self._jobs.items() if handle.status.finished]
        for job_id in finished[: max(0, len(self._jobs) - self.history)]:
            del self._jobs[job_id]

    # ---- the job store -------------------------------------------------------------------------
    def _work_from_store(self) -> None:
        """The worker with a store: claim the oldest queued job (ours or another process's), run it."""
        from framepack.jobs.workers import fail_unreadable, handle_from_stored, run_claimed

        while True:
            with self._lock:
                if self._closed:
                    return
            job = self.store.claim_next(self._owner)
            if job is None:
                with self._lock:
                    if not self._closed:
                        self._lock.wait(STORE_POLL_S)
                continue
            with self._lock:
                if self._closed:  # shut down while claiming: the job waits for the next start
                    self.store.unclaim(job.id, self._owner)
                    return
                known = self._jobs.get(job.id)
                known = known if known is not None and not known.status.finished else None
                try:
                    handle = handle_from_stored(job, known.control if known else self.host.new_control(None), known)
                except Exception as problem:
                    fail_unreadable(self.store, job, self._owner, problem)
                    continue
                self._running_here.add(job.id)
                self._jobs[job.id] = handle  # in its place: the list stays in submission order
            try:
                status, _ = run_claimed(self.store, self.runner, handle, self._owner)
                if status == Status.INTERRUPTED and self._closed and self.auto_resume and handle.record.resumable:
                    self._requeue_for_restart(handle)
            finally:
                with self._lock:
                    self._running_here.discard(job.id)
                self._release(handle)

    def _requeue_for_restart(self, handle: JobHandle) -> None:
        """A job stopped by a server shutdown, with auto-resume on: queued to resume after the restart."""
        record = replace(handle.record, status=Status.QUEUED, error=None, started=None, finished=None,
                         resumes=handle.record.resumes + 1, resumable=False, checkpoint=None)
        self.store.add(record, None, handle.options.model_dump(mode="json"),
                       start={"resume": handle.record.checkpoint})

    def _cancel_stored(self, job_id: str) -> JobHandle | None:
        handle = self.get(job_id)
        if handle is None or handle.status.finished:
            return handle
        record = self.store.cancel_queued(job_id) if handle.status == Status.QUEUED else None
        if record is not None:
            with self._lock:
                if handle in self._pending:
                    self._pending.remove(handle)
                handle.record = record
            self._drop_work(handle)
            self._release(handle)
            return handle
        self.store.request_stop(job_id)  # it runs: here, in a worker process or on a Ray actor
        if handle.control is not None:
            handle.control.stop()
        return handle

    def _save_finished(self, handle: JobHandle) -> None:
        if self.store is not None and self.store.get(handle.id) is not None:
            self.store.finish(handle.record)

    def _sync(self, force: bool = False) -> None:
        """Bring the handles up to date with the store: jobs other processes queued, ran or finished."""
        if self.store is None:
            return
        now = time.time()
        if not force and now - self._synced_at < SYNC_EVERY_S:
            return
        since, self._synced_at = (None if force else self._synced_at - SYNC_MARGIN_S), now
        limit = self.history if force else None
        try:
            rows = self.store.jobs(since=since, limit=limit)
            if force:  # every unfinished job, however old
                known = {row.id for row in rows}
                rows = [row for row in self.store.jobs(statuses=("queued", "running")) if row.id not in known] + rows
        except FramePackError:
            log.warning("FramePack: could not read the job store", exc_info=True)
            return
        released = []
        with self._lock:
            for row in rows:
                if row.id in self._running_here:
                    continue  # this process runs it: its own record is the newest
                handle = self._jobs.get(row.id)
                if handle is None or (handle.status.finished and not row.status.finished):
                    handle = self._handle_from_row(row)
                    self._jobs.pop(row.id, None)
                    self._jobs[row.id] = handle
                    continue
                if row.record.updates < handle.record.updates and not row.status.finished:
                    continue  # an older copy of what this process just wrote
                handle.record = row.record
                handle.batch = row.batch
                if row.status.finished and not handle.wait(0):
                    if handle in self._pending:
                        self._pending.remove(handle)
                    released.append(handle)
            self._forget_old_locked()
        for handle in released:
            self._release(handle)

    def _handle_from_row(self, row) -> JobHandle:
        from framepack.jobs.handle import start_from_dict
        from framepack.request.output import build_output_from

        try:
            options = build_output_from(row.options)
        except FramePackError:
            options = self._default_options()
        if row.status.finished:
            handle = JobHandle.finished_from(row.record, options)
        else:
            handle = JobHandle(None, options, self.host.new_control(None), record=row.record,
                               start=start_from_dict(row.start))
        handle.batch = row.batch
        return handle
