"""Where each section's starting noise comes from.

- Per section (the default): each section's noise is seeded from (seed, section index), so any
  section can be resumed or re-rolled alone and gets the same noise whatever ran before it.
- Reference: lllyasviel's FramePack seeds one CPU ``torch.Generator`` once per video and draws each
  section's noise from it in generation order (the end of the video first for the original
  model), shape [1, 16, window, H/8, W/8] in float32. `ReferenceNoise` draws exactly that stream,
  so a video made with the reference app can be remade from its seed. A section's noise then
  depends on every section drawn before it: continuing a run replays the earlier draws
  (`fast_forward`), and a single section cannot be re-rolled alone.
"""

from __future__ import annotations

import numpy as np
import torch


def section_noise(seed: int, section_index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for one section from (seed, section): any section can be re-rolled or resumed alone."""
    state = np.random.SeedSequence([seed, section_index]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator("cpu").manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


class ReferenceNoise:
    """The reference app's noise stream: one CPU generator, one draw per section in generation order.

    Called as a noise function ``(section_index, shape) -> noise``; the index is not used (the
    stream's position is what counts), so the loop must call it once per section, in order.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.generator = torch.Generator("cpu").manual_seed(self.seed)
        self.drawn = 0

    def __call__(self, section_index: int, shape: tuple[int, ...]) -> torch.Tensor:
        self.drawn += 1
        return torch.randn(shape, generator=self.generator, dtype=torch.float32)

    def fast_forward(self, sections: int, shape: tuple[int, ...]) -> None:
        """Move the stream to where it stands after ``sections`` draws of ``shape`` (continuing a run)."""
        if sections < self.drawn:
            raise ValueError(f"the noise stream has already drawn {self.drawn} sections, cannot go back to {sections}")
        while self.drawn < sections:
            self(self.drawn, shape)
