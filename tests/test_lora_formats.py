"""LoRA files in every layout trainers save, built here from the tiny transformer, loaded through
`apply_loras`, and checked layer by layer: the weight change each transformer layer really makes
(measured by running the layer with and without its adapter) equals the change intended.

The intended change is one random LoRA per Linear/Conv layer in diffusers naming (ranks 1-4,
`delta = B @ A`). Each writer below re-expresses it in a foreign layout from the layout's own
rules, independently of the loader: kohya/musubi names and `.alpha` scaling (up stored as
B * rank / alpha), PEFT `lora_alpha`, ComfyUI prefixes, and the original HunyuanVideo names, where
q/k/v (and the single blocks' mlp) are one fused layer: fused A = the parts' A stacked, fused B =
the parts' B block-diagonal, which is exactly the same change.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from framepack.errors import InputError, ModelError
from framepack.models import lora
from framepack.models.lora import apply_loras, unload_loras
from tiny_runs import load_pipe

pytestmark = pytest.mark.skipif(not lora.peft_available(), reason="LoRA loading needs the peft package")

TOLERANCE = 1e-5

# The original HunyuanVideo layer names, as the original checkpoint and its LoRAs spell them, and the
# diffusers layers each one is (fused layers: the parts in output-row order).
ORIGINAL_DOUBLE = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn_proj": ("attn.to_out.0",),
    "img_mlp.fc1": ("ff.net.0.proj",), "img_mlp.fc2": ("ff.net.2",), "img_mod.linear": ("norm1.linear",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",), "txt_mlp.fc1": ("ff_context.net.0.proj",),
    "txt_mlp.fc2": ("ff_context.net.2",), "txt_mod.linear": ("norm1_context.linear",),
}
ORIGINAL_SINGLE = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear2": ("proj_out",),
                   "modulation.linear": ("norm.linear",)}
ORIGINAL_REFINER = {"self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "self_attn_proj": ("attn.to_out.0",),
                    "mlp.fc1": ("ff.net.0.proj",), "mlp.fc2": ("ff.net.2",),
                    "adaLN_modulation.1": ("norm_out.linear",)}
ORIGINAL_OTHER = {
    "img_in.proj": "x_embedder.proj", "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "time_in.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.mlp.0": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.mlp.2": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
}


def original_names() -> dict[str, tuple[str, ...]]:
    """Original name -> diffusers layers, for the tiny model's one block of each kind."""
    names = {f"double_blocks.0.{k}": tuple(f"transformer_blocks.0.{p}" for p in v) for k, v in ORIGINAL_DOUBLE.items()}
    names |= {f"single_blocks.0.{k}": tuple(f"single_transformer_blocks.0.{p}" for p in v)
              for k, v in ORIGINAL_SINGLE.items()}
    names |= {f"txt_in.individual_token_refiner.blocks.0.{k}":
              tuple(f"context_embedder.token_refiner.refiner_blocks.0.{p}" for p in v)
              for k, v in ORIGINAL_REFINER.items()}
    names |= {k: (v,) for k, v in ORIGINAL_OTHER.items()}
    names["final_layer.adaLN_modulation.1"] = ("norm_out.linear",)  # rows (shift, scale): swapped below
    return names


# ----------------------------------------------------------------------------- the intended change


def lora_layers(transformer) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in transformer.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)) and "lora_" not in name
            and "base_layer" not in name}


