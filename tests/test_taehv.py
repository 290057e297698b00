"""Tiny VAE (TAEHV): the decoder built from the architecture facts, its file loading, the recipe
component, live previews through it and the optional final decode. Weights are random, saved
in the test with the reference key names, so the real loading path runs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from framepack.errors import ModelError
from framepack.models import taehv
from framepack.models.recipe import Recipe, local_recipe
from framepack.request.events import Preview
from tests.tiny_runs import FAST, load_pipe, start_image


@pytest.fixture(scope="module")
def tiny_vae_file(tmp_path_factory):
    return taehv.save_random_tiny_vae(tmp_path_factory.mktemp("taehv") / "tiny_vae" / "taehv.safetensors", seed=3)


@pytest.fixture(scope="module")
def decoder(tiny_vae_file):
    return taehv.load_tiny_vae(tiny_vae_file)


def test_reference_key_names_and_widths(tiny_vae_file):
    keys = load_file(str(tiny_vae_file))
    # the published file's layout: Sequential indices, MemBlock .conv.N / TGrow .conv, no encoder needed
    assert keys["decoder.1.weight"].shape == (256, 16, 3, 3)
    assert keys["decoder.3.conv.0.weight"].shape == (256, 512, 3, 3)
    assert keys["decoder.7.conv.weight"].shape == (256, 256, 1, 1)  # TGrow x1
    assert keys["decoder.13.conv.weight"].shape == (256, 128, 1, 1)  # TGrow x2 at width 128
    assert keys["decoder.19.conv.weight"].shape == (128, 64, 1, 1)  # TGrow x2 at width 64
    assert keys["decoder.22.weight"].shape == (3, 64, 3, 3)


@pytest.mark.parametrize("latent_frames", [1, 2, 5])
def test_decode_shape_matches_hunyuan_vae(decoder, latent_frames):
    latents = torch.randn(1, 16, latent_frames, 3, 5)
    pixels = decoder.decode(latents)
    assert pixels.shape == (1, 3, 4 * latent_frames - 3, 24, 40)  # frames x 3 x 8H x 8W, 4(T-1)+1 frames
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_cheap_preview_decode_makes_one_frame_per_latent_frame(decoder):
    latents = torch.randn(1, 16, 4, 3, 5)
    pixels = decoder.decode(latents, time_upscale=False)
    assert pixels.shape == (1, 3, 4, 24, 40)
    assert torch.allclose(decoder.decode(latents, chunk=1, time_upscale=False), pixels, atol=1e-5)


def test_decode_refuses_other_latents(decoder):
    with pytest.raises(ValueError, match="16"):
        decoder.decode(torch.randn(1, 4, 2, 3, 3))


def test_streamed_decode_equals_one_shot(decoder):
    latents = torch.randn(1, 16, 6, 2, 3)
    whole = decoder.decode(latents, chunk=100)
    for chunk in (1, 2, 4):
        assert torch.allclose(decoder.decode(latents, chunk=chunk), whole, atol=1e-5)


def test_memblock_sees_the_previous_frame(decoder):
    """Changing latent frame 0 changes later frames too (temporal memory), not only its own."""
    latents = torch.randn(1, 16, 3, 2, 2)
    changed = latents.clone()
    changed[:, :, 0] += 2.0
    a, b = decoder.decode(latents), decoder.decode(changed)
    assert not torch.allclose(a[:, :, 1:5], b[:, :, 1:5])  # frames of latent 1 depend on latent 0


def _peak_activation(decoder, latent_frames: int, chunk: int) -> int:
    peak = [0]
    hooks = [layer.register_forward_hook(lambda m, i, out: peak.__setitem__(0, max(peak[0], out.numel())))
             for layer in decoder.decoder]
    try:
        decoder.decode(torch.randn(1, 16, latent_frames, 2, 2), chunk=chunk)
    finally:
        for hook in hooks:
            hook.remove()
    return peak[0]


def test_memory_is_flat_in_the_number_of_frames(decoder):
    assert _peak_activation(decoder, 4, chunk=2) == _peak_activation(decoder, 16, chunk=2)
    assert _peak_activation(decoder, 16, chunk=100) > _peak_activation(decoder, 16, chunk=2)


def test_folder_file_names_and_errors(tmp_path, tiny_vae_file, caplog):
    folder = tmp_path / "vae"
    folder.mkdir()
    with pytest.raises(ModelError, match="taehv"):
        taehv.find_weights(folder)
    wan = folder / "taew2_1.safetensors"
    wan.write_bytes(tiny_vae_file.read_bytes())
    with caplog.at_level(logging.WARNING, "framepack.models"):
        assert isinstance(taehv.load_tiny_vae(folder), taehv.TinyVideoDecoder)
    assert "Wan" in caplog.text
    (folder / "taehv.safetensors").write_bytes(tiny_vae_file.read_bytes())
    assert taehv.find_weights(folder).name == "taehv.safetensors"  # the HunyuanVideo one wins
    with pytest.raises(ModelError, match="does not exist"):
        taehv.find_weights(tmp_path / "missing")
    (tmp_path / "x.pth").write_bytes(b"0")
    with pytest.raises(ModelError, match="not a .safetensors"):
        taehv.find_weights(tmp_path / "x.pth")
    (tmp_path / "taehv_bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read"):
        taehv.load_tiny_vae(tmp_path / "taehv_bad.safetensors")


def test_a_wan22_file_is_refused(tmp_path, tiny_vae_file):
    weights = load_file(str(tiny_vae_file))
    weights["decoder.1.weight"] = torch.zeros(256, 48, 3, 3)  # Wan 2.2's 48-channel latents
    save_file(weights, str(tmp_path / "taew2_2.safetensors"))
    with pytest.raises(ModelError, match="16-channel HunyuanVideo"):
        taehv.load_tiny_vae(tmp_path / "taew2_2.safetensors")


def test_recipe_component(tmp_path, tiny_model_dir, tiny_vae_file):
    assert local_recipe(tiny_model_dir).get("tiny_vae") is None  # absent unless present on disk
    root = tmp_path / "model"
    root.mkdir()
    for child in tiny_model_dir.iterdir():
        (root / child.name).symlink_to(child)
    (root / "tiny_vae").mkdir()
    (root / "tiny_vae" / "taehv.safetensors").write_bytes(tiny_vae_file.read_bytes())
    recipe = local_recipe(root, "f1")
    assert recipe["tiny_vae"].path() == root / "tiny_vae"
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    other = local_recipe(tiny_model_dir).with_overrides({"tiny_vae": str(tiny_vae_file)})
    assert other["tiny_vae"].path() == tiny_vae_file
    with pytest.raises(ModelError, match="no tiny_vae"):
        local_recipe(tiny_model_dir)["tiny_vae"]

    from framepack.engine.pipeline import RuntimeOptions, build_pipeline

    pipe = build_pipeline(recipe, RuntimeOptions())
    assert isinstance(pipe.tiny_vae, taehv.TinyVideoDecoder)
    assert build_pipeline(local_recipe(tiny_model_dir, "f1"), RuntimeOptions()).tiny_vae is None


def _run(pipe, **fields):
    from framepack.engine.loop import SectionLoop
    from framepack.request.model import build_request

    frames, events = [], []
    request = build_request(**{**FAST, "image": start_image(), **fields})
    SectionLoop(pipe, request, frames.append).run(events.append)
    return np.concatenate(frames), events


def test_previews_and_final_decode_use_the_tiny_vae(tiny_model_dir, decoder):
    pipe = load_pipe(tiny_model_dir)
    plain, plain_events = _run(pipe, preview=True)
    plain_previews = [e.image for e in plain_events if isinstance(e, Preview)]
    pipe.tiny_vae = decoder
    frames, events = _run(pipe, preview=True)
    previews = [e.image for e in events if isinstance(e, Preview)]
    assert plain_previews and len(previews) == len(plain_previews)
    # the latent preview is one pixel per latent pixel; the Tiny VAE's is 8x sharper
    assert previews[0].shape == (plain_previews[0].shape[0] * 8, plain_previews[0].shape[1] * 8, 3)
    assert previews[0].dtype == np.uint8
    assert np.array_equal(frames, plain)  # previews alone never change the video

    fast, _ = _run(pipe, tiny_vae_decode=True)
    assert fast.shape == plain.shape and fast.dtype == np.uint8
    assert not np.array_equal(fast, plain)  # decoded by the other network


def test_tiny_vae_decode_needs_the_component(tiny_model_dir):
    pipe = load_pipe(tiny_model_dir)
    pipe.tiny_vae = None
    with pytest.raises(ModelError, match="tiny_vae"):
        _run(pipe, tiny_vae_decode=True)
