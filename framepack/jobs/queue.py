"""A first-in, first-out queue of generation jobs, run one at a time through the `JobRunner`.

The REST API, the tab, SD.Next and the CLI all submit here, so a generation started from the
browser and one posted by a script never fight over the GPU. Submission validates what needs io
(codec, encoder options, LoRA files), resolves a random seed, and opens the host's progress task
when the face gave one; the task is closed when the job ends, however it ends. A job that fails
records its message and the queue moves on; a stopped job ends `interrupted` (keeping partial
outputs when keep-incomplete is on); a job removed before it started ends `cancelled`.

Jobs survive: an interrupted or failed job keeps its checkpoints, and `resume(id)` continues it
(same id, same frames as a run never interrupted); `reroll(id, from_section, ...)` makes a new
video reusing the sections generated before one; `extend(clip, fields)` continues a clip;
`discard(id)` deletes a job's checkpoints. `recover()` (called when the queue is made) lists the
jobs whose work folders a crash, a kill or a restart left in the output folder, as resumable.

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
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from framepack.errors import FramePackError, InputError
from framepack.errors import InputErrors
from framepack.jobs.checks import check_job, check_output, host_model_problems
from framepack.jobs.handle import Extend, JobHandle, Listener, Reroll, Resume
from framepack.jobs.record import JobRecord, new_job_id
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

EXTEND_REFUSED = ("image", "blank_start", "fps", "interpolation")
"""Request fields an extension takes from its clip, never from the user."""


class QueueFull(FramePackError):
    """Too many jobs are waiting; the face asks the user to try again later (HTTP 429)."""


class JobNotFound(FramePackError):
    """No job with that id is known here (HTTP 404)."""


class JobConflict(FramePackError):
    """The job is not in a state that allows this (HTTP 409): running, no checkpoints, busy elsewhere."""


class JobQueue:
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

    # ---- jobs that continue others -----------------------------------------------------------
    def resume(self, job_id: str, *, task_id: str | None = None, listener: Listener | None = None) -> JobHandle:
        """Continue an interrupted or failed job from its last checkpoint: same id, same frames.

        Raises `JobNotFound`, `JobConflict` (not finished, no checkpoint, another process runs it)
        or `CheckpointError` (its checkpoint is damaged; nothing is changed)."""
        from framepack.io.workdir import live_owner
        from framepack.jobs.checkpoint import JobCheckpoints

        old = self._finished_with_checkpoint(job_id, "resumed")
        if old.status == Status.COMPLETED:
            raise JobConflict(f"job {job_id} completed; there is nothing to resume (re-roll it from a section instead)")
        folder = Path(old.record.checkpoint)
        checkpoints = JobCheckpoints(folder)
        spec, latest = checkpoints.read_spec(), checkpoints.latest()
        owner = live_owner(folder)
        if owner is not None and owner != os.getpid():
            raise JobConflict(f"job {job_id} is being run by another process (pid {owner})")
        check_output(spec.options)
        record = replace(old.record, status=Status.QUEUED, error=None, started=None, finished=None,
                         resumes=old.record.resumes + 1, sections_done=latest.position, resumable=False,
                         progress=latest.position / max(1, spec.request.plan().num_sections),
                         updates=old.record.updates + 1)
        handle = JobHandle(spec.request, spec.options, self.host.new_control(task_id), task_id, listener,
                           start=Resume(folder), record=record)
        handle.batch = old.batch
        return self._enqueue(handle, task_id, replacing=old)

    def reroll(self, job_id: str, from_section: int, *, seed: int | None = None, section_prompts: str | None = None,
               options: OutputOptions | None = None, task_id: str | None = None,
               listener: Listener | None = None) -> JobHandle:
        """A new video from section `from_section` on, reusing the sections the model generated before it
        from the job's checkpoints (F1: sections 1..N-1; original model: N+1..last, it generates the
        end first). `seed` -1 or leaving both `seed` and `section_prompts` out picks a new random seed."""
        from framepack.jobs.checkpoint import JobCheckpoints
        from framepack.jobs.reroll import reroll_position, reused_sections

        old = self._finished_with_checkpoint(job_id, "re-rolled")
        checkpoints = JobCheckpoints(Path(old.record.checkpoint))
        spec = checkpoints.read_spec()
        if spec.request.noise == "reference":
            raise InputError(f"job {job_id} drew its noise as the reference app does (one generator for the whole "
                             f"video), so no section can be drawn again alone; re-roll needs per-section noise",
                             ("from_section",))
        plan = spec.request.plan()
        position = reroll_position(plan, from_section)
        if not checkpoints.positions():
            checkpoints.latest()  # says that the job holds no checkpoint
        if position not in checkpoints.positions():
            done = checkpoints.positions()[-1] if checkpoints.positions() else 0
            raise InputError(f"job {job_id} stopped after {done} of {plan.num_sections} sections; it can be re-rolled "
                             f"from the sections it reached ({self._reachable(plan, done)})", ("from_section",))
        checkpoints.at(position)  # a damaged checkpoint is refused now, not when the job runs
        changes: dict[str, Any] = {}
        if section_prompts is not None:
            changes["section_prompts"] = section_prompts
        if seed is not None or section_prompts is None:
            changes["seed"] = -1 if seed is None else seed
        request = spec.request.replace(**changes).resolve_seed()
        if request.plan().generation_order != plan.generation_order:
            raise InputError("the new settings change the sections of the video; a re-roll keeps them", ())
        options = options or spec.options
        self._check_job(request, options)
        source = {"job": job_id, "from_section": from_section, "reused_sections": reused_sections(plan, position)}
        handle = self._new_handle(request, options, task_id, listener, kind="reroll", source=source,
                                  start=Reroll(Path(old.record.checkpoint), from_section, position))
        return self._enqueue(handle, task_id)

    def extend(self, clip: str | os.PathLike | bytes, fields: dict[str, Any], options: OutputOptions | None = None, *,
               task_id: str | None = None, listener: Listener | None = None, source: dict | None = None,
               strict: bool = False) -> JobHandle:
        """Continue a clip: a video or raw frames file on this machine, or its bytes (an upload).

        `fields` are request fields (prompt, duration, section_prompts, variant, end_image, seed,
        steps, ...); the start image, fps and size come from the clip. The variant defaults to F1,
        or to the original model when an end image is given. Raises `InputErrors` naming each field
        (`strict`: no type coercion, as the API wants). `source` is added to the job's record.
        """
        from framepack.errors import InputErrors
        from framepack.io.clip import open_clip
        from framepack.io.workdir import WorkFolder
        from framepack.jobs.extend import frame_size_for, new_frames
        from framepack.request.model import GenerationRequest, validated

        refused = [InputError(f"{name}: an extension takes it from the clip; leave it out", (name,))
                   for name in EXTEND_REFUSED if fields.get(name) is not None]
        if refused:
            raise InputErrors(refused)
        job_id, work = new_job_id(), None
        clip_field = "video" if isinstance(clip, (bytes, bytearray)) else "job" if "job" in (source or {}) else None
        if isinstance(clip, (bytes, bytearray)):
            work = WorkFolder(self.host.video_dir(), job_id)
            path = work.path / "clip.input"
            path.write_bytes(bytes(clip))
        else:
            path = Path(clip)
        try:
            try:
                opened = open_clip(path)
            except InputError as error:  # said of the field that brought the clip (an upload: "video")
                raise InputError(str(error), error.field or (clip_field and (clip_field,))) from None
            info = opened.describe()
            getattr(opened, "close", lambda: None)()
            size, resolution, note = frame_size_for(opened.height, opened.width, fields.get("resolution"))
            variant = fields.get("variant") or ("original" if fields.get("end_image") is not None else "f1")
            import numpy as np

            request = validated(GenerationRequest, {**fields, "variant": variant, "resolution": resolution,
                                                    "fps": float(opened.fps), "image": np.zeros((*size, 3), np.uint8)},
                                strict=strict)
            options = options or self._default_options()
            self._check_job(request, options)
            request = request.resolve_seed()
            plan = request.plan()
            clip_info = {**info, "fitted": note, **(source or {})}
            handle = self._new_handle(request, options, task_id, listener, kind="extend", source=clip_info,
                                      start=Extend(path, size), job_id=job_id)
            frames = info.get("frames")
            handle.record.plan = (f"{frames if frames else 'all'} clip frames + {new_frames(plan)} new: "
                                  f"{plan.summary()}")
            handle.work = work
            return self._enqueue(handle, task_id)
        except BaseException:
            if work is not None:
                work.close()
            raise

    def retry(self, job_id: str, *, task_id: str | None = None) -> JobHandle:
        """Run a failed, cancelled or interrupted job again, same id: from its last checkpoint when it has
        one (a resume), else from the start with its saved settings (kept in the job store)."""
        from framepack.jobs.handle import start_from_dict

        handle = self.get(job_id)
        if handle is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if not handle.status.finished or handle.status == Status.COMPLETED:
            raise JobConflict(f"job {job_id} is {handle.status}; only a failed, cancelled or interrupted job is retried")
        if handle.record.resumable and handle.record.checkpoint:
            return self.resume(job_id, task_id=task_id)
        stored = self.store.get(job_id) if self.store is not None else None
        if stored is None or not stored.request:
            raise JobConflict(f"job {job_id} cannot be retried: its settings were not kept (no job store)")
        start = None if stored.start and "resume" in stored.start else start_from_dict(stored.start)
        record = replace(handle.record, status=Status.QUEUED, error=None, started=None, finished=None, progress=0.0,
                         sections_done=0, section=None, step=0, stage=None, eta=None, outputs={}, frame_count=None,
                         timings={}, resumable=False, checkpoint=None, updates=handle.record.updates + 1)
        again = JobHandle(None, handle.options, self.host.new_control(task_id), task_id, record=record, start=start)
        again.batch = handle.batch
        limit = self.max_waiting + MAX_BATCH_JOBS if handle.batch else None
        return self._enqueue(again, task_id, replacing=handle, limit=limit)

    def clip_of(self, job_id: str) -> Path:
        """The file holding a finished job's frames, to extend it: its raw frames, else its video."""
        handle = self.get(job_id)
        if handle is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if not handle.status.finished:
            raise JobConflict(f"job {job_id} is {handle.status}; extend it when it has finished")
        for kind in ("frames", "video"):
            path = handle.record.outputs.get(kind)
            if path and Path(path).is_file():
                return Path(path)
        raise JobConflict(f"job {job_id} has no saved video or raw frames to extend")

    def discard(self, job_id: str) -> JobHandle:
        """Delete a finished job's checkpoints (it can no longer be resumed or re-rolled)."""
        from framepack.io.workdir import WorkFolder

        handle = self._finished_with_checkpoint(job_id, "discarded")
        folder = Path(handle.record.checkpoint)
        if folder.exists():
            WorkFolder.claim(folder).close()
        handle.record.checkpoint, handle.record.resumable = None, False
        handle.record.updates += 1
        self._save_finished(handle)
        return handle

    # ---- jobs found on disk ------------------------------------------------------------------
    def recover(self) -> list[JobHandle]:
        """List the jobs whose work folders are in the output folder: interrupted by a stop, a crash, a
        kill or a restart (resumable), or completed with kept checkpoints. Unresumable leftovers go."""
        from framepack.jobs.checkpoint import sweep_output_folder

        try:
            found = sweep_output_folder(self.host.video_dir()).resumable
        except Exception:  # listing old jobs must never keep the queue from starting
            log.exception("FramePack: could not look for interrupted jobs")
            return []
        handles = []
        for folder in found:
            try:
                handles.append(self.adopt(folder))
            except FramePackError as problem:
                log.warning("FramePack: %s", problem)
        if handles:
            log.info("FramePack: %d job(s) with checkpoints in %s", len(handles), self.host.video_dir())
        return handles

    def adopt(self, folder: str | os.PathLike) -> JobHandle:
        """List the job saved in work folder `folder` (a job this queue did not run, or before a restart)."""
        from framepack.jobs.checkpoint import CheckpointError, JobCheckpoints

        folder = Path(folder)
        checkpoints = JobCheckpoints(folder)
        spec = checkpoints.read_spec()
        if spec.id != folder.name:
            raise CheckpointError(f"{folder} holds job {spec.id!r}: a work folder is named after its job")
        with self._lock:
            known = self._jobs.get(spec.id)
            if known is not None:
                return known
        positions = checkpoints.positions()
        plan = spec.request.plan()
        record = checkpoints.read_record() or JobRecord(
            id=spec.id, kind=spec.kind, source=spec.source, seed=spec.request.seed, plan=plan.summary(),
            sections=plan.num_sections, settings={**spec.request.settings(), "output": spec.options.model_dump(mode="json")})
        if not record.status.finished:  # it was running (or waiting) when its process ended
            record.status, record.error = Status.INTERRUPTED, "the process running it ended (crash, kill or restart)"
        record.id, record.checkpoint = spec.id, str(folder)
        record.resumable = record.status != Status.COMPLETED and bool(positions)
        record.sections_done = positions[-1] if positions else 0
        handle = JobHandle.finished_from(record, spec.options)
        with self._lock:
            self._jobs.setdefault(spec.id, handle)
            return self._jobs[spec.id]

    def _finished_with_checkpoint(self, job_id: str, action: str) -> JobHandle:
        handle = self.get(job_id)
        if handle is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if not handle.status.finished:
            raise JobConflict(f"job {job_id} is {handle.status}; it can be {action} when it has finished")
        if not handle.record.checkpoint or not Path(handle.record.checkpoint).is_dir():
            why = ("its checkpoints were removed (a completed job keeps them only with keep_checkpoints)"
                   if handle.status == Status.COMPLETED else "it saved no checkpoint")
            raise JobConflict(f"job {job_id} cannot be {action}: {why}")
        return handle

    @staticmethod
    def _reachable(plan, done: int) -> str:
        """The section numbers a job with checkpoints up to position `done` can be re-rolled from."""
        numbers = sorted(plan.sections[index].number for index in plan.generation_order[: done + 1])
        return f"section {numbers[0]}" if len(numbers) == 1 else f"sections {numbers[0]}-{numbers[-1]}"

    # ---- submission ----------------------------------------------------------------------------
    def _default_options(self) -> OutputOptions:
        return OutputOptions(keep_incomplete=self.host.keep_incomplete())

    def _new_handle(self, request, options, task_id, listener, *, kind: str, source: dict, start,
                    job_id: str | None = None) -> JobHandle:
        handle = JobHandle(request, options, self.host.new_control(task_id), task_id, listener, start=start)
        handle.record.kind, handle.record.source = kind, source
        if job_id is not None:
            handle.record.id = job_id
        return handle

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
                handle.record.created = time.time()  # when it joined the queue: creation order is queue order
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
