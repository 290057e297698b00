"""What is known about one job, as plain data: it can be saved, sent and loaded back.

A `JobRecord` holds no live objects: no request or images, no control, no preview array, no
threading primitives. Faces read it (the API answers it, the tab shows it, the CLI prints it); a
job store can keep it as JSON (`to_dict` / `from_dict`). The runtime side of a job lives in
`framepack.jobs.handle.JobHandle`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from framepack.request.events import Done, Frames, Preview, Progress, SectionDone, Stage, Status


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class JobRecord:
    """The state of one job, updated by its events and by the queue."""

    id: str = field(default_factory=new_job_id)
    status: Status = Status.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    """Who ran it (the host's name); a store shared by several workers tells them apart."""

    kind: str = "generate"
    """generate, reroll (regenerated from a section of another job) or extend (a clip continued)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where a re-roll or extension came from: {"job": id, "from_section": n} or the input clip."""
    resumes: int = 0
    """How many times this job was resumed after an interruption."""

    seed: int | None = None
    plan: str = ""
    """The plan's one-line summary: frames, true duration, sections."""
    settings: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] | None = None
    """The resource plan made at submission (`framepack.jobs.resources.resources_dict`); None when
    the host describes no machine."""
    """What reproduces the video: the request's settings (images summarised) and the output options."""

    sections: int = 0
    sections_done: int = 0
    section: int | None = None
    """Number (in time order) of the section being sampled."""
    step: int = 0
    steps: int = 0
    progress: float = 0.0
    it_per_s: float = 0.0
    eta: float | None = None
    stage: str | None = None

    error: str | None = None
    frame_count: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    """Published files by kind (video, frames, images): path strings."""
    checkpoint: str | None = None
    """The job's work folder while it holds checkpoints (running, interrupted, failed, or kept)."""
    resumable: bool = False
    """A finished job that stopped before its end and can continue from its last checkpoint."""
    updates: int = 0
    """Bumped on every change, so pollers can tell that something happened."""

    # ---- reading -------------------------------------------------------------------------
    @property
    def video(self) -> str | None:
        return self.outputs.get("video")

    @property
    def frames(self) -> str | None:
        return self.outputs.get("frames")

    @property
    def images(self) -> str | None:
        return self.outputs.get("images")

    # ---- updating ------------------------------------------------------------------------
    def apply(self, event: object) -> None:
        """Fold one engine event into the record."""
        if isinstance(event, Progress):
            self.section, self.step, self.steps = event.section_number, event.step, event.steps
            self.sections, self.progress, self.it_per_s, self.eta = (
                event.section_count, event.fraction, event.it_per_s, event.eta)
            self.stage = "sample"
        elif isinstance(event, SectionDone):
            self.sections_done = event.position + 1
        elif isinstance(event, Stage):
            self.stage = event.name
        elif isinstance(event, Done):
            self.frame_count, self.timings = event.frames, dict(event.timings)
            if event.status == Status.COMPLETED:
                self.progress = 1.0
        elif isinstance(event, (Preview, Frames)):
            pass  # the preview image is runtime state (the handle keeps it); frame counts arrive with Done
        self.updates += 1

    # ---- plain data ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe data; `from_dict` gives the same record back."""
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobRecord":
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["status"] = Status(values.get("status", Status.QUEUED))
        return cls(**values)
