"""LoRA files in the layouts trainers save them, converted to diffusers' PEFT layout.

`read_lora` turns one `.safetensors` LoRA for HunyuanVideo or FramePack into the state dict
diffusers' `load_lora_weights` takes (`transformer.<module>.lora_A.weight` [rank, in] and
`lora_B.weight` [out, rank], scale 1), for the transformer it will be loaded into.

Formats (any mix of prefix and naming, detected per key):

- prefixes: `lora_unet_` (kohya sd-scripts / musubi-tuner: module path with `_` for `.`),
  `diffusion_model.` (ComfyUI), `transformer.` (diffusers), `base_model.model.` (PEFT) or none;
- tensors: `lora_down` / `lora_up` (+ `.alpha`: scale alpha/rank, 0 meaning rank) or
  `lora_A` / `lora_B` (+ optional `lora_B.bias`; scale 1, or PEFT's `lora_alpha`/`r` from the
  file's `lora_adapter_metadata` or a PEFT folder's `adapter_config.json`);
- module names: the diffusers FramePack names (`transformer_blocks.0.attn.to_q`,
  `clean_x_embedder.proj`, `image_projection.up`, ...), which musubi-tuner's FramePack LoRAs
  use too, or the original HunyuanVideo names (`double_blocks.0.img_attn_qkv`,
  `single_blocks.0.linear1`, `txt_in....`, `final_layer....`), whose fused layers are split
  here: a fused q/k/v (or q/k/v/mlp) LoRA shares its down matrix and splits its up matrix by
  output rows; the final layer's shift/scale halves swap order.

Names are looked up in a table built from the transformer's own modules, with `.` and `_`
treated alike, so kohya names (and musubi's mis-dotted conversions) resolve without guessing.
Everything is checked before anything is loaded: unknown keys, shapes, ranks, alphas, dtypes,
non-finite values; problems are `InputError` (a broken file) or `ModelError` (a LoRA for another
model), each naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from framepack.errors import InputError, ModelError

MAX_TENSORS = 20_000  # a full HunyuanVideo LoRA on every Linear has about 1,000
MAX_CONFIG_BYTES = 1 << 20
PREFIXES = ("lora_unet_", "lora_transformer_", "model.diffusion_model.", "diffusion_model.", "transformer.",
            "base_model.model.")
_KINDS = ((".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha"),
          (".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora_B.bias", "bias"))
_UNSUPPORTED = (("hada_", "LyCORIS LoHa"), ("lokr_", "LyCORIS LoKr"), ("dora_scale", "DoRA"),
                ("lora_magnitude_vector", "DoRA"), (".diff_b", "full-weight difference"),
                (".diff", "full-weight difference"))
_FORMAT_NAMES = {"lora_unet_": "kohya/musubi", "lora_transformer_": "kohya", "diffusion_model.": "ComfyUI",
                 "model.diffusion_model.": "ComfyUI", "transformer.": "diffusers", "base_model.model.": "PEFT",
                 "": "unprefixed"}
_STORED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------- the transformer's layers


@dataclass(frozen=True)
class Layer:
    """A LoRA-able layer of the transformer: Linear (kernel ()) or ConvNd (kernel sizes)."""

    in_features: int
    out_features: int
    kernel: tuple[int, ...] = ()

    @property
    def fan_in(self) -> int:
        return self.in_features * math.prod(self.kernel)


@dataclass(frozen=True)
class Route:
    """One transformer layer fed by rows of a (possibly fused) source layer's output."""

    module: str
    rows: tuple[tuple[int, int], ...]  # (start, stop) ranges of the source's output rows, in order


@dataclass
class Layout:
    """What a LoRA for this transformer may name: its own layers and the original HunyuanVideo ones."""

    layers: dict[str, Layer]
    sources: dict[str, tuple[Route, ...]]  # source layer name -> the layers it feeds
    lookup: dict[str, str] = field(default_factory=dict)  # normalized name -> source layer name
    original: frozenset[str] = frozenset()  # source names in the original HunyuanVideo naming

    def resolve(self, name: str) -> str | None:
        return name if name in self.sources else self.lookup.get(_normalized(name))


