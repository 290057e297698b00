"""MagCache: skip transformer calls from the calibrated magnitude of the blocks' residual.

MagCache (Ma et al. 2025, arXiv 2506.09045) observes that the ratio of the norms of the residual the
blocks add at consecutive steps, ``|r_t| / |r_(t-1)|``, follows almost the same curve for every
prompt and input, so it can be measured once per model (calibration) and used to predict how large
the error of reusing the previous residual would be. Skipping accumulates that predicted error; the
blocks run again once the accumulated error, the number of consecutive skips or the step's own
ratio passes its limit. The early steps (``retention``, a fraction of the section) always run: they
decide the layout of the video.

Unlike TeaCache the decision needs nothing from the device (no host sync per step): it reads the
calibrated ratios only. FramePack-Studio uses MagCache by default; the ratios below are its
FramePack calibrations (640 bucket, 25 steps, one for each variant), mapped to other step counts by
nearest position. The defaults (threshold 0.1, at most 2 consecutive skips, the first 25% of steps
kept) are its defaults; 0.06 as the largest single-step deviation is the MagCache paper's.
"""

from __future__ import annotations

import torch

# |residual_t| / |residual_(t-1)| for steps 1..24 of a 25-step section (step 0 has no predecessor: 1.0).
MAG_RATIOS_25 = {
    "original": (1.0, 1.30469, 1.22656, 1.05469, 1.02344, 1.03906, 1.02344, 1.03906, 1.05469, 1.02344, 1.03906,
                 0.99609, 1.02344, 1.03125, 1.01562, 1.02344, 1.00781, 1.03906, 0.98828, 1.0, 1.0, 0.98828,
                 0.94531, 0.93359, 0.78516),
    "f1": (1.0, 1.27344, 1.07031, 1.03906, 1.00781, 1.00781, 1.00781, 1.03125, 1.04688, 1.00781, 1.03125,
           0.99219, 1.01562, 1.01562, 1.01562, 1.00781, 0.98438, 1.05469, 0.98438, 0.96875, 1.03125, 0.97266,
           0.92578, 0.95703, 0.77734),
}
MAX_STEP_DEVIATION = 0.06
DEFAULT_THRESHOLD = 0.1
DEFAULT_MAX_SKIPS = 2
DEFAULT_RETENTION = 0.25


def mag_ratios(variant: str, num_steps: int) -> tuple[float, ...]:
    """The calibrated ratios of ``variant`` for a section of ``num_steps`` steps (nearest position)."""
    source = MAG_RATIOS_25[variant]
    if num_steps == 1:
        return (source[-1],)
    scale = (len(source) - 1) / (num_steps - 1)
    return tuple(source[int(round(step * scale))] for step in range(num_steps))


class MagCacheState:
    """The cache of one guidance branch for one section; same interface as `TeaCacheState`.

    The first step, the retained early steps and the last step always compute.
    """

    needs_modulated = False

    def __init__(self, ratios: tuple[float, ...] | list[float], threshold: float = DEFAULT_THRESHOLD,
                 max_skips: int = DEFAULT_MAX_SKIPS, retention: float = DEFAULT_RETENTION):
        if len(ratios) < 1:
            raise ValueError("a section has at least one step")
        self.ratios = tuple(float(r) for r in ratios)
        self.num_steps = len(self.ratios)
        self.threshold = float(threshold)
        self.max_skips = int(max_skips)
        self.first_skippable = max(1, int(retention * self.num_steps))
        self.residual: torch.Tensor | None = None
        self.computed_steps = 0
        self.skipped_steps = 0
        self._reset()

    def _reset(self) -> None:
        self.accumulated_ratio, self.accumulated_error, self.consecutive = 1.0, 0.0, 0

    def should_compute(self, step: int, modulated: torch.Tensor | None = None) -> bool:
        """Decide whether the model call of sampler step ``step`` (0-based) runs the blocks."""
        if not 0 <= step < self.num_steps:
            raise ValueError(f"step {step} is outside the section's {self.num_steps} steps")
        if self.residual is None or step < self.first_skippable or step == self.num_steps - 1:
            self._reset()
            return True
        ratio = self.ratios[step]
        self.accumulated_ratio *= ratio
        self.accumulated_error += abs(1.0 - self.accumulated_ratio)
        self.consecutive += 1
        skip = (self.accumulated_error <= self.threshold and self.consecutive <= self.max_skips
                and abs(1.0 - ratio) <= MAX_STEP_DEVIATION)
        if not skip:
            self._reset()
        return not skip

    def record(self, computed: bool) -> None:
        if computed:
            self.computed_steps += 1
        else:
            self.skipped_steps += 1
