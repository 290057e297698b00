"""Buckets, crops, the Llama template crop and strengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framepack.engine import conditioning as cond
from framepack.request.model import DEFAULT_SYSTEM_PROMPT


@pytest.mark.parametrize(
    "size, resolution, bucket",
    [((480, 640), 640, (544, 704)), ((640, 480), 640, (704, 544)), ((1000, 1000), 640, (608, 640)),
     ((1080, 1920), 640, (480, 832)), ((1080, 1920), 320, (240, 416)), ((512, 512), 960, (912, 960)),
     ((1000, 1000), 240, (224, 240))],
)
def test_bucket_is_nearest_aspect_scaled_to_resolution(size, resolution, bucket):
    height, width = cond.pick_bucket(*size, resolution)
    assert (height, width) == bucket and height % 16 == 0 and width % 16 == 0


def test_every_resolution_from_240_to_960_gives_16px_buckets():
    for resolution in range(240, 961, 16):
        for size in [(720, 1280), (1280, 720), (1024, 1024), (300, 1200)]:
            height, width = cond.pick_bucket(*size, resolution)
            assert height % 16 == 0 and width % 16 == 0
            assert abs(max(height, width) - resolution * 1.5) <= resolution  # near the requested scale


def test_resize_and_crop_covers_without_stretching():
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, 100:200] = 255  # white centre third
    out = cond.resize_and_crop(image, 64, 64)
    assert out.shape == (64, 64, 3)
    assert out[:, 8:56].mean() > 250  # the crop keeps the centre, scaled (not squashed) to cover
    same = cond.resize_and_crop(image, 100, 300)
    np.testing.assert_array_equal(same, image)


def test_crop_start_matches_the_tokenized_prefix(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    crop = cond.template_crop_start(tokenizer, DEFAULT_SYSTEM_PROMPT)
    template = cond.template_for(DEFAULT_SYSTEM_PROMPT)
    prompt_ids = tokenizer(template.format("hello world"))["input_ids"]
    assert tokenizer.decode(prompt_ids[crop:]).startswith("hello world")
    assert not tokenizer.decode(prompt_ids[crop - 1:]).startswith("hello")  # not one token too late either
    assert cond.template_crop_start(tokenizer, "Be brief.") < crop  # a shorter system prompt crops less


def test_system_prompt_with_braces_is_literal():
    template = cond.template_for("use {curly} braces")
    assert "use {curly} braces" in template.format("x") and template.format("x").count("x") >= 1


def test_weighted_is_a_true_weighted_average():
    anchor, base = torch.full((2,), 4.0), torch.full((2,), 2.0)
    assert torch.equal(cond.weighted(anchor, base, 0.0), base)
    assert torch.equal(cond.weighted(anchor, base, 1.0), anchor)
    assert torch.allclose(cond.weighted(anchor, base, 0.25), torch.full((2,), 2.5))


def test_image_embeds_mix_start_end_and_keyframe():
    start, end, key = torch.zeros(1, 2, 3), torch.ones(1, 2, 3), torch.full((1, 2, 3), 3.0)
    images = cond.ImageConditioning(32, 32, None, start, None, end, [None], [key], None)
    assert torch.allclose(images.image_embeds(None, 0.5), torch.full((1, 2, 3), 0.5))
    assert torch.allclose(images.image_embeds(0, 1.0), torch.full((1, 2, 3), 2.0))  # mean of end and keyframe
    alone = cond.ImageConditioning(32, 32, None, start, None, None, [], [], None)
    assert alone.image_embeds(None, 0.7) is start


@pytest.mark.parametrize("kind, value", [("black", 0), ("white", 255)])
def test_blank_starts(kind, value):
    assert (cond.blank_image(kind, 16, 32, 0) == value).all()
    noise = cond.blank_image("noise", 16, 32, 5)
    np.testing.assert_array_equal(noise, cond.blank_image("noise", 16, 32, 5))
    assert noise.std() > 50
