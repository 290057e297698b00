"""Events the section loop yields; every face (tab, API, CLI) consumes them the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Progress:
    kind = "progress"
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
    kind = "preview"
    image: np.ndarray  # RGB uint8 strip of the section's latent frames
    section_number: int
    step: int


@dataclass
class SectionDone:
    kind = "section_done"
    section_number: int
    position: int
    section_count: int
    finished_frames: int  # frames that became final with this section
    seconds: float
    skipped: bool = False


@dataclass
class Frames:
    kind = "frames"
    count: int  # frames just handed to the sink
    total: int  # frames handed to the sink so far


@dataclass
class Done:
    kind = "done"
    status: str  # "completed" | "interrupted"
    frames: int
    seed: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