def intended_lora(transformer, seed: int, targets=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Layer -> (A [r, in, *kernel], B [out, r, *1s]) with random ranks 1-4: the change is B @ A."""
    generator = torch.Generator().manual_seed(seed)
    loras = {}
    for name, module in lora_layers(transformer).items():
        if targets is not None and name not in targets:
            continue
        rank = int(torch.randint(1, 5, (1,), generator=generator))
        weight = module.weight
        ones = (1,) * (weight.ndim - 2)
        loras[name] = (torch.randn(rank, *weight.shape[1:], generator=generator) * 0.3,
                       torch.randn(weight.shape[0], rank, *ones, generator=generator) * 0.3)
    return loras


def delta_of(pair) -> torch.Tensor:
    down, up = pair
    return (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


def effective_delta(module) -> torch.Tensor:
    """What the layer's adapters add to its weight, measured by running it on a basis of inputs."""
    if not hasattr(module, "base_layer"):
        return torch.zeros_like(module.weight)
    base = module.base_layer
    weight = base.weight
    fan_in = weight[0].numel()
    basis = torch.eye(fan_in, dtype=weight.dtype).reshape(fan_in, *weight.shape[1:])  # one patch per input
    with torch.no_grad():
        change = (module(basis) - base(basis)).reshape(fan_in, weight.shape[0])
    return change.T.reshape(weight.shape)


def assert_deltas(transformer, intended, weight: float = 1.0) -> float:
    """Every layer's change equals weight * the intended one (zero where none was intended)."""
    worst = 0.0
    names = lora_layers_names(transformer)
    for name, module in transformer.named_modules():
        if name in names:
            want = weight * delta_of(intended[name]) if name in intended else torch.zeros_like(
                getattr(module, "base_layer", module).weight)
            error = float((effective_delta(module) - want).abs().max())
            assert error < TOLERANCE, f"{name}: max error {error}"
            worst = max(worst, error)
    return worst


def lora_layers_names(transformer) -> set[str]:
    return {name for name, module in transformer.named_modules()
            if (isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)) or hasattr(module, "base_layer"))
            and not any(part in name for part in ("lora_", "base_layer"))}


# ----------------------------------------------------------------------------- writers, one per layout


def kohya_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def write_peft(loras, prefix="transformer."):
    tensors = {}
    for name, (down, up) in loras.items():
        tensors[f"{prefix}{name}.lora_A.weight"] = down
        tensors[f"{prefix}{name}.lora_B.weight"] = up
    return tensors


def alpha_for(rank: int, index: int) -> float:
    return (0.0, 1.0, rank / 2, 2.0 * rank, 3.0)[index % 5]  # 0 means "alpha = rank" in kohya's files


def write_kohya(loras, name_of=kohya_name, down_key="lora_down", up_key="lora_up"):
    """kohya sd-scripts / musubi-tuner: delta = (alpha / rank) * up @ down, so up = B * rank / alpha."""
    tensors = {}
    for index, (name, (down, up)) in enumerate(loras.items()):
        rank = down.shape[0]
        alpha = alpha_for(rank, index)
        scale = 1.0 if alpha == 0 else alpha / rank
        key = name_of(name)
        tensors[f"{key}.{down_key}.weight"] = down
        tensors[f"{key}.{up_key}.weight"] = up / scale
        stored_as = torch.int64 if alpha.is_integer() and index % 2 else (torch.float16, torch.float32)[index % 2]
        tensors[f"{key}.alpha"] = torch.tensor(alpha).to(stored_as)  # musubi writes int alphas, kohya floats
    return tensors


def fuse(parts):
    """One fused layer from its parts: A stacked, B block-diagonal (the same total change)."""
    if len(parts) == 1:
        return parts[0]
    return torch.cat([down for down, _ in parts]), torch.block_diag(*(up for _, up in parts))


def to_original(loras):
    """Diffusers-named LoRAs -> original HunyuanVideo names (fused, final modulation swapped);
    layers the original model does not have (clean_x_embedder, image_projection) keep their names."""
    renamed, used = {}, set()
    for original, parts in original_names().items():
        down, up = fuse([loras[p] for p in parts])
        if original == "final_layer.adaLN_modulation.1":
            half = up.shape[0] // 2
            up = torch.cat([up[half:], up[:half]])  # diffusers (scale, shift) -> original (shift, scale)
        renamed[original] = (down, up)
        used.update(parts)
    renamed |= {name: pair for name, pair in loras.items() if name not in used}
    return renamed


FORMATS = {
    "diffusers": lambda loras: write_peft(loras, "transformer."),
    "peft-bare": lambda loras: write_peft(loras, ""),
    "peft-base-model": lambda loras: write_peft(loras, "base_model.model."),
    "comfyui": lambda loras: write_peft(loras, "diffusion_model."),
    "musubi-framepack": lambda loras: write_kohya(loras),
    "comfyui-kohya-keys": lambda loras: write_kohya(loras, lambda name: f"diffusion_model.{name}"),
    # musubi's convert_lora.py turns FramePack names into dotted ones it cannot restore (to.q, ...)
    "musubi-converted": lambda loras: write_peft({name.replace("_", "."): pair for name, pair in loras.items()},
                                                 "diffusion_model."),
    "original-comfyui": lambda loras: write_peft(to_original(loras), "diffusion_model."),
    "original-diffusion-pipe": lambda loras: write_peft(to_original(loras), "transformer."),
    "original-bare": lambda loras: write_peft(to_original(loras), ""),
    "original-musubi": lambda loras: write_kohya(to_original(loras)),
}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipe(tiny_model_dir)


