"""quanto and NNCF weight quantization on the tiny model: counts, generation, refusals.

The default tiny model's layers are 20 channels wide: quanto and NNCF int8 quantize them, but
NNCF int4 (group size 128) falls back to int8 for almost all of them. The quantizable tiny
model (`build_quantizable_tiny_model`: transformer 2 x 64 heads, Llama 128 wide) makes every
method replace real layers, which the counts below prove.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framepack.errors import InputError, ModelError
from framepack.models import quantize as quant
from framepack.models.loader import load_component
from framepack.models.offload import apply_offload
from framepack.models.quantize import (
    QUANT_METHODS,
    check_method,
    example_text_inputs,
    example_transformer_inputs,
    quantize_component,
    quantize_pipeline,
    quantized_with,
)
from framepack.models.recipe import local_recipe
from framepack.models.tiny import build_quantizable_tiny_model
from tiny_runs import generate, load_pipe


# Weight layers of the quantizable tiny model: the transformer has 42 Linear + 4 Conv3d
# (patch embedders, which quanto has no module for); the Llama encoder 3 x 7 Linear + 1 Embedding.
TRANSFORMER_LINEAR, TRANSFORMER_LAYERS = 42, 46
LLAMA_LINEAR, LLAMA_LAYERS = 21, 22
EXPECTED = {
    # method: ({transformer kinds}, {text encoder kinds})
    "quanto-int8": ({"qint8": 42}, {"qint8": 21}),
    "quanto-fp8": ({"qfloat8_e4m3fn": 42}, {"qfloat8_e4m3fn": 21}),
    "nncf-int8": ({"int8_sym": 46}, {"int8_sym": 22}),
    # NNCF int4 keeps a backup int8 for the first and last layers (token embedding, proj_out /
    # last down_proj), the 4 patch-embedding Conv3d and the 8-wide pooled-text embedder
    "nncf-int4": ({"int4_sym": 40, "int8_asym": 6}, {"int4_sym": 20, "int8_asym": 2}),
}


@pytest.fixture(scope="module")
def quant_model_dir(tmp_path_factory):
    return build_quantizable_tiny_model(tmp_path_factory.mktemp("tinyq") / "tiny-quantizable")


@pytest.fixture(scope="module")
def float_videos(quant_model_dir):
    """The float run, and how far another seed moves it (the scale a quantized run must stay under)."""
    pipe = load_pipe(quant_model_dir)
    video = generate(pipe)
    seed_change = float(np.abs(generate(pipe, seed=8) - video).mean())
    return video, seed_change


def check_run(pipe, float_videos) -> np.ndarray:
    """Generation runs, differs from the float run, and by far less than a seed change does.

    Measured (uint8 mean abs diff, 25 frames of 32 x 32): int8 0.09, fp8 0.40, quanto int4 0.87,
    NNCF int8 0.07, NNCF int4 0.18; another seed moves the float run by 27.6.
    """
    video, seed_change = float_videos
    quantized = generate(pipe)
    assert quantized.shape == video.shape
    diff = float(np.abs(quantized - video).mean())
    assert 0.0 < diff < 0.1 * seed_change, (diff, seed_change)
    return quantized


@pytest.fixture(scope="module")
def quantized_runs():
    """method -> (pipeline, its video), shared by the tests that only read them."""
    return {}


@pytest.mark.parametrize("method", ["quanto-int8", "quanto-fp8", "nncf-int8", "nncf-int4"])
def test_quantized_layer_counts_and_generation(quant_model_dir, float_videos, quantized_runs, method):
    pipe = load_pipe(quant_model_dir)
    reports = quantize_pipeline(pipe, method)
    transformer_kinds, text_kinds = EXPECTED[method]
    for name, kinds, total in (("transformer", transformer_kinds, TRANSFORMER_LAYERS),
                               ("text_encoder", text_kinds, LLAMA_LAYERS)):
        report = reports[name]
        assert (report.method, report.component) == (method, name)
        assert dict(report.kinds) == kinds
        assert report.layers_quantized == sum(kinds.values())
        assert report.layers_total == total
        assert report.weight_bytes_after < report.weight_bytes_before
        assert name in report.summary()
        assert quantized_with(getattr(pipe, name)) == method.split("-")[0]
    quantized_runs[method] = (pipe, check_run(pipe, float_videos))


@pytest.mark.slow
def test_quanto_int4(quant_model_dir, float_videos):
    """qint4 JIT-builds quanto's C++ kernel on first use (minutes on two cores, cached after)."""
    if not quant.compiler_available():
        pytest.skip("quanto int4 needs a C++ compiler and ninja")
    pipe = load_pipe(quant_model_dir)
    reports = quantize_pipeline(pipe, "quanto-int4")
    assert dict(reports["transformer"].kinds) == {"qint4": TRANSFORMER_LINEAR}
    assert dict(reports["text_encoder"].kinds) == {"qint4": LLAMA_LINEAR}
    check_run(pipe, float_videos)