def _clip(text: str, limit: int = 120) -> str:
    """A key as quoted in a message: file keys can be any length."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _normalized(name: str) -> str:
    return name.replace(".", "_").lower()


def _layer_of(module: torch.nn.Module) -> Layer | None:
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module  # PEFT-wrapped
    if isinstance(base, torch.nn.Linear):
        return Layer(base.in_features, base.out_features)
    if isinstance(base, (torch.nn.Conv2d, torch.nn.Conv3d)):
        return Layer(base.in_channels, base.out_channels, tuple(base.kernel_size))
    return None


def transformer_layers(transformer: torch.nn.Module) -> dict[str, Layer]:
    """Name -> shape of every Linear/Conv layer, PEFT's wrappers seen through."""
    layers: dict[str, Layer] = {}
    for name, module in transformer.named_modules():
        if not name or any(part in name.split(".") for part in ("base_layer", "lora_A", "lora_B")):
            continue
        layer = _layer_of(module)
        if layer is not None:
            layers[name] = layer
    return layers


# Original HunyuanVideo layer -> diffusers layers (the fused ones list each part in row order).
_DOUBLE = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn_proj": ("attn.to_out.0",),
    "img_mlp.fc1": ("ff.net.0.proj",), "img_mlp.fc2": ("ff.net.2",),
    "img_mod.linear": ("norm1.linear",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",),
    "txt_mlp.fc1": ("ff_context.net.0.proj",), "txt_mlp.fc2": ("ff_context.net.2",),
    "txt_mod.linear": ("norm1_context.linear",),
}
_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation.linear": ("norm.linear",),
}
_REFINER = {
    "self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "self_attn_proj": ("attn.to_out.0",),
    "mlp.fc1": ("ff.net.0.proj",), "mlp.fc2": ("ff.net.2",),
    "adaLN_modulation.1": ("norm_out.linear",),
}
_GLOBAL = {
    "img_in.proj": "x_embedder.proj",
    "txt_in.input_embedder": "context_embedder.proj_in",
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
_FINAL_MODULATION = ("final_layer.adaLN_modulation.1", "norm_out.linear")  # (shift, scale) vs (scale, shift)


def _stacked(layers: Mapping[str, Layer], modules: tuple[str, ...]) -> tuple[Route, ...] | None:
    """Routes for a source whose output rows are `modules`' outputs one after the other."""
    if not all(module in layers for module in modules):
        return None
    routes, start = [], 0
    for module in modules:
        stop = start + layers[module].out_features
        routes.append(Route(module, ((start, stop),)))
        start = stop
    return tuple(routes)


def _original_sources(layers: Mapping[str, Layer]) -> dict[str, tuple[Route, ...]]:
    groups = (("double_blocks.{i}.", "transformer_blocks.{i}.", _DOUBLE),
              ("single_blocks.{i}.", "single_transformer_blocks.{i}.", _SINGLE),
              ("txt_in.individual_token_refiner.blocks.{i}.", "context_embedder.token_refiner.refiner_blocks.{i}.",
               _REFINER))
    sources: dict[str, tuple[Route, ...]] = {}
    for original_prefix, ours_prefix, names in groups:
        index = 0
        while any(name.startswith(ours_prefix.format(i=index)) for name in layers):
            for original, ours in names.items():
                routes = _stacked(layers, tuple(ours_prefix.format(i=index) + part for part in ours))
                if routes:
                    sources[original_prefix.format(i=index) + original] = routes
            index += 1
    for original, ours in _GLOBAL.items():
        routes = _stacked(layers, (ours,))
        if routes:
            sources[original] = routes
    original, ours = _FINAL_MODULATION
    if ours in layers and layers[ours].out_features % 2 == 0:
        half = layers[ours].out_features // 2
        sources[original] = (Route(ours, ((half, 2 * half), (0, half))),)
    return sources


def layout_of(transformer: torch.nn.Module) -> Layout:
    layers = transformer_layers(transformer)
    own = {name: (Route(name, ((0, layer.out_features),)),) for name, layer in layers.items()}
    original = {name: routes for name, routes in _original_sources(layers).items() if name not in own}
    sources = {**own, **original}
    lookup: dict[str, str] = {}
    clashes: set[str] = set()
    for name in sources:
        key = _normalized(name)
        if key in lookup:
            clashes.add(key)
        lookup[key] = name
    for key in clashes:  # two names that differ only in `.`/`_`/case: exact spelling only
        del lookup[key]
    return Layout(layers, sources, lookup, frozenset(original))


# ----------------------------------------------------------------------------- reading the file


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())
            if len(keys) > MAX_TENSORS:
                raise InputError(f"LoRA {path.name} holds {len(keys)} tensors, more than the {MAX_TENSORS} "
                                 "a LoRA for this model can have")
            tensors = {key: handle.get_tensor(key) for key in keys}
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed header, truncated data, unknown dtype...
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"LoRA {path.name} cannot be read as a safetensors file: {detail}") from None
    if not tensors:
        raise InputError(f"LoRA {path.name} holds no tensors")
    return tensors, metadata