@pytest.fixture()
def clean(pipe):
    unload_loras(pipe)
    yield pipe
    unload_loras(pipe)


@pytest.mark.parametrize("layout", list(FORMATS))
def test_each_format_changes_every_layer_as_intended(clean, tmp_path, layout):
    transformer = clean.transformer
    intended = intended_lora(transformer, seed=len(layout))
    assert {"clean_x_embedder.proj", "clean_x_embedder.proj_4x", "image_projection.up", "x_embedder.proj",
            "single_transformer_blocks.0.proj_mlp", "norm_out.linear"} <= set(intended)
    path = tmp_path / f"{layout}.safetensors"
    save_file(FORMATS[layout](intended), str(path))
    applied = apply_loras(clean, [(path, 1.0)])
    assert len(applied) == 1
    worst = assert_deltas(transformer, intended)
    print(f"{layout}: {len(intended)} layers, max abs error {worst:.2e}")


def test_weight_scales_the_change_and_several_files_add_up(clean, tmp_path):
    transformer = clean.transformer
    first = intended_lora(transformer, seed=11)
    second = intended_lora(transformer, seed=12, targets={"transformer_blocks.0.attn.to_q", "proj_out",
                                                          "clean_x_embedder.proj_2x", "image_projection.down"})
    save_file(write_kohya(to_original(first)), str(tmp_path / "a.safetensors"))
    save_file(write_peft(second, "diffusion_model."), str(tmp_path / "b.safetensors"))
    apply_loras(clean, [(tmp_path / "a.safetensors", 0.5)])
    assert_deltas(transformer, first, weight=0.5)
    apply_loras(clean, [(tmp_path / "a.safetensors", 0.5), (tmp_path / "b.safetensors", -1.5)])
    for name in {*first, *second}:
        want = 0.5 * delta_of(first[name])
        if name in second:
            want = want - 1.5 * delta_of(second[name])
        module = dict(transformer.named_modules())[name]
        assert float((effective_delta(module) - want).abs().max()) < TOLERANCE, name


def test_a_partial_lora_leaves_the_other_layers_alone(clean, tmp_path):
    """Only the top-level proj_out: the single block's proj_out (same last name) is not touched."""
    transformer = clean.transformer
    intended = intended_lora(transformer, seed=5, targets={"proj_out", "transformer_blocks.0.attn.to_q"})
    save_file(write_kohya(intended), str(tmp_path / "few.safetensors"))
    apply_loras(clean, [(tmp_path / "few.safetensors", 1.0)])
    assert not hasattr(transformer.single_transformer_blocks[0].proj_out, "base_layer")
    assert_deltas(transformer, intended)


def test_peft_alpha_from_diffusers_metadata(clean, tmp_path):
    """diffusers saves PEFT's lora_alpha in the file; the change is (alpha / rank) * B @ A."""
    transformer = clean.transformer
    intended = intended_lora(transformer, seed=7)
    alphas = {name: 8.0 for name in intended} | {"proj_out": 2.0, "single_transformer_blocks.0.proj_out": 8.0}
    stored = {name: (down, up * down.shape[0] / alphas[name]) for name, (down, up) in intended.items()}
    metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8,
                                                     "transformer.alpha_pattern": {"^proj_out": 2}})}
    save_file(write_peft(stored), str(tmp_path / "meta.safetensors"), metadata=metadata)
    apply_loras(clean, [(tmp_path / "meta.safetensors", 1.0)])
    assert_deltas(transformer, intended)


def test_peft_folder_adapter_config_and_rslora(clean, tmp_path):
    transformer = clean.transformer
    intended = intended_lora(transformer, seed=8)
    stored = {name: (down, up * math.sqrt(down.shape[0]) / 16) for name, (down, up) in intended.items()}
    save_file(write_peft(stored, "base_model.model."), str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 16, "use_rslora": True, "target_modules": ["to_q"]}))
    apply_loras(clean, [(tmp_path / "adapter_model.safetensors", 1.0)])
    assert_deltas(transformer, intended)


