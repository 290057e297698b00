"""Flow-matching noise schedule and samplers (Euler, UniPC).

A sampler is a function: ``sample(denoise, x, sigmas, callback=None) -> x0``. It knows nothing about
the transformer, guidance or the UI; it only calls ``denoise(x, sigma, step_index)`` which returns the
model's clean-data (x0) prediction, and reports progress through ``callback``.

Flow-matching convention: ``x_sigma = (1 - sigma) * x0 + sigma * noise``. The transformer predicts the
velocity ``v = noise - x0``, so ``x0 = x - sigma * v`` (guidance builds that denoiser).

Both samplers call ``denoise`` exactly ``len(sigmas) - 1`` times, i.e. once per step, and never at
``sigma = 0``: the last step's x0 prediction is the result. For UniPC that holds because the corrector
reuses the evaluation the next predictor needs anyway (UniPC's "free" corrector).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
"""``denoise(x, sigma, step_index) -> x0`` prediction with the shape of ``x``; ``sigma`` is a 0-d tensor."""

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
"""``callback(step_index, x, x0_pred)`` after each step; raising from it aborts sampling."""

_BASE_SEQ_LEN, _BASE_MU = 256, 0.5
_MAX_SEQ_LEN, _MAX_MU = 4096, 1.15
_MU_CAP = math.log(7.0)


def dynamic_shift(seq_len: float) -> float:
    """Resolution-dependent schedule shift: more tokens -> more time spent at high noise.

    ``mu`` is the straight line through (256 tokens, 0.5) and (4096 tokens, 1.15), extrapolated on both
    sides and capped at ln 7 (the reference's cap, reached around the 640 bucket). Returns ``exp(mu)``.
    """
    slope = (_MAX_MU - _BASE_MU) / (_MAX_SEQ_LEN - _BASE_SEQ_LEN)
    mu = _BASE_MU + slope * (float(seq_len) - _BASE_SEQ_LEN)
    return math.exp(min(mu, _MU_CAP))


def flow_sigmas(steps: int, shift: float) -> torch.Tensor:
    """``steps + 1`` decreasing sigmas from exactly 1.0 to exactly 0.0, float32.

    ``t = linspace(1, 0)`` warped by ``shift * t / (1 + (shift - 1) * t)`` (the same warp as diffusers'
    exponential time shift with ``mu = ln(shift)``).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigmas = shift * t / (1.0 + (shift - 1.0) * t)
    sigmas[0], sigmas[-1] = 1.0, 0.0  # exact endpoints regardless of rounding
    return sigmas.to(torch.float32)


def _check_sigmas(sigmas: torch.Tensor) -> None:
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError("sigmas must be a 1-D tensor with at least two entries")
    if bool((sigmas[:-1] <= 0).any()):
        raise ValueError("only the last sigma may be zero")


# --------------------------------------------------------------------------------------------- Euler


def sample_euler(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """First-order flow ODE solver; matches diffusers' FlowMatchEulerDiscreteScheduler.step.

    ``(x - x0) / sigma`` is the velocity the model predicted, so one step is ``x += dsigma * v``.
    """
    _check_sigmas(sigmas)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma, i)
        velocity = (x - x0) / sigma
        x = x + (sigma_next - sigma) * velocity
        if callback is not None:
            callback(i, x, x0)
    return x


# --------------------------------------------------------------------------------------------- UniPC
#
# UniPC (Zhao et al. 2023, arXiv 2302.04867), data-prediction form, B(h) = h variant ("bh1"), with the
# log-SNR-like time lambda = -log(sigma) (the FramePack reference's choice for flow matching). In this
# time variable the exponential integrator's first-order step is
#     x_t = x0 + (sigma_t / sigma_s) * (x_s - x0),
# which is exact when x0 does not change along the trajectory and equals the flow-matching Euler step.
# Higher orders add B(h) * sum(rho_k * D_k) with D_k the scaled differences of earlier x0 predictions
# (predictor, UniP) and of the fresh prediction at the target (corrector, UniC).


def _phi_ratios(hh: float, order: int) -> list[float]:
    """Right-hand side ``b_k = k! * hh * phi_{k+1}(hh) / B(h)``, k = 1..order, with B(h) = hh (bh1).

    ``phi_1(z) = (e^z - 1) / z`` and ``phi_{k+1}(z) = (phi_k(z) - 1/k!) / z``. Computed in float64: the
    recursion cancels digits when |hh| is small, which float64 absorbs for any practical step count.
    """
    b_of_h = hh  # bh1; "bh2" would use expm1(hh)
    phi = math.expm1(hh) / hh  # phi_1
    ratios, factorial = [], 1.0
    for k in range(1, order + 1):
        factorial *= k  # k!
        phi = (phi - 1.0 / factorial) / hh  # phi_{k+1}
        ratios.append(factorial * hh * phi / b_of_h)
    return ratios


class _UniPCStep:
    """Coefficients shared by the predictor and the corrector of one step s0 -> t.

    ``lambdas`` are the times of the stored x0 predictions, newest last; ``order`` of them are used.
    """

    def __init__(self, lambdas: list[float], lambda_t: float, order: int):
        self.order = order
        lambda_s0 = lambdas[-1]
        self.h = lambda_t - lambda_s0
        self.hh = -self.h  # data prediction integrates in -h
        # r_k: relative position of older evaluations (negative), and the target itself at r = 1.
        self.rks = [(lambdas[-1 - k] - lambda_s0) / self.h for k in range(1, order)] + [1.0]
        self.b = torch.tensor(_phi_ratios(self.hh, order), dtype=torch.float64)
        self.R = torch.tensor([[r ** row for r in self.rks] for row in range(order)], dtype=torch.float64)

    def base(self, x_s: torch.Tensor, x0_s: torch.Tensor) -> torch.Tensor:
        """First-order (exponential Euler) step; exact for a constant x0."""
        return x0_s + math.exp(self.hh) * (x_s - x0_s)

    def differences(self, x0s: list[torch.Tensor]) -> list[torch.Tensor]:
        """``D_k = (x0_{-k} - x0_0) / r_k`` for the older predictions (newest last in ``x0s``)."""
        newest = x0s[-1]
        return [(x0s[-1 - k] - newest) / self.rks[k - 1] for k in range(1, self.order)]

    def predictor_rhos(self) -> list[float]:
        if self.order == 2:
            return [0.5]
        return torch.linalg.solve(self.R[:-1, :-1], self.b[:-1]).tolist()

    def corrector_rhos(self) -> list[float]:
        if self.order == 1:
            return [0.5]
        return torch.linalg.solve(self.R, self.b).tolist()

    def correction(self, rhos: list[float], diffs: list[torch.Tensor]) -> torch.Tensor | float:
        """``-B(h) * sum(rho_k * D_k)``: with B(h) = hh = -h this adds ``h * sum(...)``."""
        total = sum(rho * d for rho, d in zip(rhos, diffs))
        return -self.hh * total


def _unipc_predict(x_s: torch.Tensor, x0s: list[torch.Tensor], step: _UniPCStep) -> torch.Tensor:
    """UniP: extrapolate from x_s to the target time using the stored x0 predictions."""
    x_t = step.base(x_s, x0s[-1])
    if step.order == 1:
        return x_t
    return x_t + step.correction(step.predictor_rhos(), step.differences(x0s))


def _unipc_correct(x_s: torch.Tensor, x0s: list[torch.Tensor], x0_t: torch.Tensor,
                   step: _UniPCStep) -> torch.Tensor:
    """UniC: redo the step s0 -> t with the fresh prediction x0_t at the target (one order higher)."""
    diffs = step.differences(x0s) + [x0_t - x0s[-1]]  # r = 1 for the target
    return step.base(x_s, x0s[-1]) + step.correction(step.corrector_rhos(), diffs)


def sample_unipc(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """UniPC-bh1 multistep sampler, order ``min(3, len(sigmas) - 2)`` with lower-order warm-up.

    Step i evaluates the model at sigma_i (on the predicted x), corrects x at sigma_i with that
    evaluation, then predicts x at sigma_{i+1}. The last step has no prediction: the result is the x0
    prediction at the last non-zero sigma, so model calls == steps. ``callback(i, x, x0)`` receives the
    state at sigma_{i+1} (the result itself after the last step), like Euler.
    """
    _check_sigmas(sigmas)
    steps = len(sigmas) - 1
    max_order = max(1, min(3, len(sigmas) - 2))
    lambdas_all = [-math.log(float(s)) for s in sigmas[:-1]]

    x0s: list[torch.Tensor] = []  # last `max_order` x0 predictions, newest last
    lambdas: list[float] = []
    x_prev: torch.Tensor | None = None  # corrected x at the previous sigma
    step: _UniPCStep | None = None  # coefficients of the step that produced the current x
    x0 = x
    for i in range(steps):
        x0 = denoise(x, sigmas[i], i)
        if step is not None:
            x = _unipc_correct(x_prev, x0s, x0, step)
        x0s, lambdas = (x0s + [x0])[-max_order:], (lambdas + [lambdas_all[i]])[-max_order:]
        if i + 1 < steps:
            step = _UniPCStep(lambdas, lambdas_all[i + 1], order=min(i + 1, max_order))
            x_prev, x = x, _unipc_predict(x, x0s, step)
        if callback is not None:
            callback(i, x if i + 1 < steps else x0, x0)
    return x0


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"unipc": sample_unipc, "euler": sample_euler}
