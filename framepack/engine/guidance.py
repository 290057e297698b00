"""Guidance: turn a velocity model into the x0 denoiser the samplers call.

FramePack's transformer is guidance-distilled: ``distilled_cfg`` goes in through the embedder
(``guidance = distilled_cfg * 1000``) and costs nothing extra. Real classifier-free guidance
(``cfg != 1``) needs a second, negative-prompt pass per step, so it is skipped entirely at 1.0.
Optional extras on top of real CFG: CFG rescale (std ratio, Lin et al. 2023) and CFG-Zero*
(Fan et al. 2025: optimized scale for the unconditional velocity, and zeroed first steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from framepack.engine.sampler import Denoiser

VelocityFn = Callable[[torch.Tensor, torch.Tensor, int, bool], torch.Tensor]
"""``velocity_fn(x, sigma, step_index, negative) -> v``; ``negative`` selects the negative prompt."""

_EPS = 1e-8


@dataclass(frozen=True)
class GuidanceConfig:
    distilled_cfg: float = 10.0  # goes to the transformer as guidance = distilled_cfg * 1000
    cfg: float = 1.0  # real CFG; 1.0 means no negative pass
    rescale: float = 0.0  # CFG rescale (std ratio), 0..1
    cfg_zero_star: bool = False  # CFG-Zero*: optimized uncond scale + zero-init steps
    zero_init_steps: int = 1  # first steps whose velocity is zeroed when cfg_zero_star

    def __post_init__(self) -> None:
        if not 0.0 <= self.rescale <= 1.0:
            raise ValueError(f"CFG rescale must be between 0 and 1, got {self.rescale}")
        if self.zero_init_steps < 0:
            raise ValueError(f"zero_init_steps must not be negative, got {self.zero_init_steps}")

    @property
    def uses_negative(self) -> bool:
        """Whether the negative prompt has to be evaluated (real CFG active)."""
        return self.cfg != 1.0

    @property
    def transformer_guidance(self) -> float:
        """The value of the transformer's ``guidance`` input (the embedder expects x1000)."""
        return self.distilled_cfg * 1000.0

    def zeroes(self, step_index: int) -> bool:
        """Whether CFG-Zero* zeroes this step's velocity (then no prediction is needed at all)."""
        return self.cfg_zero_star and step_index < self.zero_init_steps


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a [B] tensor so it broadcasts over ``like``'s non-batch dims."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _std(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).std(dim=1)


def _zero_star_alpha(v_cond: torch.Tensor, v_uncond: torch.Tensor) -> torch.Tensor:
    """Per-sample projection of v_cond onto v_uncond: the scale that best matches them (least squares)."""
    dot = (v_cond.flatten(1) * v_uncond.flatten(1)).sum(dim=1)
    norm_sq = v_uncond.flatten(1).pow(2).sum(dim=1)
    return dot / (norm_sq + _EPS)


def _rescale(v: torch.Tensor, v_cond: torch.Tensor, amount: float) -> torch.Tensor:
    """Pull the guided velocity's std back toward the conditional one (tames over-saturation)."""
    ratio = _std(v_cond) / _std(v).clamp_min(_EPS)
    v_rescaled = v * _per_sample(ratio, v)
    return amount * v_rescaled + (1.0 - amount) * v


def combine(v_cond: torch.Tensor, v_uncond: torch.Tensor | None, config: GuidanceConfig) -> torch.Tensor:
    """The guided velocity of one step that is not zeroed (see ``GuidanceConfig.zeroes``).

    ``v_uncond`` may be None only when ``config.uses_negative`` is False. Statistics are computed in
    float32 and the result is cast back to ``v_cond``'s dtype.
    """
    if not config.uses_negative:
        return v_cond
    if v_uncond is None:
        raise ValueError("real CFG (cfg != 1) needs the negative prediction")

    dtype = v_cond.dtype
    v_c, v_u = v_cond.float(), v_uncond.float()
    if config.cfg_zero_star:
        v_u = v_u * _per_sample(_zero_star_alpha(v_c, v_u), v_u)
    v = v_u + config.cfg * (v_c - v_u)
    if config.rescale > 0:
        v = _rescale(v, v_c, config.rescale)
    return v.to(dtype)


def make_denoiser(velocity_fn: VelocityFn, config: GuidanceConfig) -> Denoiser:
    """Wrap ``velocity_fn`` into ``denoise(x, sigma, step) -> x0 = x - sigma * v_guided``.

    A step that CFG-Zero* zeroes calls no model: its velocity is zero whatever the model says, so
    x0 = x and the step keeps the current latent (the earliest predictions are the least reliable).
    """

    def denoise(x: torch.Tensor, sigma: torch.Tensor, step_index: int) -> torch.Tensor:
        if config.zeroes(step_index):
            return x.clone()
        v_cond = velocity_fn(x, sigma, step_index, False)
        v_uncond = velocity_fn(x, sigma, step_index, True) if config.uses_negative else None
        v = combine(v_cond, v_uncond, config)
        return x - sigma.to(x.dtype) * v.to(x.dtype)

    return denoise
