"""TeaCache on a tiny HunyuanVideoFramepackTransformer3DModel (no downloads)."""

import pytest
import torch
from diffusers import HunyuanVideoFramepackTransformer3DModel

from framepack.engine.forward import project_out
from framepack.engine.teacache import TEACACHE_COEFFICIENTS, TeaCacheState, _rescale, run_transformer, split_inputs

STEPS = 5
NEVER = 1e9  # a threshold the accumulator cannot reach: only first and last steps compute


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    model = HunyuanVideoFramepackTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type=None,
        has_image_proj=True, image_proj_dim=32, has_clean_x_embedder=True,
    )
    return model.eval()


def make_inputs(seed, sigma, batch=1):
    """Inputs laid out like an inverted-mode section with lws 3 and padding 0."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(batch, *shape, generator=g)

    # [pre 1 | window 3 | post 1 | 2x 2 | 4x 16]
    pre, window, post, x2, x4 = torch.arange(23).split([1, 3, 1, 2, 16])
    mask = torch.ones(batch, 7, dtype=torch.long)
    mask[:, 5:] = 0  # right padding, cropped away by the model
    return dict(
        hidden_states=randn(16, 3, 8, 8), timestep=torch.full((batch,), sigma * 1000.0),
        encoder_hidden_states=randn(7, 16), encoder_attention_mask=mask, pooled_projections=randn(8),
        image_embeds=randn(5, 32), indices_latents=window, guidance=torch.full((batch,), 10_000.0),
        latents_clean=randn(16, 2, 8, 8), indices_latents_clean=torch.cat([pre, post]),
        latents_history_2x=randn(16, 2, 8, 8), indices_latents_history_2x=x2,
        latents_history_4x=randn(16, 16, 8, 8), indices_latents_history_4x=x4,
    )


def section_inputs(seed=0, steps=STEPS):
    """Per-step inputs of one section: same conditioning, slowly changing latents and timestep."""
    base = make_inputs(seed, 1.0)
    noise = torch.randn(base["hidden_states"].shape, generator=torch.Generator().manual_seed(seed + 100))
    sigmas = torch.linspace(1.0, 0.2, steps)
    return [dict(base, hidden_states=base["hidden_states"] + 0.05 * i * noise, timestep=s.reshape(1) * 1000)
            for i, s in enumerate(sigmas)]


def plain(transformer, kwargs):
    with torch.no_grad():
        return transformer(**kwargs, return_dict=False)[0]


def cached(transformer, cache, kwargs, step=0):
    with torch.no_grad():
        return run_transformer(transformer, cache, step=step, **kwargs)


def test_rescale_polynomial():
    assert _rescale(0.0) == pytest.approx(TEACACHE_COEFFICIENTS[-1])
    assert _rescale(0.1) == pytest.approx(sum(c * 0.1 ** (4 - k) for k, c in enumerate(TEACACHE_COEFFICIENTS)))


def test_no_cache_is_the_plain_forward(transformer):
    kwargs = make_inputs(1, 0.7)
    assert torch.equal(cached(transformer, None, kwargs), plain(transformer, kwargs))


@pytest.mark.parametrize("batch", [1, 2])
def test_zero_threshold_reproduces_the_forward(transformer, batch):
    cache = TeaCacheState(0.0, STEPS)
    for step, sigma in enumerate([1.0, 0.8, 0.6, 0.4, 0.2]):
        kwargs = make_inputs(10 + step, sigma, batch)
        if batch == 2:  # different valid text lengths per sample exercise the attention mask
            kwargs["encoder_attention_mask"][1, 3:] = 0
        out = cached(transformer, cache, kwargs, step)
        assert out.shape == kwargs["hidden_states"].shape
        torch.testing.assert_close(out, plain(transformer, kwargs), atol=1e-5, rtol=1e-5)
    assert (cache.computed_steps, cache.skipped_steps) == (STEPS, 0)


def test_large_threshold_skips_the_middle_steps(transformer):
    cache = TeaCacheState(NEVER, STEPS)
    computed = []
    for step, kwargs in enumerate(section_inputs()):
        before = cache.computed_steps
        out = cached(transformer, cache, kwargs, step)
        computed.append(cache.computed_steps > before)
        if computed[-1]:
            torch.testing.assert_close(out, plain(transformer, kwargs), atol=1e-5, rtol=1e-5)
    assert computed == [True, False, False, False, True]
    assert (cache.computed_steps, cache.skipped_steps) == (2, 3)


def test_threshold_between_decides_by_accumulated_change(transformer):
    """A realistic threshold computes some middle steps and skips others."""
    inputs = section_inputs(steps=8)
    cache = TeaCacheState(0.15, len(inputs))
    for step, kwargs in enumerate(inputs):
        cached(transformer, cache, kwargs, step)
    assert cache.computed_steps + cache.skipped_steps == 8
    assert cache.skipped_steps > 0 and cache.computed_steps > 2


def test_skipped_step_adds_the_cached_residual(transformer):
    inputs = section_inputs()
    cache = TeaCacheState(NEVER, STEPS)
    cached(transformer, cache, inputs[0], 0)
    residual = cache.residual.clone()

    # Same inputs again: the residual is exactly what the blocks would add, so skipping is lossless.
    torch.testing.assert_close(cached(transformer, cache, inputs[0], 1), plain(transformer, inputs[0]),
                               atol=1e-5, rtol=1e-5)

    # Different inputs: hidden_before + cached residual, which is close to but not the plain output.
    kwargs = inputs[2]
    out = cached(transformer, cache, kwargs, 2)
    assert cache.skipped_steps == 2
    with torch.no_grad():
        section, _, _ = split_inputs(transformer, **kwargs)
        hidden = torch.cat([section.history, transformer.x_embedder(kwargs["hidden_states"])], dim=1)
        temb, _ = transformer.time_text_embed(kwargs["timestep"], kwargs["pooled_projections"], kwargs["guidance"])
        expected = project_out(transformer, hidden + residual, temb, section.latent_grid)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    reference = plain(transformer, kwargs)
    difference = (out - reference).abs().max().item()
    assert 1e-6 < difference < 0.5 * reference.abs().max().item()


def test_steps_without_a_model_call_cost_nothing_and_change_no_decision(transformer):
    """CFG-Zero*'s zero-init steps call no model: the first call, at step 1, computes (nothing is cached).

    The later decisions are the ones a section whose step 0 computed would make from step 2 on.
    """
    inputs = section_inputs()
    cache = TeaCacheState(NEVER, STEPS)
    computed = []
    for step in range(1, STEPS):
        before = cache.computed_steps
        out = cached(transformer, cache, inputs[step], step)
        computed.append(cache.computed_steps > before)
        if step == 1:
            torch.testing.assert_close(out, plain(transformer, inputs[1]), atol=1e-5, rtol=1e-5)
    assert computed == [True, False, False, True]  # step 1 (first call), 2, 3 skipped, 4 (last)
    assert (cache.computed_steps, cache.skipped_steps) == (2, 2)


def test_the_step_decides_the_boundaries_not_the_number_of_calls(transformer):
    """The last step computes although the state has seen only two calls."""
    inputs = section_inputs()
    cache = TeaCacheState(NEVER, STEPS)
    cached(transformer, cache, inputs[0], 0)
    torch.testing.assert_close(cached(transformer, cache, inputs[4], STEPS - 1), plain(transformer, inputs[4]),
                               atol=1e-5, rtol=1e-5)
    assert (cache.computed_steps, cache.skipped_steps) == (2, 0)


def test_a_cached_call_needs_a_step_inside_the_section(transformer):
    with pytest.raises(ValueError, match="step"):
        with torch.no_grad():
            run_transformer(transformer, TeaCacheState(0.1, STEPS), **make_inputs(0, 1.0))
    with pytest.raises(ValueError, match="outside"):
        cached(transformer, TeaCacheState(0.1, STEPS), make_inputs(0, 1.0), STEPS)
    with pytest.raises(ValueError, match="at least one step"):
        TeaCacheState(0.1, 0)


def test_cond_and_uncond_states_do_not_interfere(transformer):
    cond_inputs = section_inputs(seed=0)
    uncond_inputs = [dict(kw, encoder_hidden_states=-kw["encoder_hidden_states"]) for kw in cond_inputs]

    def run_alone(inputs):
        cache = TeaCacheState(NEVER, STEPS)
        return [cached(transformer, cache, kwargs, step) for step, kwargs in enumerate(inputs)]

    cond_cache, uncond_cache = TeaCacheState(NEVER, STEPS), TeaCacheState(NEVER, STEPS)
    interleaved_cond, interleaved_uncond = [], []
    for step, (cond_kwargs, uncond_kwargs) in enumerate(zip(cond_inputs, uncond_inputs)):
        interleaved_cond.append(cached(transformer, cond_cache, cond_kwargs, step))
        interleaved_uncond.append(cached(transformer, uncond_cache, uncond_kwargs, step))

    for a, b in zip(interleaved_cond, run_alone(cond_inputs)):
        assert torch.equal(a, b)
    for a, b in zip(interleaved_uncond, run_alone(uncond_inputs)):
        assert torch.equal(a, b)
    assert cond_cache.skipped_steps == uncond_cache.skipped_steps == 3