def _peft_config(path: Path, metadata: Mapping[str, str]) -> dict | None:
    """PEFT's LoRA settings when the file carries them: diffusers' `lora_adapter_metadata`, or
    the `adapter_config.json` beside a PEFT `adapter_model.safetensors`."""
    raw, where = metadata.get("lora_adapter_metadata"), "its lora_adapter_metadata"
    sidecar = path.with_name("adapter_config.json")
    if raw is None and path.name == "adapter_model.safetensors" and sidecar.is_file():
        try:
            if sidecar.stat().st_size > MAX_CONFIG_BYTES:
                raise InputError(f"LoRA {path.name}: {sidecar.name} is larger than {MAX_CONFIG_BYTES} bytes")
            raw, where = sidecar.read_text(encoding="utf-8", errors="replace"), sidecar.name
        except OSError as exc:
            raise InputError(f"LoRA {path.name}: {sidecar.name} cannot be read ({exc.strerror or exc})") from None
    if raw is None:
        return None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        raise InputError(f"LoRA {path.name}: {where} is not valid JSON") from None
    if not isinstance(config, dict):
        raise InputError(f"LoRA {path.name}: {where} is not a JSON object")
    return {key.removeprefix("transformer."): value for key, value in config.items() if isinstance(key, str)}


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _peft_scaler(config: dict | None, file: str) -> Callable[[str, int], float]:
    """(source layer, rank) -> PEFT's scale lora_alpha/r (or /sqrt(r) with rsLoRA); 1 without a config."""
    if config is None:
        return lambda name, rank: 1.0
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else repr(config.get("peft_type"))
        raise InputError(f"LoRA {file}: {kind} adapters are not supported; only LoRA")
    alpha = _finite_number(config.get("lora_alpha", 8))  # PEFT's LoraConfig default
    if alpha is None:
        raise InputError(f"LoRA {file}: lora_alpha in its adapter settings must be a finite number")
    patterns = config.get("alpha_pattern") or {}
    if not isinstance(patterns, dict):
        raise InputError(f"LoRA {file}: alpha_pattern in its adapter settings must be an object")
    alphas: dict[tuple[str, bool], tuple[int, float]] = {}  # (name, pinned to the start) -> (order, alpha)
    for order, (pattern, value) in enumerate(patterns.items()):
        text = str(pattern)
        name = text.removeprefix("^").removeprefix("transformer.")
        number = _finite_number(value)
        if number is None or not name or re.search(r"[\\*+?()\[\]{}|$^]", name):
            raise InputError(f"LoRA {file}: alpha_pattern entry {_clip(text)!r} is not supported "
                             "(plain layer names with numbers only)")
        alphas.setdefault((name, text.startswith("^")), (order, number))
    rslora = bool(config.get("use_rslora"))

    def scale(name: str, rank: int) -> float:
        # PEFT's rule: the first pattern that is the layer's name or a dotted suffix of it (`^`: the
        # whole name only); looked up per suffix, so the cost does not grow with the pattern count
        parts = name.split(".")
        candidates = [(name, True)] + [(".".join(parts[i:]), False) for i in range(len(parts))]
        found = [alphas[key] for key in candidates if key in alphas]
        value = min(found)[1] if found else alpha
        return value / (math.sqrt(rank) if rslora else rank)

    return scale


# ----------------------------------------------------------------------------- keys -> layers


def _split_key(key: str) -> tuple[str, str] | None:
    """`prefix.module.lora_down.weight` -> (`prefix.module`, `down`); None for other tensors."""
    for suffix, kind in _KINDS:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], kind
    return None


def _resolve(layout: Layout, name: str) -> tuple[str, str] | None:
    """(source layer, prefix) for a key's module part, trying it as written, then without a prefix."""
    found = layout.resolve(name)
    if found is not None:
        return found, ""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            found = layout.resolve(name[len(prefix):])
            if found is not None:
                return found, prefix
    return None


