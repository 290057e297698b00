"""Standalone device, dtype, offload and attention backend (framepack.models.offload) on the CPU.

CUDA-only behaviour (model and sequential offload really moving weights, flash/sage kernels)
cannot run here; what can: the decisions, the refusals, and group offload with hooks that
onload to the CPU, which runs the real diffusers hook path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framepack.errors import InputError, ModelError
from framepack.models import offload
from framepack.models.offload import (
    ATTENTION_BACKENDS,
    OFFLOAD_MODES,
    apply_offload,
    available_attention_backends,
    offload_state,
    pick_device,
    pick_dtype,
    pipeline_offload_state,
    resolve_offload,
    set_attention_backend,
)
from tiny_runs import generate, load_pipe

GB = 2**30
MODULES = ("text_encoder", "text_encoder_2", "vae", "image_encoder", "transformer")


@pytest.fixture(scope="module")
def baseline(tiny_model_dir) -> np.ndarray:
    return generate(load_pipe(tiny_model_dir))


# ----------------------------------------------------------------------------- decisions


# `auto` asks the resource planner (tests/test_resources.py has the why of each choice): the
# full-size bf16 model at 640 px fits whole above ~58 GiB free, whole with a tiled decode on a
# 48 GB card, and only with leaf-level group offload on 16-24 GB cards (its transformer alone is
# 24 GiB). Free RAM is fixed at 64 GiB here so the host's RAM does not change the answers.
@pytest.mark.parametrize("mode, device, free, expected", [
    ("auto", "cpu", None, "none"),
    ("none", "cpu", None, "none"),
    ("auto", "cuda", 80 * GB, "none"),
    ("auto", "cuda", 48 * GB, "none"),
    ("auto", "cuda:1", 24 * GB, "group"),
    ("auto", "xpu", 16 * GB, "group"),
    ("auto", "mps", 64 * GB, "none"),
    ("none", "cuda", 8 * GB, "none"),
    ("model", "cuda", 200 * GB, "model"),
    ("sequential", "cuda", None, "sequential"),
    ("group", "xpu", None, "group"),
    (" AUTO ", "cuda", 70 * GB, "none"),
])
def test_resolve_offload(mode, device, free, expected):
    assert resolve_offload(mode, device, free_bytes=free, ram_bytes=64 * GB) == expected


def test_auto_offloads_when_free_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(offload, "free_accelerator_bytes", lambda device: None)
    assert resolve_offload("auto", "cuda", ram_bytes=64 * GB) == "model"
    monkeypatch.setattr(offload, "free_accelerator_bytes", lambda device: 96 * GB)
    assert resolve_offload("auto", "cuda", ram_bytes=64 * GB) == "none"


def test_auto_plans_for_the_quantization_it_will_load():
    """An int8 transformer (12.9 GB) fits a 24 GB card with whole-model offload."""
    int8 = {"quantization": "quanto-int8"}
    assert resolve_offload("auto", "cuda", 24 * GB, ram_bytes=64 * GB, workload=int8) == "model"


def test_auto_refuses_what_fits_nowhere_and_says_what_would():
    from framepack.models.resource_choice import ResourceError

    with pytest.raises(ResourceError, match="48.2 GiB of RAM .budget 32.0 GiB.*what would fit: int8 or fp8 weights"):
        resolve_offload("auto", "cuda", 24 * GB, ram_bytes=32 * GB)


@pytest.mark.parametrize("mode", ["model", "sequential", "group"])
def test_offload_modes_need_an_accelerator(mode):
    with pytest.raises(InputError, match=f"offload mode '{mode}' moves weights between CPU memory and an "
                                         "accelerator, but the device is cpu; use 'none' or 'auto'"):
        resolve_offload(mode, "cpu")


def test_unknown_offload_mode():
    assert OFFLOAD_MODES == ("auto", "none", "model", "sequential", "group")
    with pytest.raises(InputError, match="unknown offload mode 'balanced'; choose one of: auto, none, model, "
                                         "sequential, group"):
        resolve_offload("balanced", "cuda")


def test_pick_dtype(monkeypatch):
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("mps") == torch.float16
    assert pick_dtype("xpu") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(torch.device("cuda", 0)) == torch.float16


def test_pick_device(monkeypatch):
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu") == pick_device("auto")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")


# ----------------------------------------------------------------------------- applying


def test_none_keeps_everything_on_the_device(tiny_model_dir, baseline):
    pipe = load_pipe(tiny_model_dir)
    assert apply_offload(pipe, "auto", "cpu") == "none"
    assert pipeline_offload_state(pipe) is None
    np.testing.assert_array_equal(generate(pipe), baseline)


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_model_and_sequential_offload_need_an_accelerator(tiny_model_dir, mode):
    pipe = load_pipe(tiny_model_dir)
    with pytest.raises(InputError, match=f"offload mode '{mode}' needs an accelerator \\(cuda, xpu, mps\\), "
                                         "but the device is cpu; use 'none'"):
        apply_offload(pipe, mode, "cpu")
    assert pipeline_offload_state(pipe) is None


def test_group_offload_runs_through_diffusers_hooks(tiny_model_dir, baseline):
    """Every model component gets diffusers' group-offload hooks; the video is unchanged."""
    pipe = load_pipe(tiny_model_dir)
    assert apply_offload(pipe, "group", "cpu") == "group"
    assert {name: offload_state(getattr(pipe, name)) for name in MODULES} == dict.fromkeys(MODULES, "group")
    assert pipe._execution_device == torch.device("cpu")
    np.testing.assert_array_equal(generate(pipe), baseline)
    assert apply_offload(pipe, "group", "cpu") == "group"  # same mode again: nothing to do
    with pytest.raises(ModelError, match="the pipeline already uses group offload; load it again to switch to 'model'"):
        apply_offload(pipe, "model", "cuda")


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_state_recognizes_accelerate_hooks(tiny_model_dir, mode):
    """diffusers' own calls (allowed on the CPU when asked directly) are recognized, and a second
    mode is refused rather than stacked on top."""
    pipe = load_pipe(tiny_model_dir)
    getattr(pipe, f"enable_{mode}_cpu_offload")(device="cpu")
    assert pipeline_offload_state(pipe) == mode
    assert offload_state(pipe.transformer) == mode
    with pytest.raises(ModelError, match=f"the pipeline already uses {mode} offload"):
        apply_offload(pipe, "group", "cpu")


