"""The runtime side of one job: its record plus what only lives while the process does.

A `JobHandle` carries the job's `JobRecord` (plain data), the request it runs, its output options,
its control (stop / skip / pause), the latest preview image, the work folder while it runs, and an
event that is set when it has finished. When the job finishes, the request (and its images,
possibly hundreds of MB) is dropped: a finished job keeps its record, its options and its last
preview only.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from framepack.jobs.record import JobRecord
from framepack.request.events import Preview, Status
from framepack.request.host import Control
from framepack.request.model import GenerationRequest
from framepack.request.output import OutputOptions

log = logging.getLogger("framepack.jobs")

Listener = Callable[[object], None]


class JobHandle:
    """One submitted job: faces poll `record` or `wait()` for it; the runner feeds it events."""

    def __init__(self, request: GenerationRequest, options: OutputOptions, control: Control,
                 task_id: str | None = None, listener: Listener | None = None):
        self.request: GenerationRequest | None = request
        self.options = options
        self.control = control
        self.task_id = task_id
        self.preview: Any = None  # RGB uint8 array of the latest preview
        self.work = None  # the job's work folder while it runs (framepack.io.workdir.WorkFolder)
        self.exception: BaseException | None = None  # why it failed, for a face that re-raises (the CLI)
        self.name: str | None = None  # exact output file stem (the CLI's --out FILE), None: <filename>-<seed>
        self.overwrite = False
        plan = request.plan()
        self.record = JobRecord(seed=request.seed, plan=plan.summary(), sections=plan.num_sections,
                                settings={**request.settings(), "output": options.model_dump(mode="json")})
        self._listeners: list[Listener] = [listener] if listener is not None else []
        self._finished = threading.Event()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> Status:
        return self.record.status

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job has finished (any way), False when `timeout` passed first."""
        return self._finished.wait(timeout)

    def emit(self, event: object) -> None:
        """One engine event: into the record, the preview, then every listener."""
        self.record.apply(event)
        if isinstance(event, Preview):
            self.preview = event.image
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a face's display must never break the job
                log.exception("FramePack job %s: an event listener failed", self.id)

    def mark_finished(self) -> None:
        """The job is over: drop the request (images) and wake every waiter."""
        self.request = None
        self._finished.set()
