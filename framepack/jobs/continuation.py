"""The queue's operations on jobs that already ran: resume, re-roll, extend, retry, discard, recover.

Jobs survive: an interrupted or failed job keeps its checkpoints, and `resume(id)` continues it
(same id, same frames as a run never interrupted); `reroll(id, from_section, ...)` makes a new
video reusing the sections generated before one; `extend(clip, fields)` continues a clip (and
`clip_of(id)` names a finished job's clip to extend); `retry(id)` runs a failed job again;
`discard(id)` deletes a job's checkpoints. `recover()` (called when the queue is made) lists the
jobs whose work folders a crash, a kill or a restart left in the output folder, as resumable;
`adopt(folder)` lists one such folder.

`ContinuationMixin` is a part of `JobQueue` (framepack.jobs.queue), kept apart because these
operations read checkpoints and clips while the queue itself only orders and runs handles. Each
one builds a handle and hands it to the queue's `_enqueue`, so limits, the store and the worker
treat it as any submission.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

from framepack.errors import FramePackError, InputError, InputErrors
from framepack.jobs.checks import check_output
from framepack.jobs.handle import Extend, JobHandle, Listener, Reroll, Resume
from framepack.jobs.record import JobRecord, new_job_id
from framepack.request.events import Status
from framepack.request.limits import MAX_BATCH_JOBS
from framepack.request.output import OutputOptions

log = logging.getLogger("framepack.jobs")

EXTEND_REFUSED = ("image", "blank_start", "fps", "interpolation")
"""Request fields an extension takes from its clip, never from the user."""


class JobNotFound(FramePackError):
    """No job with that id is known here (HTTP 404)."""


class JobConflict(FramePackError):
    """The job is not in a state that allows this (HTTP 409): running, no checkpoints, busy elsewhere."""


class ContinuationMixin:
    """`JobQueue`'s resume, re-roll, extend, retry, clip_of, discard, recover and adopt.

    What it uses of the queue: the host, the store and the waiting limit, the handles
    (`_jobs` under `_lock`, `get`), and the submission steps (`_check_job`, `_default_options`,
    `_enqueue`, `_save_finished`).
    """

    host: Any
    store: Any
    max_waiting: int
    _jobs: OrderedDict[str, JobHandle]
    _lock: threading.Condition

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

    def _new_handle(self, request, options, task_id, listener, *, kind: str, source: dict, start,
                    job_id: str | None = None) -> JobHandle:
        handle = JobHandle(request, options, self.host.new_control(task_id), task_id, listener, start=start)
        handle.record.kind, handle.record.source = kind, source
        if job_id is not None:
            handle.record.id = job_id
        return handle
