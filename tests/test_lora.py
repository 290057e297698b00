"""Standalone LoRA (framepack.models.lora) through diffusers' loader, on the tiny model: parsing,
file checks, weighting, several LoRAs, unloading, quantization, jobs. (The file layouts and the
refused files are in test_lora_formats.py.)

The adapter files are written here in diffusers' PEFT layout (`transformer.<module>.lora_A.weight`
[rank, in] and `lora_B.weight` [out, rank], B random and nonzero so the adapter changes the
output). Loading needs the peft package; the parsing and file checks do not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from framepack.errors import InputError, ModelError
from framepack.models import lora
from framepack.models.lora import apply_loras, check_lora_file, loaded_adapters, unload_loras
from framepack.request.model import LoraSpec, build_request
from tiny_runs import generate, load_pipe

TARGETS = ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_v", "transformer_blocks.0.ff.net.2",
           "single_transformer_blocks.0.proj_out", "proj_out")
RANK = 4

needs_peft = pytest.mark.skipif(not lora.peft_available(), reason="LoRA loading needs the peft package")


def write_lora(path, transformer, *, seed=0, prefix="transformer.", targets=TARGETS, scale=0.5, rank=RANK):
    """A LoRA for `targets` of `transformer` in diffusers/PEFT format, with random nonzero B."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(transformer.named_modules())
    tensors = {}
    for name in targets:
        out_features, in_features = modules[name].weight.shape if name in modules else (20, 20)
        tensors[f"{prefix}{name}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * scale
        tensors[f"{prefix}{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * scale
    save_file(tensors, str(path))
    return path


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipe(tiny_model_dir)


@pytest.fixture(scope="module")
def baseline(pipe):
    return generate(pipe)


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory, pipe):
    folder = tmp_path_factory.mktemp("loras")
    return (write_lora(folder / "style.safetensors", pipe.transformer, seed=1),
            write_lora(folder / "motion.safetensors", pipe.transformer, seed=2))


@pytest.fixture()
def clean(pipe):
    unload_loras(pipe)
    yield pipe
    unload_loras(pipe)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ("file.safetensors:0.8", ("file.safetensors", 0.8)),
    ("file.safetensors", ("file.safetensors", 1.0)),
    (" loras/a b.safetensors : -0.5 ", ("loras/a b.safetensors", -0.5)),
    ("C:\\loras\\x.safetensors", ("C:\\loras\\x.safetensors", 1.0)),
    ("C:\\loras\\x.safetensors:2", ("C:\\loras\\x.safetensors", 2.0)),
    ("dir:with:colons/x.safetensors:1e-1", ("dir:with:colons/x.safetensors", 0.1)),
    ("x.safetensors:", ("x.safetensors:", 1.0)),
])
def test_parse_lora_spec(text, expected):
    spec = LoraSpec.parse(text)
    assert (spec.path, spec.weight) == expected
    assert build_request(image=np.zeros((32, 32, 3), np.uint8), loras=[text]).loras == (spec,)


@pytest.mark.parametrize("text, message", [("", "empty LoRA entry"), ("   ", "empty LoRA entry"),
                                           ("x.safetensors:nan", "must be a finite number"),
                                           ("x.safetensors:inf", "must be a finite number")])
def test_parse_lora_spec_errors(text, message):
    with pytest.raises(InputError, match=message):
        LoraSpec.parse(text)
    with pytest.raises(InputError, match=message) as refused:
        build_request(image=np.zeros((32, 32, 3), np.uint8), loras=["ok.safetensors", text])
    assert refused.value.problems()[0].field == ("loras", 1)


def test_file_checks(tmp_path):
    with pytest.raises(InputError, match="LoRA file not found: .*missing.safetensors"):
        check_lora_file(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="LoRA path is not a file"):
        check_lora_file(tmp_path)
    pickled = tmp_path / "old.ckpt"
    pickled.write_bytes(b"not really")
    with pytest.raises(InputError, match="LoRA old.ckpt: only .safetensors files are loaded"):
        check_lora_file(pickled)


