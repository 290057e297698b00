"""What a running generation reports, and the one status vocabulary of jobs and results.

The section loop emits these events; the job runner folds them into the job's record and hands
them to the host and to any listener. Faces tell them apart with `isinstance` (or `match`),
never by a string kind.

`Status` is the only set of words for how a job stands, used by the engine's `Done`, the job
record, the API, the tab, the CLI and the README alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    """How a job stands.

    `queued` waits its turn; `running` has started; `completed` made every section; `interrupted`
    was stopped while running (its partial outputs kept when keep-incomplete is on); `failed`
    raised an error; `cancelled` was removed before it started. The engine's `Done.status` is
    `completed` or `interrupted`.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


STATUSES = tuple(status.value for status in Status)
FINISHED = tuple(status for status in Status if status.finished)

STAGES = ("loading", "text", "vision", "vae_encode", "sample", "vae_decode", "interpolate", "encode")
"""Stages of one job, in the order they first happen; `Stage` events and timings use these names.

`interpolate`: frames of a section go through the interpolator and the writers (encoding as
they go); `encode` alone: the writers take frames without interpolation, and finish the files."""


@dataclass
class Stage:
    """A job entered a stage (one of `STAGES`): model loading, encoders, sampling, decoding."""

    name: str


@dataclass
class Progress:
    section_number: int  # 1-based time-order number of the section being sampled
    position: int  # how many sections were sampled before this one
    section_count: int
    step: int  # steps done in this section
    steps: int
    elapsed: float
    it_per_s: float
    eta: float

    @property
    def fraction(self) -> float:
        return (self.position * self.steps + self.step) / max(1, self.section_count * self.steps)

    def describe(self) -> str:
        return (
            f"section {self.position + 1}/{self.section_count} (#{self.section_number}), "
            f"step {self.step}/{self.steps}, {self.it_per_s:.2f} it/s, ETA {self.eta:.0f} s"
        )


@dataclass
class Preview:
    image: Any  # RGB uint8 array [H, W, 3]: a strip of the section's latent frames
    section_number: int
    step: int


@dataclass
class SectionDone:
    section_number: int
    position: int
    section_count: int
    finished_frames: int  # frames that became final with this section
    seconds: float
    skipped: bool = False


@dataclass
class Frames:
    count: int  # frames just handed to the sink
    total: int  # frames handed to the sink so far


@dataclass
class Done:
    status: str  # Status.COMPLETED or Status.INTERRUPTED
    frames: int
    seed: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
