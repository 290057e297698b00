"""The runtime side of one job: its record plus what only lives while the process does.

A `JobHandle` carries the job's `JobRecord` (plain data), the request it runs, its output options,
where it starts (`start`: from nothing, or resuming, re-rolling or extending), its control (stop /
skip / pause), the latest preview image, the work folder while it runs, and an event that is set
when it has finished. When the job finishes, the request (and its images, possibly hundreds of
MB) is dropped: a finished job keeps its record, its options and its last preview only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from framepack.jobs.record import JobRecord
from framepack.request.events import Preview, Status
from framepack.request.host import Control
from framepack.request.model import GenerationRequest
from framepack.request.output import OutputOptions

log = logging.getLogger("framepack.jobs")

Listener = Callable[[object], None]


@dataclass(frozen=True)
class Resume:
    """Continue the job whose work folder is `work` from its newest checkpoint (same id, same outputs)."""

    work: Path


@dataclass(frozen=True)
class Reroll:
    """Make a new video from the checkpoints of the job in `source`: sections before `from_section`
    (those the model generated first) are reused, the rest is generated with this job's request."""

    source: Path
    from_section: int
    position: int
    """The source checkpoint the new job starts from (sections reused, in generation order)."""


@dataclass(frozen=True)
class Extend:
    """Continue the clip in `clip` (a video or raw frames file): its frames, then new ones."""

    clip: Path
    frame_size: tuple[int, int]
    """(height, width) of the output: the clip's size, or the bucket it is fitted to."""


Start = Union[Resume, Reroll, Extend, None]


class JobHandle:
    """One submitted job: faces poll `record` or `wait()` for it; the runner feeds it events."""

    def __init__(self, request: GenerationRequest | None, options: OutputOptions, control: Control | None,
                 task_id: str | None = None, listener: Listener | None = None, *, start: Start = None,
                 record: JobRecord | None = None):
        self.request: GenerationRequest | None = request
        self.options = options
        self.control = control
        self.task_id = task_id
        self.start = start
        self.preview: Any = None  # RGB uint8 array of the latest preview
        self.work = None  # the job's work folder while it runs (framepack.io.workdir.WorkFolder)
        self.exception: BaseException | None = None  # why it failed, for a face that re-raises (the CLI)
        self.name: str | None = None  # exact output file stem (the CLI's --out FILE), None: <filename>-<seed>
        self.overwrite = False
        if record is None:
            plan = request.plan()
            record = JobRecord(seed=request.seed, plan=plan.summary(), sections=plan.num_sections,
                               settings={**request.settings(), "output": options.model_dump(mode="json")})
        self.record = record
        self._listeners: list[Listener] = [listener] if listener is not None else []
        self._finished = threading.Event()

    @classmethod
    def finished_from(cls, record: JobRecord, options: OutputOptions) -> "JobHandle":
        """A job known only from its saved record (found in a work folder): finished, nothing to run."""
        handle = cls(None, options, None, record=record)
        handle._finished.set()
        return handle

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
