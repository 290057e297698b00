"""Our section loop against diffusers' `HunyuanVideoFramepackPipeline` on the same tiny components.

With the Euler sampler, TeaCache off and the same inputs and noise, the frames must match.
Where our defaults deliberately differ, the test aligns them and says why:
- noise: ours is seeded per section from (seed, section); diffusers draws from one generator in
  sequence (including its VAE posterior samples), so the test feeds our loop that same sequence;
- VAE encode: ours takes the posterior mean (deterministic), diffusers samples it; the test gives
  the VAE a near-zero posterior variance, as trained VAEs have, so both agree;
- section count: diffusers uses ceil(frames / (4*lws - 3)), ours the reference's
  round(seconds * fps / (4*lws)); the test picks settings where both give 2 sections;
- bucket crop: ours resizes to cover and centre-crops, diffusers stretches; the test image is
  already the bucket size;
- prompt template: diffusers hard-codes crop_start=95 for the real tokenizer; the test passes the
  crop we compute from the tokenizer, and our system prompt;
- end image embedding: diffusers computes a start/end average and then never uses it, so the
  test sets our vision_strength to 0 (start embedding only); our default blends the end image in;
- UniPC is our default sampler; diffusers only has Euler here;
- output head: ours runs norm_out/proj_out in float32 by default (fp32_head); the tiny model is
  float32, so both run the head in the same precision and the default is compared as it is.
Our loop calls the section-cached forward (framepack.engine.forward), diffusers its own forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideoFramepackPipeline, HunyuanVideoFramepackTransformer3DModel
from PIL import Image

from framepack.engine.conditioning import template_crop_start, template_for
from framepack.engine.pipeline import FramePackPipeline
from framepack.request.model import DEFAULT_SYSTEM_PROMPT, build_request

SIZE, WINDOW, STEPS, SEED = 64, 3, 3, 5
PROMPT = "a paper boat drifts down a stream"


@pytest.fixture(scope="module")
def reference_pipes(tiny_model_dir):
    original = HunyuanVideoFramepackPipeline.from_pretrained(tiny_model_dir)
    with torch.no_grad():  # near-deterministic posterior: log-variance -30 everywhere
        quant = original.vae.quant_conv
        half = quant.out_channels // 2
        quant.weight[half:] = 0.0
        quant.bias[half:] = -30.0
    f1_transformer = HunyuanVideoFramepackTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer_f1")
    f1 = HunyuanVideoFramepackPipeline(**{**original.components, "transformer": f1_transformer})
    return {"original": original, "f1": f1}


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def reference_frames(pipe, image, last_image, sampling_type) -> np.ndarray:
    template = {"template": template_for(DEFAULT_SYSTEM_PROMPT),
                "crop_start": template_crop_start(pipe.tokenizer, DEFAULT_SYSTEM_PROMPT)}
    result = pipe(
        image=Image.fromarray(image), last_image=None if last_image is None else Image.fromarray(last_image),
        prompt=PROMPT, height=SIZE, width=SIZE, num_frames=17, latent_window_size=WINDOW,
        num_inference_steps=STEPS, guidance_scale=10.0, generator=torch.Generator().manual_seed(SEED),
        output_type="np", prompt_template=template, max_sequence_length=256, sampling_type=sampling_type,
    )
    return result.frames[0]


def diffusers_noise(image_encodes: int):
    """Replays diffusers' generator: one posterior sample per encoded image, then one draw per section."""
    generator = torch.Generator().manual_seed(SEED)
    latent_shape = (1, 16, 1, SIZE // 8, SIZE // 8)
    for _ in range(image_encodes):
        torch.randn(latent_shape, generator=generator)
    return lambda section_index, shape: torch.randn(shape, generator=generator)


def our_frames(pipe, image, last_image, variant) -> np.ndarray:
    request = build_request(
        image=image, end_image=last_image, vision_strength=0.0, prompt=PROMPT, variant=variant,
        duration=0.8, fps=30, resolution=SIZE, steps=STEPS, latent_window_size=WINDOW, seed=SEED,
        sampler="euler", teacache=False, preview=False,
    )
    assert request.plan().num_sections == 2
    frames = []
    ours = FramePackPipeline.from_components(pipe.components)
    ours.run(request, frames.append, noise_fn=diffusers_noise(1 if last_image is None else 2))
    return np.concatenate(frames).astype(np.float32) / 255.0


@pytest.mark.parametrize(
    "variant, sampling_type, with_last",
    [("original", "inverted_anti_drifting", False), ("original", "inverted_anti_drifting", True),
     ("f1", "vanilla", False)],
)
def test_frames_match_diffusers(reference_pipes, variant, sampling_type, with_last):
    pipe = reference_pipes[variant]
    last = pixels(2) if with_last else None
    expected = reference_frames(pipe, pixels(1), last, sampling_type)
    ours = our_frames(pipe, pixels(1), last, variant)
    assert ours.shape == expected.shape == (4 * WINDOW * 2 + 1, SIZE, SIZE, 3)
    # uint8 rounding is the only difference: at most half a level per value
    assert np.abs(ours - expected).max() <= 0.5 / 255 + 1e-4
    assert expected.std() > 0.005  # the comparison is between real, varying frames


def test_last_image_changes_the_reference_too(reference_pipes):
    """The FLF2V parity case is not vacuous: the end image changes diffusers' frames as well."""
    pipe = reference_pipes["original"]
    without = reference_frames(pipe, pixels(1), None, "inverted_anti_drifting")
    with_last = reference_frames(pipe, pixels(1), pixels(2), "inverted_anti_drifting")
    assert np.abs(without - with_last).mean() > 1e-4
