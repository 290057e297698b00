"""The latent context of the two FramePack sampling orders: what the transformer sees, what to decode.

Only the latents the model can still look at are kept (1 + 2 + 16 history slots, or two
windows for decoding, whichever is larger), so memory does not grow with the video length.

Both orders have one interface (`LatentContext`), so the section loop never asks which one it
holds, and both save to and restore from a plain dict of tensors and numbers (`state_dict` /
`LatentContext.from_state`): a context restored from a checkpoint continues exactly as the
original would have.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

HISTORY_SIZES = (1, 2, 16)  # clean 1x, 2x, 4x slots
HISTORY_LENGTH = sum(HISTORY_SIZES)


class Section(Protocol):
    """What a context needs to know about a section (the planner's `SectionPlan` has it)."""

    @property
    def index(self) -> int: ...  # 0-based position in time

    @property
    def padding(self) -> int: ...  # blank windows between the start frame and this one (inverted order)


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


class LatentContext(ABC):
    """The history of sampled latents for one video, in the order the model variant samples it.

    `anchor_strength` weighs a section's anchor (its keyframe, or the end image for the last
    section) against the clean latent the model would otherwise see next to the window.
    """

    variant: ClassVar[str]
    _initial_generated: ClassVar[int]  # latents of the video already in a fresh history

    def __init__(self, start_latent: torch.Tensor, window: int, anchor_strength: float = 1.0):
        if not isinstance(start_latent, torch.Tensor) or start_latent.ndim != 5 or start_latent.shape[0] != 1 \
                or start_latent.shape[2] != 1:
            raise ValueError(f"the start latent must be [1, C, 1, h, w], got {tuple(getattr(start_latent, 'shape', ()))}")
        if type(window) is not int or window < 1:
            raise ValueError(f"the latent window must be at least 1, got {window}")
        self.start_latent = start_latent
        self.window = int(window)
        self.anchor_strength = float(anchor_strength)
        self._keep = max(HISTORY_LENGTH, 2 * self.window + 1)
        self.history = self._initial_history()
        self.generated = self._initial_generated

    # ---- the interface the loop uses ---------------------------------------------------
    @abstractmethod
    def model_context(self, section: Section, anchor: torch.Tensor | None) -> ModelContext:
        """The transformer's clean inputs for `section`; `anchor` is its keyframe or end latent, if any."""

    @abstractmethod
    def add(self, section: Section, latents: torch.Tensor) -> torch.Tensor:
        """Put a sampled window into the history; return the latents to decode for this section."""

    @abstractmethod
    def newest(self, count: int) -> torch.Tensor:
        """The `count` latents added last, in time order: what `add` returned when it returned `count`."""

    # ---- saving and restoring ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: tensors (copied, compact) and plain numbers."""
        return {
            "variant": self.variant,
            "window": self.window,
            "anchor_strength": self.anchor_strength,
            "generated": self.generated,
            "start_latent": self.start_latent.detach().cpu().clone(),
            "history": self.history.detach().cpu().clone(),
        }

    @staticmethod
    def from_state(state: dict[str, Any]) -> "LatentContext":
        """The context `state_dict()` described, identical in every value."""
        try:
            variant, window, generated = state["variant"], state["window"], state["generated"]
            start_latent, history, strength = state["start_latent"], state["history"], state["anchor_strength"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"latent context state is incomplete: missing {error}") from None
        context = new_context(variant, start_latent, window, strength)
        context._restore(history, generated)
        return context

    # ---- details -----------------------------------------------------------------------
    def _restore(self, history: torch.Tensor, generated: int) -> None:
        longest = max(self._keep, self.history.shape[2])
        fits = (isinstance(history, torch.Tensor) and history.ndim == 5
                and history.shape[:2] == self.start_latent.shape[:2]
                and history.shape[3:] == self.start_latent.shape[3:]
                and HISTORY_LENGTH <= history.shape[2] <= longest)
        if not fits:
            raise ValueError(f"latent context state: a history of shape {tuple(getattr(history, 'shape', ()))} "
                             f"does not fit a start latent of {tuple(self.start_latent.shape)} and window {self.window}")
        if type(generated) is not int or generated < self._initial_generated:
            raise ValueError(f"latent context state: invalid count of generated latents {generated!r}")
        self.history = history.float()
        self.generated = generated

    def _zeros(self, length: int) -> torch.Tensor:
        shape = (1, self.start_latent.shape[1], length, *self.start_latent.shape[3:])
        return torch.zeros(shape, dtype=torch.float32)

    @abstractmethod
    def _initial_history(self) -> torch.Tensor: ...


class InvertedContext(LatentContext):
    """Original model: sections are sampled end first and PREPENDED to the history.

    Index layout per section: [start 1 | blank p*lws | window lws | post 1 | 2x 2 | 4x 16];
    the blank indices only shift RoPE positions, they never become tokens.
    """

    variant = "original"
    _initial_generated = 0

    def _initial_history(self) -> torch.Tensor:
        return self._zeros(HISTORY_LENGTH)

    @property
    def post_latent(self) -> torch.Tensor:
        """The clean frame right after the window: the previously sampled section's first latent."""
        return self.history[:, :, :1]

    def model_context(self, section: Section, anchor: torch.Tensor | None) -> ModelContext:
        post_latent = self.post_latent
        if anchor is not None:
            post_latent = anchor.cpu() * self.anchor_strength + post_latent * (1.0 - self.anchor_strength)
        sizes = [1, section.padding * self.window, self.window, *HISTORY_SIZES]
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

    def add(self, section: Section, latents: torch.Tensor) -> torch.Tensor:
        reaches_start = section.index == 0
        if reaches_start:
            latents = torch.cat([self.start_latent, latents], dim=2)
        first = self.generated == 0
        self.generated += latents.shape[2]
        self.history = torch.cat([latents, self.history], dim=2)[:, :, : self._keep]
        count = self.generated if first else 2 * self.window + (1 if reaches_start else 0)
        return self.history[:, :, :count]

    def newest(self, count: int) -> torch.Tensor:
        return self.history[:, :, :count]


class ForwardContext(LatentContext):
    """F1 model: sections are sampled in time order and APPENDED to the history.

    Index layout per section: [start 1 | 4x 16 | 2x 2 | 1x 1 | window lws]. Nothing follows
    the window, so anchors play no part here (F1 keyframes steer the image embedding only).
    """

    variant = "f1"
    _initial_generated = 1  # the start frame is the video's first frame

    def _initial_history(self) -> torch.Tensor:
        return torch.cat([self._zeros(HISTORY_LENGTH), self.start_latent], dim=2)

    def model_context(self, section: Section, anchor: torch.Tensor | None) -> ModelContext:
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

    def add(self, section: Section, latents: torch.Tensor) -> torch.Tensor:
        first = self.generated == 1
        self.generated += latents.shape[2]
        self.history = torch.cat([self.history, latents], dim=2)[:, :, -self._keep :]
        count = self.generated if first else 2 * self.window
        return self.history[:, :, -count:]

    def newest(self, count: int) -> torch.Tensor:
        return self.history[:, :, -count:]


CONTEXTS: dict[str, type[LatentContext]] = {"original": InvertedContext, "f1": ForwardContext}


def continuing_context(start_latent: torch.Tensor, latents: torch.Tensor, window: int,
                       anchor_strength: float = 1.0) -> ForwardContext:
    """An F1 context whose history is real video latents (the last ones of a clip to continue).

    The F1 model then samples the next window as if it had made those latents itself: they fill
    the 1x/2x/4x history slots (zeros before them when the clip is short, as in a fresh context).
    At least `window` latents are needed, so the first new section decodes with a full window of
    real history before it: its overlap with the clip is cross-faded like any seam between sections.
    """
    context = ForwardContext(start_latent, window, anchor_strength)
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[:2] != start_latent.shape[:2] \
            or latents.shape[3:] != start_latent.shape[3:] or latents.shape[2] < window:
        raise ValueError(f"continuing needs at least {window} latents shaped like the start latent "
                         f"{tuple(start_latent.shape)}, got {tuple(getattr(latents, 'shape', ()))}")
    latents = latents[:, :, -context._keep:].float().cpu()
    padding = context._zeros(max(0, HISTORY_LENGTH - latents.shape[2]))
    context._restore(torch.cat([padding, latents], dim=2), latents.shape[2])
    return context


def new_context(variant: str, start_latent: torch.Tensor, window: int, anchor_strength: float = 1.0) -> LatentContext:
    """A fresh context for `variant` ("original" or "f1")."""
    try:
        context_class = CONTEXTS[variant]
    except KeyError:
        raise ValueError(f"unknown model variant {variant!r} for a latent context") from None
    return context_class(start_latent, window, anchor_strength)