def test_offload_state_of_plain_objects():
    assert offload_state(object()) is None
    assert offload_state(torch.nn.Linear(2, 2)) is None


# ----------------------------------------------------------------------------- attention


def test_native_attention_matches(tiny_model_dir, baseline):
    pipe = load_pipe(tiny_model_dir)
    assert set_attention_backend(pipe, " Native ") == "native"
    # the double and single blocks dispatch; the small token refiner always calls torch SDPA
    blocks = [*pipe.transformer.transformer_blocks, *pipe.transformer.single_transformer_blocks]
    assert {block.attn.processor._attention_backend for block in blocks} == {"native"}
    np.testing.assert_array_equal(generate(pipe), baseline)
    pipe.transformer.reset_attention_backend()


def test_available_backends():
    available = available_attention_backends()
    assert available[0] == "native" and set(available) <= set(ATTENTION_BACKENDS)
    assert ATTENTION_BACKENDS == ("native", "flash", "sage", "xformers")


@pytest.mark.parametrize("name", ["flash", "sage", "xformers"])
def test_missing_backend_is_refused_with_what_is_available(tiny_model_dir, name, monkeypatch):
    monkeypatch.setattr(offload, "available_attention_backends", lambda: ("native",))
    pipe = load_pipe(tiny_model_dir)
    package = {"flash": "flash_attn", "sage": "sageattention", "xformers": "xformers"}[name]
    with pytest.raises(InputError, match=f"attention backend '{name}' needs the {package} package, which is not "
                                         "installed; available here: native"):
        set_attention_backend(pipe, name)


