"""The latent context of the two FramePack sampling orders: what the transformer sees, what to decode.

Only the latents the model can still look at are kept (1 + 2 + 16 history slots, or two
windows for decoding, whichever is larger), so memory does not grow with the video length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HISTORY_SIZES = (1, 2, 16)  # clean 1x, 2x, 4x slots
HISTORY_LENGTH = sum(HISTORY_SIZES)


@dataclass
class ModelContext:
    """Transformer inputs describing where the window sits among its clean neighbours."""

    indices_latents: torch.Tensor
    latents_clean: torch.Tensor
    indices_latents_clean: torch.Tensor
    latents_history_2x: torch.Tensor
    indices_latents_history_2x: torch.Tensor
    latents_history_4x: torch.Tensor
    indices_latents_history_4x: torch.Tensor

    def as_kwargs(self, dtype: torch.dtype) -> dict:
        return {
            "indices_latents": self.indices_latents,
            "latents_clean": self.latents_clean.to(dtype),
            "indices_latents_clean": self.indices_latents_clean,
            "latents_history_2x": self.latents_history_2x.to(dtype),
            "indices_latents_history_2x": self.indices_latents_history_2x,
            "latents_history_4x": self.latents_history_4x.to(dtype),
            "indices_latents_history_4x": self.indices_latents_history_4x,
        }


class InvertedContext:
    """Original model: sections are sampled end first and PREPENDED to the history.

    Index layout per section: [start 1 | blank p*lws | window lws | post 1 | 2x 2 | 4x 16];
    the blank indices only shift RoPE positions, they never become tokens.
    """

    def __init__(self, start_latent: torch.Tensor, window: int):
        self.start_latent = start_latent
        self.window = window
        self.history = torch.zeros(
            (1, start_latent.shape[1], HISTORY_LENGTH, *start_latent.shape[3:]), dtype=torch.float32
        )
        self.generated = 0
        self._keep = max(HISTORY_LENGTH, 2 * window + 1)

    @property
    def post_latent(self) -> torch.Tensor:
        """The clean frame right after the window: the previously sampled section's first latent."""
        return self.history[:, :, :1]

    def model_context(self, padding: int, post_latent: torch.Tensor) -> ModelContext:
        blank = padding * self.window
        sizes = [1, blank, self.window, *HISTORY_SIZES]
        start, _, window, post, two, four = torch.arange(sum(sizes)).split(sizes)
        return ModelContext(
            indices_latents=window,
            latents_clean=torch.cat([self.start_latent, post_latent], dim=2),
            indices_latents_clean=torch.cat([start, post]),
            latents_history_2x=self.history[:, :, 1:3],
            indices_latents_history_2x=two,
            latents_history_4x=self.history[:, :, 3:HISTORY_LENGTH],
            indices_latents_history_4x=four,
        )

    def add(self, latents: torch.Tensor, reaches_start: bool) -> torch.Tensor:
        """Prepend a sampled window; return the latents to decode for this section."""
        if reaches_start:
            latents = torch.cat([self.start_latent, latents], dim=2)
        first = self.generated == 0
        self.generated += latents.shape[2]
        self.history = torch.cat([latents, self.history], dim=2)[:, :, : self._keep]
        count = self.generated if first else 2 * self.window + (1 if reaches_start else 0)
        return self.history[:, :, :count]


class ForwardContext:
    """F1 model: sections are sampled in time order and APPENDED to the history.

    Index layout per section: [start 1 | 4x 16 | 2x 2 | 1x 1 | window lws].
    """

    def __init__(self, start_latent: torch.Tensor, window: int):
        self.start_latent = start_latent
        self.window = window
        zeros = torch.zeros((1, start_latent.shape[1], HISTORY_LENGTH, *start_latent.shape[3:]), dtype=torch.float32)
        self.history = torch.cat([zeros, start_latent], dim=2)
        self.generated = 1  # the start frame is the video's first frame
        self._keep = max(HISTORY_LENGTH, 2 * self.window + 1)

    def model_context(self) -> ModelContext:
        sizes = [1, *reversed(HISTORY_SIZES), self.window]
        start, four, two, one, window = torch.arange(sum(sizes)).split(sizes)
        four_x, two_x, one_x = self.history[:, :, -HISTORY_LENGTH:].split(list(reversed(HISTORY_SIZES)), dim=2)
        return ModelContext(
            indices_latents=window,
            latents_clean=torch.cat([self.start_latent, one_x], dim=2),
            indices_latents_clean=torch.cat([start, one]),
            latents_history_2x=two_x,
            indices_latents_history_2x=two,
            latents_history_4x=four_x,
            indices_latents_history_4x=four,
        )

    def add(self, latents: torch.Tensor) -> torch.Tensor:
        """Append a sampled window; return the latents to decode for this section."""
        first = self.generated == 1
        self.generated += latents.shape[2]
        self.history = torch.cat([self.history, latents], dim=2)[:, :, -self._keep :]
        count = self.generated if first else 2 * self.window
        return self.history[:, :, -count:]
