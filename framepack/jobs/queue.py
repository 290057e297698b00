"""A first-in, first-out queue of generation jobs, run one at a time under the host's GPU lock.

The REST API and the tab both submit here, so a generation started from the browser and one
posted by a script never fight over the GPU. A job that fails records its message and the
queue moves on; a cancelled job stops between steps and keeps partial outputs only when
keep-incomplete is on.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framepack.engine.control import GenerationControl
from framepack.engine.events import Done, Preview, Progress, SectionDone
from framepack.engine.planner import VideoPlan
from framepack.errors import FramePackError
from framepack.jobs.output import JobResult, OutputOptions, run_job
from framepack.jobs.request import GenerationRequest

log = logging.getLogger("framepack")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


@dataclass
class Job:
    """The live record of one submission; faces poll it (`to_dict`) or wait on it."""

    request: GenerationRequest
    options: OutputOptions
    control: GenerationControl
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    position: int = 0  # sections finished
    sections: int = 0
    section_number: int | None = None
    step: int = 0
    steps: int = 0
    progress: float = 0.0
    it_per_s: float = 0.0
    eta: float | None = None
    error: str | None = None
    preview: np.ndarray | None = None
    result: JobResult | None = None
    updates: int = 0  # bumped on every change, so pollers can tell something happened
    plan: VideoPlan = field(init=False, repr=False)  # planned once: faces poll to_dict() several times a second
    _finished_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self.plan = self.request.plan()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished_event.wait(timeout)

    @property
    def video(self):
        return None if self.result is None else self.result.video

    @property
    def frames_file(self):
        return None if self.result is None else self.result.frames

    def describe(self) -> str:
        if self.status == RUNNING and self.steps:
            return (f"section {min(self.position + 1, self.sections)}/{self.sections}, step {self.step}/{self.steps}, "
                    f"{self.it_per_s:.2f} it/s, ETA {self.eta or 0:.0f} s")
        return self.error or self.status

    def to_dict(self) -> dict[str, Any]:
        done = None if self.result is None else self.result.done
        return {
            "id": self.id, "status": self.status, "created": self.created, "started": self.started,
            "finished": self.finished, "section": self.section_number, "sections_done": self.position,
            "sections": self.sections, "step": self.step, "steps": self.steps, "progress": round(self.progress, 4),
            "it_per_s": round(self.it_per_s, 3), "eta": None if self.eta is None else round(self.eta, 1),
            "error": self.error, "seed": self.request.seed, "plan": self.plan.summary(),
            "video": self.video is not None, "frames": self.frames_file is not None,
            "frame_count": None if done is None else done.frames,
            "timings": {} if done is None else {k: round(v, 3) for k, v in done.timings.items()},
        }

    def apply(self, event: object) -> None:
        """Fold one engine event into the record."""
        if isinstance(event, Progress):
            self.section_number, self.step, self.steps = event.section_number, event.step, event.steps
            self.sections, self.progress, self.it_per_s, self.eta = (
                event.section_count, event.fraction, event.it_per_s, event.eta)
        elif isinstance(event, Preview):
            self.preview = event.image
        elif isinstance(event, SectionDone):
            self.position = event.position + 1
        elif isinstance(event, Done):
            self.progress = 1.0 if event.status == "completed" else self.progress
        self.updates += 1


class JobQueue:
    """Runs submitted jobs in order on one worker thread."""

    def __init__(self, host, history: int = 200):
        self.host = host
        self.history = history
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._pending: deque[Job] = deque()
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    # ---- faces ---------------------------------------------------------------------
    def submit(self, request: GenerationRequest, options: OutputOptions | None = None) -> Job:
        job = Job(request, options or OutputOptions(keep_incomplete=self.host.keep_incomplete()),
                  self.host.new_control())
        with self._lock:
            if self._closed:
                raise FramePackError("the job queue is shutting down")
            self._jobs[job.id] = job
            self._pending.append(job)
            self._forget_old_locked()
            self._ensure_worker_locked()
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or ask a running one to stop between steps."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status in FINISHED:
                return job
            if job.status == QUEUED:
                self._pending.remove(job)
                self._finish(job, CANCELLED)
                return job
        job.control.stop()
        return job

    def shutdown(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            for job in pending:
                self._finish(job, CANCELLED)
            running = [job for job in self._jobs.values() if job.status == RUNNING]
            self._lock.notify_all()
        for job in running:
            job.control.stop()
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
                job = self._pending.popleft()
                job.status, job.started = RUNNING, time.time()
                job.updates += 1
            self._run(job)

    def _run(self, job: Job) -> None:
        status, error = DONE, None
        log.info("FramePack job %s started: %s", job.id, job.plan.summary())
        try:
            with self.host.gpu_lock():
                token = self.host.begin_job(f"FramePack {job.id}", control=job.control)
                try:
                    job.result = self._generate(job)
                    for path in job.result.outputs:  # while the host still has the job open
                        self.host.record_output(path)
                finally:
                    self.host.end_job(token)
            if job.result.done.status != "completed":
                status = CANCELLED
        except FramePackError as problem:
            status, error = FAILED, str(problem)
        except Exception as problem:  # a bug must not stop the queue; keep the detail in the log
            log.exception("FramePack job %s failed", job.id)
            status, error = FAILED, f"internal error: {type(problem).__name__}: {problem}"
        _log_outcome(job, status, error)
        with self._lock:
            self._finish(job, status, error)

    def _generate(self, job: Job) -> JobResult:
        def on_event(event: object) -> None:
            job.apply(event)
            self.host.report(event)

        request = self.host.prepare_request(job.request)  # before the model loads: a bad LoRA tag fails fast
        pipe = self.host.pipeline(request.variant)
        return run_job(pipe, request, job.options, self.host.video_dir(), control=job.control, on_event=on_event)

    def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        job.updates += 1
        job._finished_event.set()

    def _forget_old_locked(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.status in FINISHED]
        for job_id in finished[: max(0, len(self._jobs) - self.history)]:
            del self._jobs[job_id]


def _log_outcome(job: Job, status: str, error: str | None) -> None:
    """One line per finished job in the host's log: failures the user caused included."""
    seconds = time.time() - (job.started or job.created)
    files = ", ".join(str(path) for path in job.result.outputs) if job.result is not None else ""
    if status == FAILED:
        log.warning("FramePack job %s failed after %.1f s: %s", job.id, seconds, error)
    elif status == CANCELLED:
        log.info("FramePack job %s stopped after %.1f s: %s", job.id, seconds, files or "nothing kept")
    else:
        log.info("FramePack job %s done in %.1f s: %s", job.id, seconds, files or "nothing saved")