def test_gpu_backends_are_refused_on_cpu(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(offload, "available_attention_backends", lambda: ATTENTION_BACKENDS)
    pipe = load_pipe(tiny_model_dir)
    with pytest.raises(InputError, match="attention backend 'flash' runs on CUDA only, but the pipeline runs on cpu"):
        set_attention_backend(pipe, "flash")


def test_unknown_backend(tiny_model_dir):
    pipe = load_pipe(tiny_model_dir)
    with pytest.raises(InputError, match="unknown attention backend 'flex'; choose one of: native, flash, sage, xformers"):
        set_attention_backend(pipe, "flex")


# ----------------------------------------------------------------------------- VAE tiling


def _decoder_calls(vae) -> list:
    calls = []
    vae.decoder.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    return calls


def test_tiled_decode_matches_untiled(tiny_model_dir):
    """diffusers' tiled decode of the tiny VAE against its untiled decode.

    Tiles of 64 px with a 48 px stride on a 96 px, 5-latent-frame decode: 2 x 2 tiles in each of
    diffusers' 2 temporal chunks, so tiling really happens. The content is flat in space and varies over time
    and channels: every tile then sees what the whole frame sees, which isolates the tiling
    arithmetic (tile placement and coverage, blend weights summing to one) from what a
    random-weight VAE does at tile borders. Tolerance 1e-8 in [-1, 1] pixel units, in float64;
    measured 3.1e-13 (rounding only). On textured content the random tiny VAE is no reference:
    its receptive field is wider than a 64 px tile and its GroupNorm statistics become tile-local,
    so tiled and untiled decodes of random latents differ by 0.14 on average (max 1.9, on an
    output range of -2.2..3.2); a trained VAE's tiles blend without visible seams.
    """
    from diffusers import AutoencoderKLHunyuanVideo

    vae = AutoencoderKLHunyuanVideo.from_pretrained(tiny_model_dir / "vae").double().eval()
    calls = _decoder_calls(vae)
    generator = torch.Generator().manual_seed(3)
    levels = torch.randn(1, 16, 5, 1, 1, generator=generator, dtype=torch.float64)
    latents = levels.expand(1, 16, 5, 12, 12).contiguous()
    with torch.no_grad():
        untiled = vae.decode(latents).sample
        untiled_calls = len(calls)
        vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=48,
                          tile_sample_stride_width=48)
        vae.enable_slicing()
        tiled = vae.decode(latents).sample
    assert untiled_calls == 2 and len(calls) - untiled_calls == 2 * 4  # 4 tiles in each of 2 temporal chunks
    assert tiled.shape == untiled.shape == (1, 3, 17, 96, 96)
    assert untiled.std() > 0.05  # not a trivially constant video
    assert (tiled - untiled).abs().max().item() < 1e-8


def test_apply_vae_tiling_switches_diffusers_tiling_and_slicing(tiny_model_dir):
    from framepack.models.offload import apply_vae_tiling

    pipe = load_pipe(tiny_model_dir)
    assert apply_vae_tiling(pipe, True) is True
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    assert apply_vae_tiling(pipe, False) is False
    assert not pipe.vae.use_tiling and not pipe.vae.use_slicing


@pytest.mark.parametrize("choice, expected", [("on", True), ("off", False), ("auto", False)])
def test_build_pipeline_applies_vae_tiling(tiny_model_dir, choice, expected, monkeypatch):
    """`auto` on the CPU plans with the tiny model's own configs: with 16 GB free its decode fits."""
    from framepack.engine.pipeline import RuntimeOptions, build_pipeline
    from framepack.models.recipe import local_recipe

    monkeypatch.setattr(offload, "available_ram_bytes", lambda: 16 * GB)
    pipe = build_pipeline(local_recipe(tiny_model_dir, "f1"), RuntimeOptions(vae_tiling=choice), "cpu")
    assert pipe.vae.use_tiling is expected and pipe.vae.use_slicing is expected
    assert pipeline_offload_state(pipe) is None


def test_plan_runtime_on_cpu_and_bad_tiling_names(tiny_model_dir):
    from framepack.models.offload import plan_runtime
    from framepack.models.recipe import local_recipe
    from framepack.models.component_sizes import recipe_configs

    configs = recipe_configs(local_recipe(tiny_model_dir, "original"))
    workload = {"configs": configs, "dtype": "fp32", "resolution": 640}
    choice = plan_runtime("auto", "auto", "cpu", ram_bytes=16 * GB, workload=workload)
    assert (choice.offload, choice.vae_tiling) == ("none", False) and choice.plan.device == "cpu"
    # the untiled decode of 5 latent frames at 640 px builds a 31,200^2 causal mask (4.9 GB in
    # float32) even in the tiny VAE: with 6 GB of RAM only the tiled decode fits
    assert plan_runtime("auto", "auto", "cpu", ram_bytes=6 * GB, workload=workload).vae_tiling is True
    assert plan_runtime("group", "on", "cuda", free_bytes=80 * GB).plan is None  # forced: nothing to plan
    with pytest.raises(InputError, match="unknown vae_tiling 'sometimes'; choose one of: auto, on, off"):
        plan_runtime("auto", "sometimes", "cpu")


def test_plan_runtime_never_refuses_a_cpu_run(tiny_model_dir):
    """On a CPU a short RAM only means swapping: tile the VAE and go on (accelerators refuse)."""
    from framepack.models.offload import plan_runtime
    from framepack.models.resource_choice import ResourceError

    assert plan_runtime("auto", "auto", "cpu", ram_bytes=GB).vae_tiling is True  # full-size model, 1 GiB of RAM
    assert plan_runtime("auto", "off", "cpu", ram_bytes=GB).vae_tiling is False
    with pytest.raises(ResourceError):
        plan_runtime("auto", "auto", "cuda", free_bytes=GB, ram_bytes=GB)