@dataclass
class _Entry:
    """The tensors a file holds for one source layer, with the keys they came from."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # as quoted in messages


@dataclass
class ConvertedLora:
    state_dict: dict[str, torch.Tensor]  # diffusers layout, `transformer.` prefix, scale folded in
    layers: int  # source layers in the file
    targets: int  # transformer layers it changes
    format: str  # e.g. "kohya/musubi keys, original HunyuanVideo names"


def _unsupported_kind(keys: list[str]) -> str | None:
    for key in keys:
        for marker, kind in _UNSUPPORTED:
            if marker in key:
                return kind
    return None


def _match_keys(tensors: Mapping[str, torch.Tensor], layout: Layout, file: str
                ) -> tuple[dict[str, _Entry], set[str]]:
    entries: dict[str, _Entry] = {}
    prefixes: set[str] = set()
    unmatched: list[str] = []
    for key in tensors:
        split = _split_key(key)
        resolved = _resolve(layout, split[0]) if split else None
        if resolved is None:
            unmatched.append(key)
            continue
        (source, prefix), kind = resolved, split[1]
        entry = entries.setdefault(source, _Entry())
        if kind in entry.tensors:
            raise InputError(f"LoRA {file} holds two {kind} tensors for layer {source}: "
                             f"{entry.keys[kind]} and {_clip(key)}")
        entry.tensors[kind], entry.keys[kind] = tensors[key], _clip(key)
        prefixes.add(prefix)
    if unmatched:
        _refuse_unmatched(file, len(tensors), unmatched)
    return entries, prefixes


def _refuse_unmatched(file: str, total: int, unmatched: list[str]) -> None:
    kind = _unsupported_kind(unmatched)
    if kind:
        raise InputError(f"LoRA {file} is a {kind} file ({_clip(unmatched[0])}); only plain LoRA (down/up "
                         "matrices) can be loaded")
    shown = ", ".join(_clip(key) for key in sorted(unmatched)[:3]) + (f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else "")
    matched = total - len(unmatched)
    if matched == 0:
        raise ModelError(f"LoRA {file}: 0 of its {total} keys match the FramePack transformer (not matched: "
                         f"{shown}); is it a LoRA for another model?")
    raise ModelError(f"LoRA {file}: only {matched} of its {total} keys match the FramePack transformer "
                     f"(not matched: {shown}); is it for another model or model size?")


# ----------------------------------------------------------------------------- checks and conversion


def _as_float(tensor: Any, key: str, file: str, integers: bool = False) -> torch.Tensor:
    """The tensor in float32, refusing non-float dtypes (integers only where allowed) and NaN/inf."""
    number = tensor.is_floating_point() or (integers and tensor.dtype in (
        torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8))
    if not number:
        raise InputError(f"LoRA {file}: {key} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                         "LoRA matrices must be floating point")
    value = tensor.to(torch.float32)
    if not bool(torch.isfinite(value).all()):
        raise InputError(f"LoRA {file}: {key} holds NaN or infinite values")
    return value


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(size) for size in tensor.shape) + "]"


def _check_shapes(entry: _Entry, layer: Layer, rows: int, source: str, file: str) -> int:
    """The rank of a (down, up) pair for `layer` (`rows` = the source's output size), else an error."""
    down, up = entry.tensors["down"], entry.tensors["up"]
    rank = down.shape[0] if down.ndim else 0
    ones = (1,) * len(layer.kernel)
    if tuple(down.shape) != (rank, layer.in_features, *layer.kernel) or tuple(up.shape) != (rows, rank, *ones) \
            or rank < 1:
        want_down = ", ".join(map(str, ("rank", layer.in_features, *layer.kernel)))
        want_up = ", ".join(map(str, (rows, "rank", *ones)))
        raise ModelError(f"LoRA {file}: layer {source} has down {_shape(down)} and up {_shape(up)}; this "
                         f"transformer needs [{want_down}] and [{want_up}] (a LoRA for another model size?)")
    limit = min(layer.fan_in, rows)
    if rank > limit:
        raise InputError(f"LoRA {file}: layer {source} has rank {rank}, more than the layer's size allows ({limit})")
    return rank


def _alpha_scale(entry: _Entry, rank: int, file: str) -> float | None:
    if "alpha" not in entry.tensors:
        return None
    key, alpha = entry.keys["alpha"], entry.tensors["alpha"]
    if alpha.numel() != 1:
        raise InputError(f"LoRA {file}: {key} must be a single number, not shape {_shape(alpha)}")
    value = float(_as_float(alpha, key, file, integers=True).reshape(()))  # musubi saves int alphas
    return 1.0 if value == 0 else value / rank  # kohya: alpha 0 (or none) means alpha = rank


def _routed(tensor: torch.Tensor, rows: tuple[tuple[int, int], ...]) -> torch.Tensor:
    return torch.cat([tensor[start:stop] for start, stop in rows]) if len(rows) > 1 else \
        tensor[rows[0][0]:rows[0][1]]


def _convert_entry(source: str, entry: _Entry, layout: Layout, scaler: Callable[[str, int], float],
                   file: str, out: dict[str, torch.Tensor]) -> None:
    routes = layout.sources[source]
    for kind in ("down", "up"):
        if kind not in entry.tensors:
            have = ", ".join(entry.keys.values())
            raise InputError(f"LoRA {file}: layer {source} has no {kind} matrix (only {have})")
    rows = sum(stop - start for route in routes for start, stop in route.rows)
    rank = _check_shapes(entry, layout.layers[routes[0].module], rows, source, file)
    scale = _alpha_scale(entry, rank, file)
    scale = scaler(source, rank) if scale is None else scale
    down = _as_float(entry.tensors["down"], entry.keys["down"], file)
    up = _as_float(entry.tensors["up"], entry.keys["up"], file) * scale
    bias = entry.tensors.get("bias")
    if bias is not None:
        if tuple(bias.shape) != (rows,):
            raise ModelError(f"LoRA {file}: {entry.keys['bias']} has shape {_shape(bias)}; expected [{rows}]")
        bias = _as_float(bias, entry.keys["bias"], file) * scale
    dtype = entry.tensors["up"].dtype if entry.tensors["up"].dtype in _STORED_DTYPES else torch.float32
    for route in routes:
        part = _routed(up, route.rows)
        used = part.flatten(1).abs().amax(dim=0) > 0  # a fused LoRA split per layer: drop rank it does not use
        if not bool(used.any()):
            used[0] = True  # an all-zero part still gets its (zero) adapter
        name = f"transformer.{route.module}"
        out[f"{name}.lora_A.weight"] = down[used].to(dtype).contiguous()
        out[f"{name}.lora_B.weight"] = part[:, used].to(dtype).contiguous()
        if not bool(torch.isfinite(out[f"{name}.lora_B.weight"]).all()):
            raise InputError(f"LoRA {file}: layer {source} overflows {str(dtype).removeprefix('torch.')} "
                             f"when scaled by {scale:g} (its alpha / rank)")
        if bias is not None:
            out[f"{name}.lora_B.bias"] = _routed(bias, route.rows).to(dtype).contiguous()


def _describe(prefixes: set[str], entries: Mapping[str, _Entry], layout: Layout) -> str:
    formats = sorted({_FORMAT_NAMES[prefix] for prefix in prefixes})
    naming = ("original HunyuanVideo names" if all(name in layout.original for name in entries) else
              "diffusers names" if not any(name in layout.original for name in entries) else
              "original HunyuanVideo and diffusers names")
    return f"{' + '.join(formats)} keys, {naming}"


def convert_lora(tensors: Mapping[str, torch.Tensor], layout: Layout, file: str,
                 peft_config: dict | None = None) -> ConvertedLora:
    """A LoRA state dict in any supported layout -> diffusers' layout for `layout`'s transformer."""
    entries, prefixes = _match_keys(tensors, layout, file)
    scaler = _peft_scaler(peft_config, file)
    owners: dict[str, str] = {}
    for source in entries:
        for route in layout.sources[source]:
            other = owners.setdefault(route.module, source)
            if other != source:
                raise InputError(f"LoRA {file}: layers {other} and {source} both change {route.module}; "
                                 "a file should name each layer once")
    state: dict[str, torch.Tensor] = {}
    for source, entry in entries.items():
        _convert_entry(source, entry, layout, scaler, file, state)
    return ConvertedLora(state, len(entries), len(owners), _describe(prefixes, entries, layout))


def read_lora(path: str | os.PathLike, transformer: torch.nn.Module) -> ConvertedLora:
    """Read and convert one LoRA file for `transformer` (see the module docstring)."""
    file = Path(path)
    tensors, metadata = _load_tensors(file)
    return convert_lora(tensors, layout_of(transformer), file.name, _peft_config(file, metadata))
