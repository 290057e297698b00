"""Guidance formulas on tiny tensors, and the denoiser they build."""

import dataclasses

import pytest
import torch

from framepack.engine.guidance import GuidanceConfig, combine, make_denoiser
from framepack.engine.sampler import flow_sigmas, sample_euler, sample_unipc


def tensors(seed, shape=(2, 3, 2, 2)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


class CountingVelocity:
    """A velocity model that records every call and whether it was the negative pass."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, step_index, negative):
        self.calls.append((step_index, negative))
        return 0.3 * x + (-1.0 if negative else 1.0) * (1 + sigma)


def test_defaults_match_the_reference():
    config = GuidanceConfig()
    assert (config.distilled_cfg, config.cfg, config.rescale) == (10.0, 1.0, 0.0)
    assert not config.uses_negative and not config.cfg_zero_star
    assert config.transformer_guidance == 10_000.0
    assert GuidanceConfig(cfg=1.5).uses_negative
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cfg = 2.0


@pytest.mark.parametrize("bad", [{"rescale": -0.1}, {"rescale": 1.5}, {"zero_init_steps": -1}])
def test_rejects_out_of_range_settings(bad):
    with pytest.raises(ValueError):
        GuidanceConfig(**bad)


def test_no_cfg_returns_the_conditional_velocity():
    v_c, _ = tensors(0)
    assert combine(v_c, None, GuidanceConfig()) is v_c


def test_real_cfg():
    v_c, v_u = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]])
    out = combine(v_c, v_u, GuidanceConfig(cfg=3.0))
    torch.testing.assert_close(out, torch.tensor([[0.5 + 3 * 0.5, -1.0 + 3 * 3.0]]))


def test_real_cfg_requires_the_negative_prediction():
    with pytest.raises(ValueError):
        combine(torch.ones(1, 2), None, GuidanceConfig(cfg=2.0))


def test_rescale_matches_std_ratio_per_sample():
    v_c, v_u = tensors(1)
    config = GuidanceConfig(cfg=4.0, rescale=0.7)
    v = v_u + 4.0 * (v_c - v_u)
    expected = []
    for b in range(2):  # spelled out per sample: std over all non-batch dims
        scaled = v[b] * (v_c[b].std() / v[b].std())
        expected.append(0.7 * scaled + 0.3 * v[b])
    torch.testing.assert_close(combine(v_c, v_u, config), torch.stack(expected))


def test_full_rescale_restores_the_conditional_std():
    v_c, v_u = tensors(2)
    out = combine(v_c, v_u, GuidanceConfig(cfg=7.0, rescale=1.0))
    torch.testing.assert_close(out.flatten(1).std(1), v_c.flatten(1).std(1))


def test_cfg_zero_star_scales_the_unconditional_prediction():
    v_c, v_u = tensors(3)
    config = GuidanceConfig(cfg=2.5, cfg_zero_star=True)
    expected = []
    for b in range(2):
        alpha = (v_c[b] * v_u[b]).sum() / (v_u[b].pow(2).sum() + 1e-8)
        expected.append(alpha * v_u[b] + 2.5 * (v_c[b] - alpha * v_u[b]))
    torch.testing.assert_close(combine(v_c, v_u, config), torch.stack(expected))


def test_cfg_zero_star_alpha_is_exact_for_parallel_predictions():
    """If v_c is a multiple of v_u, the optimized uncond equals v_c and guidance changes nothing."""
    v_u = torch.tensor([[1.0, -2.0, 0.5]])
    v_c = 1.7 * v_u
    out = combine(v_c, v_u, GuidanceConfig(cfg=6.0, cfg_zero_star=True))
    torch.testing.assert_close(out, v_c)


def test_cfg_zero_star_zeroes_the_first_steps():
    config = GuidanceConfig(cfg=3.0, cfg_zero_star=True, zero_init_steps=2)
    assert [config.zeroes(step) for step in range(4)] == [True, True, False, False]
    assert not any(GuidanceConfig(cfg=3.0, zero_init_steps=2).zeroes(step) for step in range(4))


def test_combine_keeps_dtype():
    v_c, v_u = (t.to(torch.bfloat16) for t in tensors(5))
    out = combine(v_c, v_u, GuidanceConfig(cfg=2.0, rescale=0.5, cfg_zero_star=True))
    assert out.dtype == torch.bfloat16


# ----------------------------------------------------------------------------------- denoiser


def test_denoiser_returns_x0_from_velocity():
    x = torch.tensor([[2.0, -1.0]])
    sigma = torch.tensor(0.25)
    denoise = make_denoiser(lambda x, s, i, neg: torch.tensor([[4.0, 8.0]]), GuidanceConfig())
    torch.testing.assert_close(denoise(x, sigma, 0), torch.tensor([[1.0, -3.0]]))


def test_negative_pass_is_never_called_without_real_cfg():
    velocity = CountingVelocity()
    config = GuidanceConfig(cfg=1.0, rescale=0.5, cfg_zero_star=True)
    sample_euler(make_denoiser(velocity, config), torch.ones(2, 3), flow_sigmas(5, 3.0))
    assert velocity.calls == [(i, False) for i in range(1, 5)]  # step 0 is CFG-Zero*'s zero-init: no call


def test_negative_pass_runs_once_per_step_with_real_cfg():
    velocity = CountingVelocity()
    sample_unipc(make_denoiser(velocity, GuidanceConfig(cfg=2.0)), torch.ones(2, 3), flow_sigmas(4, 3.0))
    assert velocity.calls == [(i, neg) for i in range(4) for neg in (False, True)]


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_zero_init_keeps_x_without_calling_the_model(cfg):
    velocity = CountingVelocity()
    denoise = make_denoiser(velocity, GuidanceConfig(cfg=cfg, cfg_zero_star=True, zero_init_steps=1))
    x = torch.randn(2, 3)
    assert torch.equal(denoise(x, torch.tensor(0.9), 0), x)
    assert velocity.calls == []
    assert not torch.allclose(denoise(x, torch.tensor(0.9), 1), x)
    assert velocity.calls == [(1, False), (1, True)] if cfg != 1.0 else [(1, False)]


@pytest.mark.parametrize("sampler", [sample_euler, sample_unipc])
@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_skipping_the_zeroed_model_calls_changes_no_result(sampler, cfg):
    """Property: the same samples as when the model is called on zero-init steps and its answer dropped."""
    config = GuidanceConfig(cfg=cfg, rescale=0.3, cfg_zero_star=True, zero_init_steps=2)

    calling_every_step, skipping = CountingVelocity(), CountingVelocity()

    def denoise_calling_every_step(x, sigma, step_index):
        v_cond = calling_every_step(x, sigma, step_index, False)
        v_uncond = calling_every_step(x, sigma, step_index, True) if config.uses_negative else None
        v = torch.zeros_like(v_cond) if config.zeroes(step_index) else combine(v_cond, v_uncond, config)
        return x - sigma.to(x.dtype) * v.to(x.dtype)

    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(3))
    sigmas = flow_sigmas(6, 3.0)
    expected = sampler(denoise_calling_every_step, x, sigmas)
    assert torch.equal(sampler(make_denoiser(skipping, config), x, sigmas), expected)
    branches = 2 if cfg != 1.0 else 1
    assert len(calling_every_step.calls) - len(skipping.calls) == 2 * branches  # two zero-init steps


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_cfg_zero_star_changes_the_sampled_result(cfg):
    """Unlike a preview-only toggle, zero-init must reach the latents, even without real CFG."""
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(6))
    sigmas = flow_sigmas(6, 3.0)
    plain = sample_euler(make_denoiser(CountingVelocity(), GuidanceConfig(cfg=cfg)), x, sigmas)
    zero_star = sample_euler(make_denoiser(CountingVelocity(), GuidanceConfig(cfg=cfg, cfg_zero_star=True)),
                             x, sigmas)
    assert (plain - zero_star).abs().max() > 1e-3