def test_missing_file_is_reported_before_anything_loads(pipe, tmp_path):
    with pytest.raises(InputError, match="LoRA file not found"):
        apply_loras(pipe, [LoraSpec.parse(f"{tmp_path}/nope.safetensors:0.7")])


def test_without_peft_the_message_says_so(pipe, lora_files, monkeypatch):
    monkeypatch.setattr(lora, "peft_available", lambda: False)
    with pytest.raises(ModelError, match="LoRA needs the peft package"):
        apply_loras(pipe, [(lora_files[0], 1.0)])


# ----------------------------------------------------------------------------- applying


@needs_peft
def test_weight_changes_output_and_zero_or_unload_is_baseline(clean, baseline, lora_files):
    pipe = clean
    style = lora_files[0]
    applied = apply_loras(pipe, [LoraSpec.parse(f"{style}:1.0")])
    assert [(a.path, a.weight) for a in applied] == [(style.resolve(), 1.0)]
    name = applied[0].name
    layer = pipe.transformer.transformer_blocks[0].attn.to_q.lora_A[name]
    full = generate(pipe)
    assert mean_diff(full, baseline) > 0.5

    apply_loras(pipe, [LoraSpec(path=str(style), weight=0.3)])  # re-weighted, not reloaded
    assert pipe.transformer.transformer_blocks[0].attn.to_q.lora_A[name] is layer
    weaker = generate(pipe)
    assert 0.05 < mean_diff(weaker, baseline) < mean_diff(full, baseline)
    assert mean_diff(weaker, full) > 0.05

    apply_loras(pipe, [(style, 0.0)])
    np.testing.assert_array_equal(generate(pipe), baseline)

    apply_loras(pipe, [(style, 1.0)])
    np.testing.assert_array_equal(generate(pipe), full)
    unload_loras(pipe)
    assert loaded_adapters(pipe) == []
    assert not any("lora" in name for name, _ in pipe.transformer.named_modules())
    np.testing.assert_array_equal(generate(pipe), baseline)


@needs_peft
def test_several_loras_and_dropping_one(clean, baseline, lora_files):
    pipe = clean
    style, motion = lora_files
    both = apply_loras(pipe, [(style, 0.8), (motion, 0.8)])
    assert len(loaded_adapters(pipe)) == 2
    together = generate(pipe)
    apply_loras(pipe, [(style, 0.8)])  # motion is no longer listed: deleted
    assert loaded_adapters(pipe) == [both[0].name]
    alone = generate(pipe)
    assert mean_diff(together, alone) > 0.05
    apply_loras(pipe, [])  # an empty list unloads everything
    assert loaded_adapters(pipe) == []
    np.testing.assert_array_equal(generate(pipe), baseline)


@needs_peft
def test_listed_twice(clean, lora_files):
    with pytest.raises(InputError, match="LoRA style.safetensors is listed twice"):
        apply_loras(clean, [(lora_files[0], 1.0), (lora_files[0], 0.5)])


@needs_peft
def test_keys_without_the_transformer_prefix_load(clean, baseline, tmp_path):
    bare = write_lora(tmp_path / "bare.safetensors", clean.transformer, seed=3, prefix="")
    apply_loras(clean, [(bare, 1.0)])
    assert mean_diff(generate(clean), baseline) > 0.5


@needs_peft
def test_lora_for_another_model_is_refused(clean, baseline, tmp_path):
    foreign = write_lora(tmp_path / "foreign.safetensors", clean.transformer,
                         targets=("down_blocks.0.resnets.0.conv1", "mid_block.attentions.0.to_q"))
    with pytest.raises(ModelError, match=r"LoRA foreign.safetensors: 0 of its 4 keys match the FramePack "
                                         r"transformer \(not matched: transformer.down_blocks.0.resnets.0.conv1.lora_A.weight, "):
        apply_loras(clean, [(foreign, 1.0)])
    assert loaded_adapters(clean) == []
    np.testing.assert_array_equal(generate(clean), baseline)


