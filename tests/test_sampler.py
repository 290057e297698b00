"""Samplers against an analytic denoiser, and Euler against diffusers' scheduler."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from framepack.engine.sampler import SAMPLERS, dynamic_shift, flow_sigmas, sample_euler, sample_unipc

# Data ~ N(mu, s^2) per element. Under flow matching x_sigma = (1-sigma) x0 + sigma * noise the exact
# posterior mean of x0 is linear in x, and the probability-flow ODE maps the noise quantile z to the
# data quantile: x(sigma) = (1-sigma) mu + sqrt((1-sigma)^2 s^2 + sigma^2) z, so x(0) = mu + s z.
MU, S = 0.5, 0.5


def make_gaussian_denoiser(mu=MU, s=S):
    def denoise(x, sigma, step_index):
        a = 1.0 - sigma
        gain = a * s * s / (a * a * s * s + sigma * sigma)
        return mu + gain * (x - a * mu)

    return denoise


gaussian_denoiser = make_gaussian_denoiser()


def ode_solution(z, sigma, mu=MU, s=S):
    return (1 - sigma) * mu + math.sqrt((1 - sigma) ** 2 * s * s + sigma * sigma) * z


def rms(a, b):
    return (a - b).pow(2).mean().sqrt().item()


@pytest.fixture
def noise():
    return torch.randn(2048, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# ----------------------------------------------------------------------------------- schedule


def test_dynamic_shift_anchor_points_and_cap():
    assert dynamic_shift(256) == pytest.approx(math.exp(0.5))
    assert dynamic_shift(4096) == pytest.approx(math.exp(1.15))
    assert dynamic_shift(2176) == pytest.approx(math.exp(0.825))  # midway on the line
    assert dynamic_shift(10_000) == pytest.approx(7.0)
    assert dynamic_shift(1e9) == pytest.approx(7.0)
    assert dynamic_shift(0) < math.exp(0.5)  # extrapolated below the first anchor


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (25, 3.0), (25, 7.0), (4, 0.5)])
def test_flow_sigmas_endpoints_and_monotonic(steps, shift):
    sigmas = flow_sigmas(steps, shift)
    assert sigmas.dtype == torch.float32 and len(sigmas) == steps + 1
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_flow_sigmas_shift_one_is_linear_and_shift_moves_mass_to_high_noise():
    assert torch.allclose(flow_sigmas(10, 1.0), torch.linspace(1, 0, 11))
    assert bool((flow_sigmas(10, 3.0)[1:-1] > flow_sigmas(10, 1.0)[1:-1]).all())


def test_flow_sigmas_match_diffusers_dynamic_shifting():
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    scheduler.set_timesteps(sigmas=torch.linspace(1, 0, 26)[:-1].numpy(), mu=math.log(5.0))
    assert torch.allclose(scheduler.sigmas, flow_sigmas(25, 5.0), atol=1e-6)


# ----------------------------------------------------------------------------------- Euler


def test_euler_matches_diffusers_step_by_step():
    shift, steps = dynamic_shift(1500), 12
    ours = flow_sigmas(steps, shift)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    scheduler.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].numpy(), mu=math.log(shift))

    target = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(2))

    def velocity(x, sigma):  # a smooth, x-dependent "model"
        return torch.tanh(x) - 0.7 * target * (1 + sigma)

    ours_traj = []
    sample_euler(lambda x, s, i: x - s * velocity(x, s), noise.clone(), ours,
                 callback=lambda i, x, x0: ours_traj.append(x))
    x = noise.clone()
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(velocity(x, scheduler.sigmas[i]), t, x).prev_sample
        torch.testing.assert_close(ours_traj[i], x, atol=2e-6, rtol=1e-5)
    assert len(ours_traj) == steps


# ----------------------------------------------------------------------------------- both samplers


def test_fine_euler_agrees_with_closed_form(noise):
    """Sanity check of the reference solution the accuracy tests use."""
    fine = sample_euler(gaussian_denoiser, noise, flow_sigmas(2000, 1.0).double())
    assert rms(fine, ode_solution(noise, 0.0)) < 1e-3


# Measured RMS error ratios Euler/UniPC at 8, 9, 10 steps: 6.2, 4.5, 3.6 (case 1) and 3.1, 3.1, 2.9
# (case 2). Both samplers end with the x0 prediction at the last non-zero sigma, a first-order jump
# that bounds the final error (large for narrow data with a strong shift), so the gap narrows there.
@pytest.mark.parametrize("mu,s,shift,min_ratio", [(0.5, 0.5, 1.0, 3.0), (0.0, 1.0, 3.0, 2.5)])
def test_samplers_land_near_ode_solution_and_unipc_is_much_closer(noise, mu, s, shift, min_ratio):
    denoise, exact = make_gaussian_denoiser(mu, s), ode_solution(noise, 0.0, mu, s)
    for steps in (8, 9, 10):
        sigmas = flow_sigmas(steps, shift).double()
        err_euler = rms(sample_euler(denoise, noise, sigmas), exact)
        err_unipc = rms(sample_unipc(denoise, noise, sigmas), exact)
        assert err_euler < 0.25 and err_unipc < 0.08
        assert err_euler / err_unipc > min_ratio


def test_unipc_is_high_order_along_the_trajectory(noise):
    """Halving the step size at a fixed sigma: Euler error halves, UniPC's drops ~16x (order ~4)."""

    def error_at_half(sampler, steps):
        sigmas = flow_sigmas(steps, 1.0).double()
        seen = {}

        def grab(i, x, x0):
            if abs(sigmas[i + 1].item() - 0.5) < 1e-9:
                seen["x"] = x

        sampler(gaussian_denoiser, noise, sigmas, callback=grab)
        return rms(seen["x"], ode_solution(noise, 0.5))

    euler_ratio = error_at_half(sample_euler, 10) / error_at_half(sample_euler, 20)
    unipc_ratio = error_at_half(sample_unipc, 10) / error_at_half(sample_unipc, 20)
    assert 1.8 < euler_ratio < 2.2
    assert unipc_ratio > 8.0


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 3, 6, 25])
def test_constant_x0_gives_that_constant(name, steps):
    constant = torch.full((2, 3, 4), 0.37)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3))
    result = SAMPLERS[name](lambda x, s, i: constant, x, flow_sigmas(steps, 3.0))
    torch.testing.assert_close(result, constant, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_one_model_call_and_one_callback_per_step(name, steps):
    sigmas = flow_sigmas(steps, 3.0)
    calls, reports = [], []

    def denoise(x, sigma, i):
        assert sigma.ndim == 0 and sigma.item() > 0  # never evaluated at sigma 0
        calls.append(i)
        return torch.zeros_like(x)

    SAMPLERS[name](denoise, torch.ones(3), sigmas, callback=lambda i, x, x0: reports.append(i))
    assert calls == list(range(steps))
    assert reports == list(range(steps))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_exception_aborts_sampling(name):
    calls = []

    def denoise(x, sigma, i):
        calls.append(i)
        return x * 0.5

    def stop_at_two(i, x, x0):
        if i == 2:
            raise KeyboardInterrupt("user pressed stop")

    with pytest.raises(KeyboardInterrupt):
        SAMPLERS[name](denoise, torch.ones(3), flow_sigmas(10, 1.0), callback=stop_at_two)
    assert calls == [0, 1, 2]


def test_rejects_bad_sigmas():
    with pytest.raises(ValueError):
        sample_euler(lambda x, s, i: x, torch.ones(1), torch.tensor([1.0]))
    with pytest.raises(ValueError):
        sample_unipc(lambda x, s, i: x, torch.ones(1), torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError):
        flow_sigmas(0, 1.0)
