"""The one way a job runs, whichever face submitted it (tab, API, CLI, SD.Next).

`JobRunner(host).run(handle)` holds the host's GPU lock for the whole job, lets the host prepare
the request (SD.Next turns `<lora:...>` prompt tags into LoRA files), opens the host's job
(progress bar, Stop/Skip/Pause), loads the pipeline, generates and writes the outputs in the job's
work folder, records the published files with the host, closes the host's job, and logs how it
went. It returns the finished status; the queue decides when a job runs and marks it finished.
"""

from __future__ import annotations

import logging

from framepack.errors import FramePackError
from framepack.jobs.handle import JobHandle
from framepack.jobs.output import JobResult, run_job
from framepack.request.events import Stage, Status

log = logging.getLogger("framepack.jobs")


class JobRunner:
    """Runs jobs on the calling thread, one host, one job at a time (the host's GPU lock)."""

    def __init__(self, host):
        self.host = host

    def run(self, handle: JobHandle) -> tuple[Status, str | None]:
        """Run `handle`'s job to its end; returns (status, error message or None). Never raises."""
        record = handle.record
        record.worker = getattr(self.host, "name", None)
        log.info("FramePack job %s started: %s", handle.id, record.plan)
        try:
            result = self._run(handle)
        except FramePackError as problem:
            handle.exception = problem
            log.warning("FramePack job %s failed: %s", handle.id, problem)
            return Status.FAILED, str(problem)
        except Exception as problem:  # a bug must not stop the queue; keep the detail in the log
            handle.exception = problem
            log.exception("FramePack job %s failed", handle.id)
            return Status.FAILED, f"internal error: {type(problem).__name__}: {problem}"
        status = Status.COMPLETED if result.done.status == Status.COMPLETED else Status.INTERRUPTED
        saved = ", ".join(f"{kind} {path}" for kind, path in record.outputs.items()) or "nothing saved"
        log.info("FramePack job %s %s: %d frames in %.1f s; %s", handle.id, status, result.done.frames,
                 result.done.seconds, saved)
        return status, None

    def _run(self, handle: JobHandle) -> JobResult:
        from framepack.io.workdir import WorkFolder

        host = self.host

        def on_event(event: object) -> None:
            handle.emit(event)
            host.report(event)

        with host.gpu_lock():
            token = host.begin_job(f"FramePack {handle.id}", control=handle.control)
            try:
                request = host.prepare_request(handle.request)  # before the model loads: a bad LoRA tag fails fast
                on_event(Stage("loading"))
                pipe = host.pipeline(request.variant)
                folder = host.video_dir()
                handle.work = WorkFolder(folder, handle.id)  # a second Ctrl-C of the CLI deletes it
                try:
                    result = run_job(pipe, request, handle.options, folder, control=handle.control,
                                     on_event=on_event, work=handle.work, name=handle.name,
                                     overwrite=handle.overwrite, host=host)
                finally:
                    handle.work.close()
                handle.record.outputs = {kind: str(path) for kind, path in
                                         (("video", result.video), ("frames", result.frames),
                                          ("images", result.images)) if path is not None}
                for path in result.outputs:  # while the host still has the job open
                    host.record_output(path)
            finally:
                host.end_job(token)
        return result