def test_lora_b_bias(clean, tmp_path):
    transformer = clean.transformer
    intended = intended_lora(transformer, seed=9, targets={"proj_out"})
    tensors = write_peft(intended) | {"transformer.proj_out.lora_B.bias": torch.full((64,), 0.25)}
    save_file(tensors, str(tmp_path / "bias.safetensors"))
    apply_loras(clean, [(tmp_path / "bias.safetensors", 2.0)])
    layer = transformer.proj_out
    with torch.no_grad():
        zero = torch.zeros(1, 20)
        assert torch.allclose(layer(zero) - layer.base_layer(zero), torch.full((1, 64), 0.5))


# ----------------------------------------------------------------------------- refused files


def ones(*shape, dtype=torch.float32):
    return torch.full(shape, 0.1, dtype=dtype)


PROJ_OUT = {"lora_unet_proj_out.lora_down.weight": ones(4, 20), "lora_unet_proj_out.lora_up.weight": ones(64, 4)}

REFUSED = {
    "partial": (ModelError, {**PROJ_OUT, **{f"lora_unet_double_blocks_{i}_img_attn_qkv.lora_{kind}.weight": ones(*shape)
                                            for i in range(1, 3) for kind, shape in (("down", (4, 20)), ("up", (60, 4)))}},
                r": only 2 of its 6 keys match the FramePack transformer \(not matched: "
                r"lora_unet_double_blocks_1_img_attn_qkv.lora_down.weight, lora_unet_double_blocks_1_img_attn_qkv"
                r".lora_up.weight, lora_unet_double_blocks_2_img_attn_qkv.lora_down.weight and 1 more\); "
                r"is it for another model or model size\?"),
    "wrong_width": (ModelError, {"diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": ones(4, 3072),
                                 "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": ones(9216, 4)},
                    r"layer double_blocks.0.img_attn_qkv has down \[4, 3072\] and up \[9216, 4\]; this transformer "
                    r"needs \[rank, 20\] and \[60, rank\]"),
    "conv_as_linear": (ModelError, {"lora_unet_clean_x_embedder_proj_2x.lora_down.weight": ones(4, 16),
                                    "lora_unet_clean_x_embedder_proj_2x.lora_up.weight": ones(20, 4)},
                       r"needs \[rank, 16, 2, 4, 4\] and \[20, rank, 1, 1, 1\]"),
    "nan_alpha": (InputError, {**PROJ_OUT, "lora_unet_proj_out.alpha": torch.tensor(float("nan"))},
                  r": lora_unet_proj_out.alpha holds NaN or infinite values"),
    "inf_weight": (InputError, {**PROJ_OUT, "lora_unet_proj_out.lora_up.weight": torch.full((64, 4), float("inf"))},
                   r"lora_unet_proj_out.lora_up.weight holds NaN or infinite values"),
    "alpha_vector": (InputError, {**PROJ_OUT, "lora_unet_proj_out.alpha": ones(4)},
                     r"lora_unet_proj_out.alpha must be a single number, not shape \[4\]"),
    "huge_rank": (InputError, {"lora_unet_proj_out.lora_down.weight": ones(21, 20),
                               "lora_unet_proj_out.lora_up.weight": ones(64, 21)},
                  r"layer proj_out has rank 21, more than the layer's size allows \(20\)"),
    "int_weights": (InputError, {**PROJ_OUT, "lora_unet_proj_out.lora_down.weight": ones(4, 20, dtype=torch.int32)},
                    r"lora_unet_proj_out.lora_down.weight has dtype int32; LoRA matrices must be floating point"),
    "no_up": (InputError, {"lora_unet_proj_out.lora_down.weight": ones(4, 20), "lora_unet_proj_out.alpha": ones(1)},
              r"layer proj_out has no up matrix \(only lora_unet_proj_out.alpha, lora_unet_proj_out.lora_down"),
    "same_twice": (InputError, {**PROJ_OUT, "transformer.proj_out.lora_A.weight": ones(4, 20)},
                   r"holds two down tensors for layer proj_out: lora_unet_proj_out.lora_down.weight and "
                   r"transformer.proj_out.lora_A.weight"),
    "fused_and_split": (InputError, {"double_blocks.0.img_attn_qkv.lora_A.weight": ones(4, 20),
                                     "double_blocks.0.img_attn_qkv.lora_B.weight": ones(60, 4),
                                     "transformer_blocks.0.attn.to_k.lora_A.weight": ones(4, 20),
                                     "transformer_blocks.0.attn.to_k.lora_B.weight": ones(20, 4)},
                        r"layers double_blocks.0.img_attn_qkv and transformer_blocks.0.attn.to_k both change "
                        r"transformer_blocks.0.attn.to_k"),
    "loha": (InputError, {"lora_unet_proj_out.hada_w1_a": ones(4, 20), "lora_unet_proj_out.hada_w1_b": ones(4, 20)},
             r" is a LyCORIS LoHa file \(lora_unet_proj_out.hada_w1_a\); only plain LoRA"),
    "dora": (InputError, {**PROJ_OUT, "lora_unet_proj_out.dora_scale": ones(1, 20)}, r"is a DoRA file"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_files_name_the_file_and_the_problem(clean, tmp_path, name):
    error, tensors, message = REFUSED[name]
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(error, match=f"^LoRA {name}.safetensors.*{message}"):
        apply_loras(clean, [(path, 1.0)])
    assert lora.loaded_adapters(clean) == []


def raw_safetensors(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize("content, message", [
    (b"", "cannot be read as a safetensors file"),
    (b"\x00" * 3, "cannot be read as a safetensors file"),
    ((1 << 62).to_bytes(8, "little") + b"{}", "cannot be read as a safetensors file"),
    (raw_safetensors({"__metadata__": {"format": 5}, "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                     b"\0" * 4), "cannot be read as a safetensors file: .*invalid type: integer"),
    (raw_safetensors({"t": {"dtype": "F32", "shape": [1 << 40, 1 << 20], "data_offsets": [0, 4]}}, b"\0" * 4),
     "cannot be read as a safetensors file"),
    (raw_safetensors({"__metadata__": {"a": "b"}}), "holds no tensors"),
])
def test_malformed_files_are_input_errors(clean, tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"^LoRA bad.safetensors {message}"):
        apply_loras(clean, [(path, 1.0)])


@pytest.mark.parametrize("settings, message", [
    ("{not json", "its lora_adapter_metadata is not valid JSON"),
    ("[1, 2]", "its lora_adapter_metadata is not a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "its lora_adapter_metadata is not valid JSON"),
    ('{"transformer.lora_alpha": "big"}', "lora_alpha in its adapter settings must be a finite number"),
    ('{"transformer.lora_alpha": NaN}', "lora_alpha in its adapter settings must be a finite number"),
    ('{"transformer.lora_alpha": 8, "transformer.use_dora": true}', "DoRA adapters are not supported"),
    ('{"transformer.lora_alpha": 8, "transformer.alpha_pattern": {"(a+)+$": 4}}',
     r"alpha_pattern entry '\(a\+\)\+\$' is not supported"),
    ('{"transformer.lora_alpha": 8, "transformer.alpha_pattern": [1]}', "alpha_pattern in its adapter settings"),
])
def test_bad_adapter_metadata_is_an_input_error(clean, tmp_path, settings, message):
    path = tmp_path / "meta.safetensors"
    save_file(write_peft(intended_lora(clean.transformer, seed=1, targets={"proj_out"})), str(path),
              metadata={"lora_adapter_metadata": settings})
    with pytest.raises(InputError, match=f"^LoRA meta.safetensors: {message}"):
        apply_loras(clean, [(path, 1.0)])


def test_too_many_tensors(clean, tmp_path, monkeypatch):
    from framepack.models import lora_formats

    monkeypatch.setattr(lora_formats, "MAX_TENSORS", 2)
    path = tmp_path / "many.safetensors"
    save_file({**PROJ_OUT, "lora_unet_proj_out.alpha": ones(1)}, str(path))
    with pytest.raises(InputError, match="LoRA many.safetensors holds 3 tensors, more than the 2"):
        apply_loras(clean, [(path, 1.0)])


def test_a_bad_second_file_loads_nothing(clean, tmp_path):
    """Every file is checked before any is injected: no half-applied set of LoRAs."""
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_file(PROJ_OUT, str(good))
    save_file({"lora_unet_proj_out.lora_down.weight": ones(4, 21), "lora_unet_proj_out.lora_up.weight": ones(64, 4)},
              str(bad))
    with pytest.raises(ModelError, match="LoRA bad.safetensors: layer proj_out"):
        apply_loras(clean, [(good, 1.0), (bad, 1.0)])
    assert lora.loaded_adapters(clean) == []
    before = apply_loras(clean, [(good, 1.0)])  # a failing new list leaves the loaded one as it was
    with pytest.raises(ModelError, match="LoRA bad.safetensors"):
        apply_loras(clean, [(bad, 1.0)])
    assert lora.loaded_adapters(clean) == [before[0].name]


# ----------------------------------------------------------------------------- against diffusers


def test_original_names_agree_with_diffusers_converter_at_full_width():
    """diffusers converts original-HunyuanVideo LoRAs for its HunyuanVideo pipeline, at the real
    width only (3072 is written into it). Ours must give the same changes on a full-width FramePack
    layout (built on the meta device: shapes, no weights). Left out: the two layers diffusers' own
    converter splits wrongly for LoRA (it chunks lora_A of the refiner's fused qkv and of the final
    modulation by rows, which only makes sense for lora_B); the tiny-model tests above cover them."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel
    from diffusers.loaders import lora_conversion_utils

    from framepack.models.lora_formats import convert_lora, layout_of

    diffusers_convert = getattr(lora_conversion_utils, "_convert_hunyuan_video_lora_to_diffusers", None)
    if diffusers_convert is None:
        pytest.skip("this diffusers has no HunyuanVideo LoRA converter")
    with torch.device("meta"):
        model = HunyuanVideoFramepackTransformer3DModel(num_layers=1, num_single_layers=1, num_refiner_layers=1,
                                                        has_image_proj=True, has_clean_x_embedder=True)
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(3)
    tensors = {}
    for original, parts in original_names().items():
        if original.endswith(("self_attn_qkv", "final_layer.adaLN_modulation.1")):
            continue
        first = modules[parts[0]].weight
        rows = sum(modules[part].weight.shape[0] for part in parts)
        tensors[f"diffusion_model.{original}.lora_A.weight"] = torch.randn(1, *first.shape[1:], generator=generator)
        tensors[f"diffusion_model.{original}.lora_B.weight"] = torch.randn(rows, 1, *(1,) * (first.ndim - 2),
                                                                           generator=generator)
    theirs = diffusers_convert(dict(tensors))
    ours = convert_lora(tensors, layout_of(model), "full.safetensors").state_dict
    assert sorted(ours) == sorted(theirs) and len(ours) == 2 * 37  # 37 transformer layers
    for key in ours:
        if key.endswith("lora_A.weight"):
            up = key.replace("lora_A", "lora_B")
            assert torch.equal(delta_of((ours[key], ours[up])), delta_of((theirs[key], theirs[up]))), key


def test_alpha_overflow_and_long_keys_are_refused_briefly(clean, tmp_path):
    path = tmp_path / "loud.safetensors"
    half = {key: value.half() for key, value in PROJ_OUT.items()}
    save_file({**half, "lora_unet_proj_out.alpha": torch.tensor(1e7)}, str(path))
    with pytest.raises(InputError, match=r"layer proj_out overflows float16 when scaled by 2.5e\+06"):
        apply_loras(clean, [(path, 1.0)])
    path = tmp_path / "long.safetensors"
    save_file({**PROJ_OUT, "x" * 100_000 + ".lora_A.weight": ones(1)}, str(path))
    with pytest.raises(ModelError) as error:
        apply_loras(clean, [(path, 1.0)])
    assert len(str(error.value)) < 400 and "xxx..." in str(error.value)


def test_alpha_pattern_first_match_wins_like_peft(clean, tmp_path):
    """PEFT takes the first alpha_pattern entry that names the layer or a dotted suffix of it."""
    transformer = clean.transformer
    targets = {"proj_out", "single_transformer_blocks.0.proj_out", "transformer_blocks.0.attn.to_q"}
    intended = intended_lora(transformer, seed=4, targets=targets)
    patterns = {"attn.to_q": 3.0, "transformer_blocks.0.attn.to_q": 5.0, "^proj_out": 6.0, "0.proj_out": 7.0}
    alphas = {"proj_out": 6.0, "single_transformer_blocks.0.proj_out": 7.0, "transformer_blocks.0.attn.to_q": 3.0}
    stored = {name: (down, up * down.shape[0] / alphas[name]) for name, (down, up) in intended.items()}
    metadata = {"lora_adapter_metadata": json.dumps({"transformer.lora_alpha": 1,
                                                     "transformer.alpha_pattern": patterns})}
    save_file(write_peft(stored), str(tmp_path / "patterns.safetensors"), metadata=metadata)
    apply_loras(clean, [(tmp_path / "patterns.safetensors", 1.0)])
    assert_deltas(transformer, intended)