def test_default_tiny_layers_are_too_small_for_nncf_int4(tiny_model_dir):
    """Why the quantizable tiny model exists: 20-wide layers leave NNCF int4 almost no int4 layer."""
    transformer = load_component(local_recipe(tiny_model_dir, "f1"), "transformer")
    report = quantize_component(transformer, "nncf-int4", component="transformer")
    assert report.layers_quantized == report.layers_total == 46
    assert report.kinds["int4_sym"] <= 4 < report.kinds["int8_asym"]


def test_none_changes_nothing(quant_model_dir):
    transformer = load_component(local_recipe(quant_model_dir, "f1"), "transformer")
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    report = quantize_component(transformer, "none", component="transformer")
    assert (report.layers_quantized, report.layers_total) == (0, TRANSFORMER_LAYERS)
    assert report.weight_bytes_after == report.weight_bytes_before
    assert all(torch.equal(before[k], v) for k, v in transformer.state_dict().items())
    assert quantized_with(transformer) is None


def test_method_names():
    assert QUANT_METHODS == ("none", "quanto-int8", "quanto-fp8", "quanto-int4", "nncf-int8", "nncf-int4")
    assert check_method(" Quanto-INT8 ") == "quanto-int8"
    assert check_method(None) == "none"
    with pytest.raises(InputError, match="unknown quantization 'bnb-4bit'; choose one of: none, quanto-int8"):
        check_method("bnb-4bit")


def test_example_inputs_run_the_models(quant_model_dir):
    """The NNCF example inputs are a real call: both models accept them as they are."""
    recipe = local_recipe(quant_model_dir, "f1")
    transformer = load_component(recipe, "transformer")
    with torch.no_grad():
        out = transformer(**example_transformer_inputs(transformer))[0]
    assert out.shape == (1, transformer.config.out_channels, 3, 4, 4)
    encoder = load_component(recipe, "text_encoder")
    with torch.no_grad():
        hidden = encoder(**example_text_inputs(encoder)).hidden_states
    assert hidden[-1].shape == (1, 16, 128)


# ----------------------------------------------------------------------------- refusals


@pytest.fixture()
def transformer(quant_model_dir):
    return load_component(local_recipe(quant_model_dir, "f1"), "transformer")


@pytest.mark.parametrize("first, second", [("quanto-int8", "nncf-int8"), ("nncf-int8", "quanto-int8"),
                                           ("quanto-int8", "quanto-fp8")])
def test_a_quantized_model_is_not_quantized_again(transformer, first, second):
    quantize_component(transformer, first, component="transformer")
    with pytest.raises(ModelError, match=f"transformer is already quantized with {first.split('-')[0]}; "
                                         f"load it again \\(unquantized\\) to use {second}"):
        quantize_component(transformer, second, component="transformer")


def test_weights_quantized_by_someone_else_are_left_alone():
    """e.g. the host's SDNQ: a weight that is no longer a float parameter is not quantized again."""
    model = _Mlp()
    model.fc.weight = torch.nn.Parameter(torch.ones(256, 256, dtype=torch.int8), requires_grad=False)
    assert quantized_with(model) == "another quantizer"
    with pytest.raises(ModelError, match="model is already quantized with another quantizer"):
        quantize_component(model, "quanto-int8")
    assert quantized_with(_Mlp()) is None