@needs_peft
def test_lora_with_wrong_shapes_is_refused(clean, tmp_path):
    wrong = tmp_path / "wrong.safetensors"
    save_file({"transformer.proj_out.lora_A.weight": torch.ones(RANK, 33),
               "transformer.proj_out.lora_B.weight": torch.ones(64, RANK)}, str(wrong))
    with pytest.raises(ModelError, match=r"LoRA wrong.safetensors: layer proj_out has down \[4, 33\] and up "
                                         r"\[64, 4\]; this transformer needs \[rank, 20\] and \[64, rank\]"):
        apply_loras(clean, [(wrong, 1.0)])


@needs_peft
def test_not_a_lora_file(clean, tmp_path):
    plain = tmp_path / "weights.safetensors"
    save_file({"proj_out.weight": torch.ones(2, 2)}, str(plain))
    with pytest.raises(ModelError, match=r"LoRA weights.safetensors: 0 of its 1 keys match .* \(not matched: proj_out.weight\)"):
        apply_loras(clean, [(plain, 1.0)])


# ----------------------------------------------------------------------------- with quantization


@needs_peft
def test_lora_on_a_quanto_transformer(tiny_model_dir, lora_files):
    """PEFT wraps quanto's QLinear: the LoRA acts, weight 0 and unload give the quantized run back."""
    from framepack.models.quantize import quantize_pipeline

    pipe = load_pipe(tiny_model_dir)
    quantize_pipeline(pipe, "quanto-int8", components=("transformer",))
    quantized = generate(pipe)
    apply_loras(pipe, [(lora_files[0], 1.0)])
    assert mean_diff(generate(pipe), quantized) > 0.5
    apply_loras(pipe, [(lora_files[0], 0.0)])
    np.testing.assert_array_equal(generate(pipe), quantized)


@needs_peft
def test_lora_refused_on_nncf_and_quantizing_refused_with_lora(tiny_model_dir, lora_files):
    from framepack.models.quantize import quantize_pipeline

    pipe = load_pipe(tiny_model_dir)
    apply_loras(pipe, [(lora_files[0], 1.0)])
    with pytest.raises(ModelError, match="transformer has LoRA layers loaded; unload them, quantize, then apply"):
        quantize_pipeline(pipe, "quanto-int8")
    unload_loras(pipe)
    quantize_pipeline(pipe, "nncf-int8", components=("transformer",))
    with pytest.raises(ModelError, match="LoRA cannot be applied to an NNCF-compressed transformer"):
        apply_loras(pipe, [(lora_files[0], 1.0)])
    assert loaded_adapters(pipe) == []


def test_jobs_apply_the_request_loras_and_drop_them_afterwards(pipe, baseline, lora_files, tmp_path):
    """Through the request model and the job runner, as the CLI and standalone app use it."""
    from framepack.io.raw import RawFrames
    from framepack.jobs.output import run_job
    from framepack.request.output import OutputOptions

    def job(loras):
        request = build_request(image=np.zeros((32, 32, 3), np.uint8), prompt="x", resolution=32, steps=2,
                                latent_window_size=3, duration=0.4, seed=0, teacache=False, preview=False,
                                loras=loras)
        result = run_job(pipe, request, OutputOptions(codec="none", save_frames=True), tmp_path)
        return np.asarray(RawFrames(result.frames)[:]).astype(np.int16)

    plain = job([])
    with_lora = job([f"{lora_files[0]}:1.0"])
    assert mean_diff(with_lora, plain) > 1.0
    np.testing.assert_array_equal(job([]), plain)  # the next job without LoRA is back to baseline


def test_a_missing_lora_file_is_refused_at_submission_naming_its_entry(tmp_path):
    from framepack.jobs.checks import check_job
    from framepack.request.output import OutputOptions

    missing = tmp_path / "none.safetensors"
    request = build_request(image=np.zeros((32, 32, 3), np.uint8), prompt="x", loras=[f"{missing}:0.5"])
    assert request.loras[0].path == str(missing) and request.loras[0].weight == 0.5  # parsed once, typed
    with pytest.raises(InputError) as refused:
        check_job(request, OutputOptions(codec="none", save_frames=True))
    assert refused.value.problems()[0].field == ("loras", 0) and "none.safetensors" in str(refused.value)
