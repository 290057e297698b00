"""The one way a job runs, whichever face submitted it (tab, API, CLI, SD.Next).

`JobRunner(host).run(handle)` holds the host's GPU lock for the whole job, lets the host prepare
the request (SD.Next turns `<lora:...>` prompt tags into LoRA files), opens the host's job
(progress bar, Stop/Skip/Pause), loads the pipeline, generates and writes the outputs in the job's
work folder, records the published files with the host, closes the host's job, and logs how it
went. It returns the finished status; the queue decides when a job runs and marks it finished.

The work folder (`<output>/.framepack-work/<job id>/`) is the job's checkpoint home: a new job
creates it, a resumed one claims it back, a re-roll copies its start into a new one. When the job
ends, the folder is removed, unless it holds checkpoints worth keeping: the job stopped or failed
(it can be resumed) or `keep_checkpoints` is on (it can be re-rolled); then it is released, its
record (`job.json`) saying how the job ended.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from framepack.errors import FramePackError
from framepack.jobs.handle import Extend, JobHandle, Reroll, Resume
from framepack.jobs.output import JobResult, run_job
from framepack.request.events import SectionDone, Stage, Status

log = logging.getLogger("framepack.jobs")


class JobRunner:
    """Runs jobs on the calling thread, one host, one job at a time (the host's GPU lock)."""

    def __init__(self, host, name: str | None = None):
        self.host = host
        self.name = name
        """The worker's name in job records (default: the host's)."""

    def run(self, handle: JobHandle) -> tuple[Status, str | None]:
        """Run `handle`'s job to its end; returns (status, error message or None). Never raises."""
        record = handle.record
        record.worker = self.name or getattr(self.host, "name", None)
        log.info("FramePack job %s started: %s", handle.id, record.plan)
        status, error, result = Status.FAILED, None, None
        try:
            result = self._run(handle)
            status = Status.COMPLETED if result.done.status == Status.COMPLETED else Status.INTERRUPTED
        except FramePackError as problem:
            handle.exception, error = problem, str(problem)
            log.warning("FramePack job %s failed: %s", handle.id, problem)
        except Exception as problem:  # a bug must not stop the queue; keep the detail in the log
            handle.exception, error = problem, f"internal error: {type(problem).__name__}: {problem}"
            log.exception("FramePack job %s failed", handle.id)
        finally:
            self._settle(handle, status, error)
        if result is not None:
            saved = ", ".join(f"{kind} {path}" for kind, path in record.outputs.items()) or "nothing saved"
            log.info("FramePack job %s %s: %d frames in %.1f s; %s", handle.id, status, result.frame_count,
                     result.done.seconds, saved)
        return status, error

    def _run(self, handle: JobHandle) -> JobResult:
        host = self.host
        checkpoints = None

        def on_event(event: object) -> None:
            handle.emit(event)
            host.report(event)
            if isinstance(event, SectionDone) and checkpoints is not None:
                checkpoints.write_record(handle.record)  # after the section's checkpoint: what job.json says is true

        with host.gpu_lock():
            token = host.begin_job(f"FramePack {handle.id}", control=handle.control)
            try:
                request = handle.request
                if handle.start is None or isinstance(handle.start, Extend):  # a saved request was prepared already
                    request = host.prepare_request(request)  # before the model loads: a bad LoRA tag fails fast
                on_event(Stage("loading"))
                pipe = host.pipeline(request.variant)
                tile_if_planned(pipe, handle.record.resources)
                opened = self._open_work(handle, request, host.video_dir())
                checkpoints = opened["checkpoints"]
                checkpoints.write_record(handle.record)
                result = run_job(pipe, opened["spec"].request, opened["spec"].options, opened["folder"],
                                 control=handle.control, on_event=on_event, work=handle.work,
                                 checkpoints=checkpoints, spec=opened["spec"], resume=opened["resume"],
                                 clip=opened["clip"], host=host)
                handle.record.frame_count = result.frame_count
                handle.record.outputs = {kind: str(path) for kind, path in
                                         (("video", result.video), ("frames", result.frames),
                                          ("images", result.images)) if path is not None}
                for path in result.outputs:  # while the host still has the job open
                    host.record_output(path)
            finally:
                host.end_job(token)
        return result

    def _open_work(self, handle: JobHandle, request, video_dir: Path) -> dict:
        """The job's work folder, checkpoints, spec and start point, by how the job starts."""
        from framepack.io.workdir import WorkBusy, WorkFolder
        from framepack.jobs.checkpoint import CheckpointError, JobCheckpoints, JobSpec
        from framepack.jobs.extend import ClipJob
        from framepack.jobs.reroll import prepare_reroll

        start, record = handle.start, handle.record
        opened = {"folder": video_dir, "resume": None, "clip": None}
        if isinstance(start, Resume):
            try:
                handle.work = WorkFolder.claim(start.work)
            except WorkBusy:
                record.resumable = True  # another process runs it now; it may still stop before its end
                raise
            opened["folder"] = handle.work.path.parent.parent
            checkpoints = JobCheckpoints(handle.work.path)
            try:
                spec, resume = checkpoints.read_spec(), checkpoints.latest()
            except BaseException as error:
                handle.work.release()  # everything stays as it was; only our claim goes
                handle.work = None
                record.resumable = not isinstance(error, CheckpointError)
                raise
            record.sections_done = resume.position
            opened.update(spec=spec, resume=resume, checkpoints=checkpoints)
            return opened
        if handle.work is None:
            handle.work = WorkFolder(video_dir, handle.id)
        checkpoints = JobCheckpoints(handle.work.path)
        kind = {Reroll: "reroll", Extend: "extend"}.get(type(start), "generate")
        spec = JobSpec(handle.id, kind, request, handle.options, dict(record.source), handle.name, handle.overwrite)
        opened.update(spec=spec, checkpoints=checkpoints)
        if isinstance(start, Reroll):
            opened["resume"] = prepare_reroll(JobCheckpoints(start.source), checkpoints, spec, start.position)
            record.sections_done = start.position
        elif isinstance(start, Extend):
            opened["clip"] = ClipJob(start.clip, start.frame_size)
        return opened

    def _settle(self, handle: JobHandle, status: Status, error: str | None) -> None:
        """Keep the work folder as a checkpoint when it is worth it, else remove it."""
        work, record = handle.work, handle.record
        if work is None or work.released:
            return
        from framepack.jobs.checkpoint import JobCheckpoints

        checkpoints = JobCheckpoints(work.path)
        worth_keeping = checkpoints.positions() and checkpoints.spec_path.is_file() and (
            status != Status.COMPLETED or handle.options.keep_checkpoints)
        if not worth_keeping:
            work.close()
            record.checkpoint, record.resumable = None, False
            return
        record.checkpoint, record.resumable = str(work.path), status != Status.COMPLETED
        try:
            checkpoints.write_record(replace(record, status=status, error=error, finished=time.time()))
        except FramePackError as problem:
            log.warning("FramePack job %s: could not save its record: %s", handle.id, problem)
        work.release()
        if record.resumable:
            log.info("FramePack job %s can be resumed from %d section(s): %s", handle.id,
                     checkpoints.positions()[-1], work.path)


def tile_if_planned(pipe, resources: dict | None) -> None:
    """Turn the VAE's tiled decode on when this job's plan needs it (a larger bucket or longer
    sections than the pipeline was loaded for); it is never turned off here, so a forced or
    load-time choice stands."""
    vae = getattr(pipe, "vae", None)
    if not resources or not resources.get("vae_tiling") or vae is None or getattr(vae, "use_tiling", True):
        return
    from framepack.models.offload import apply_vae_tiling

    log.info("VAE tiling on for this job (the resource plan needs it)")
    apply_vae_tiling(pipe, True)