def test_pipeline_refusal_changes_nothing(quant_model_dir):
    """The text encoder is already quantized: nothing is touched, not even the transformer."""
    pipe = load_pipe(quant_model_dir)
    quantize_component(pipe.text_encoder, "quanto-int8", component="text_encoder")
    with pytest.raises(ModelError, match="text_encoder is already quantized with quanto"):
        quantize_pipeline(pipe, "nncf-int8")
    assert quantized_with(pipe.transformer) is None
    with pytest.raises(InputError, match="cannot quantize 'vae'"):
        quantize_pipeline(pipe, "quanto-int8", components=("vae",))


def test_fp8_refused_where_the_device_has_no_float8(transformer, monkeypatch):
    monkeypatch.setattr(quant, "fp8_supported", lambda device: False)
    with pytest.raises(InputError, match="quanto-fp8 needs float8 support, which cpu does not have"):
        quantize_component(transformer, "quanto-fp8")
    assert quantized_with(transformer) is None


def test_checks_use_the_run_device(transformer, monkeypatch):
    """Quantized on the CPU, run on a GPU: the GPU's toolchain needs are checked up front."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(quant, "fp8_supported", lambda device: True)
    monkeypatch.setattr(quant, "compiler_available", lambda: False)
    with pytest.raises(InputError, match="quanto-fp8 compiles a C\\+\\+ kernel on first use"):
        quantize_component(transformer, "quanto-fp8", device="cuda")
    assert quantized_with(transformer) is None


def test_fp8_probe():
    assert quant.fp8_supported("cpu") is True
    assert quant.fp8_supported("meta") is False


def test_int4_refused_without_a_compiler(transformer, monkeypatch):
    monkeypatch.setattr(quant.shutil, "which", lambda name: None)
    assert quant.compiler_available() is False
    with pytest.raises(InputError, match="quanto-int4 compiles a C\\+\\+ kernel on first use, but no C\\+\\+ compiler"):
        quantize_component(transformer, "quanto-int4")


def test_which_methods_build_kernels(monkeypatch):
    assert quant.needs_kernel_build("quanto-int4", "cpu") is True
    assert quant.needs_kernel_build("quanto-fp8", "cpu") is False
    assert quant.needs_kernel_build("quanto-int8", "cuda") is False
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert quant.needs_kernel_build("quanto-fp8", "cuda") is True  # Marlin fp8 kernels
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert quant.needs_kernel_build("quanto-fp8", "cuda:0") is False


def test_quantize_after_offload_is_refused(quant_model_dir):
    pipe = load_pipe(quant_model_dir)
    apply_offload(pipe, "group", "cpu")
    with pytest.raises(ModelError, match="transformer already has group offload hooks; quantize the pipeline "
                                         "before enabling offload"):
        quantize_pipeline(pipe, "quanto-int8")


def test_sequential_offload_refuses_quanto_weights(quant_model_dir):
    """accelerate's leaf hooks rebuild parameters as plain tensors, which quanto's cannot survive."""
    pipe = load_pipe(quant_model_dir)
    quantize_pipeline(pipe, "quanto-int8", components=("transformer",))
    with pytest.raises(InputError, match="sequential offload cannot move quanto-quantized weights \\(transformer\\)"):
        apply_offload(pipe, "sequential", "cuda")  # refused before any CUDA call


def test_quanto_survives_group_offload(quant_model_dir, quantized_runs):
    """Group offload (hooks onloading to the CPU here) runs a quanto-quantized pipeline unchanged."""
    if "quanto-int8" in quantized_runs:
        pipe, plain = quantized_runs.pop("quanto-int8")  # offload changes it: nobody else may use it
    else:
        pipe = load_pipe(quant_model_dir)
        quantize_pipeline(pipe, "quanto-int8")
        plain = generate(pipe)
    apply_offload(pipe, "group", "cpu")
    np.testing.assert_array_equal(generate(pipe), plain)


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(256, 256)

    def forward(self, x):
        return self.fc(x)


def test_nncf_needs_example_inputs_for_unknown_models():
    with pytest.raises(InputError, match="NNCF needs example inputs for _Mlp; pass example_inputs="):
        quantize_component(_Mlp(), "nncf-int8")
    report = quantize_component(_Mlp(), "nncf-int8", example_inputs={"x": torch.randn(1, 256)})
    assert dict(report.kinds) == {"int8_sym": 1}
