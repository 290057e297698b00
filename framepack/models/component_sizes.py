"""What each FramePack component holds, counted from its config without any weights.

The released component configs ship in `framepack/models/configs/` (see its README for where
each came from). Nothing is downloaded and no weights exist: each component is built once per
process on PyTorch's meta device to count its parameters exactly, split into what a weight
quantizer replaces (the `nn.Linear` weights) and what stays in the float dtype (embeddings,
convolutions, norms, biases). The shipped configs are counted ahead of time (`configs/sizes.json`,
`write_shipped_sizes`), so a live plan builds nothing.

**Weights.** bf16/fp16 = 2 bytes and fp32 = 4 bytes per parameter. Quantized Linear weights
(transformer and Llama text encoder, as `framepack.models.quantize` does it): int8 and fp8 store 1
byte per weight plus one scale per output row; int4 stores half a byte plus a scale and a shift
per group of 128 (optimum-quanto's layout, the larger of quanto's and NNCF's). The rest of the
model stays in the compute dtype.

The resource planner (`framepack.models.resources`) turns these counts into bytes per stage.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from framepack.errors import InputError

CONFIG_DIR = Path(__file__).with_name("configs")
SIZES_PATH = CONFIG_DIR / "sizes.json"

ROLES = ("transformer", "text_encoder", "text_encoder_2", "image_encoder", "vae")
CONFIG_FILES = {
    "transformer:original": "transformer_FramePackI2V_HY.json",
    "transformer:f1": "transformer_FramePack_F1_I2V_HY_20250503.json",
    "text_encoder": "text_encoder_HunyuanVideo.json",
    "text_encoder_2": "text_encoder_2_HunyuanVideo.json",
    "image_encoder": "image_encoder_flux_redux_bfl.json",
    "vae": "vae_HunyuanVideo.json",
}
INT4_GROUP = 128


def load_config(role: str, variant: str = "original") -> dict:
    """The shipped config of `role` (the transformer's depends on `variant`)."""
    key = f"transformer:{variant}" if role == "transformer" else role
    if key not in CONFIG_FILES:
        raise InputError(f"no shipped config for {role!r} (variant {variant!r})")
    return json.loads((CONFIG_DIR / CONFIG_FILES[key]).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ComponentSize:
    """What a component holds, counted on a meta-device build of its config."""

    role: str
    parameters: int
    linear_weights: int  # elements of nn.Linear weights: what a weight quantizer replaces
    linear_rows: int  # their output rows (one scale each for int8/fp8)
    largest_leaf: int  # parameters of the largest leaf module (the unit of leaf offloading)
    buffer_bytes: int

    def weight_bytes(self, float_bytes: int, quantization: str = "none") -> int:
        """Bytes on the device/RAM in `float_bytes` per parameter, Linear weights quantized."""
        if quantization == "none":
            return self.parameters * float_bytes + self.buffer_bytes
        other = (self.parameters - self.linear_weights) * float_bytes
        if quantization == "int4":
            groups = math.ceil(self.linear_weights / INT4_GROUP)
            linear = math.ceil(self.linear_weights / 2) + groups * 2 * float_bytes
        else:  # int8, fp8: 1 byte per weight + a per-row scale
            linear = self.linear_weights + self.linear_rows * float_bytes
        return other + linear + self.buffer_bytes


def _build_kwargs(role: str, config: Mapping[str, Any]) -> dict:
    """The config without the hub's bookkeeping keys."""
    skip = {"architectures", "model_type", "torch_dtype", "transformers_version", "dtype"}
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in skip}


def build_on_meta(role: str, config: Mapping[str, Any]):
    """The component module with every tensor on the meta device (no memory, no weights)."""
    import torch

    kwargs = _build_kwargs(role, config)
    with torch.device("meta"):
        if role == "transformer":
            from diffusers import HunyuanVideoFramepackTransformer3DModel

            return HunyuanVideoFramepackTransformer3DModel(**kwargs)
        if role == "vae":
            from diffusers import AutoencoderKLHunyuanVideo

            return AutoencoderKLHunyuanVideo(**kwargs)
        from transformers import (CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel, SiglipVisionConfig,
                                  SiglipVisionModel)

        classes = {"text_encoder": (LlamaModel, LlamaConfig), "text_encoder_2": (CLIPTextModel, CLIPTextConfig),
                   "image_encoder": (SiglipVisionModel, SiglipVisionConfig)}
        if role not in classes:
            raise InputError(f"unknown component role {role!r}; known: {', '.join(ROLES)}")
        model_cls, config_cls = classes[role]
        return model_cls(config_cls(**kwargs))


def measure_module(role: str, module) -> ComponentSize:
    """Count a built module (meta or real) the way `ComponentSize` describes it."""
    import torch

    linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    leaves = [m for m in module.modules() if not list(m.children())]
    return ComponentSize(
        role=role,
        parameters=sum(p.numel() for p in module.parameters()),
        linear_weights=sum(m.weight.numel() for m in linear),
        linear_rows=sum(m.weight.shape[0] for m in linear),
        largest_leaf=max((sum(p.numel() for p in m.parameters(recurse=False)) for m in leaves), default=0),
        buffer_bytes=sum(b.numel() * b.element_size() for b in module.buffers()),
    )


@lru_cache(maxsize=32)
def _size_from_json(role: str, config_json: str) -> ComponentSize:
    known = _shipped_sizes().get(f"{role}:{_digest(config_json)}")
    if known is not None:
        return ComponentSize(role=role, **known)
    return measure_module(role, build_on_meta(role, json.loads(config_json)))


def _digest(config_json: str) -> str:
    return hashlib.sha256(config_json.encode("utf-8")).hexdigest()[:16]


@lru_cache(maxsize=1)
def _shipped_sizes() -> dict[str, dict]:
    """Counts of the shipped configs, measured once (`write_shipped_sizes`): building the 13 B
    transformer and the 8 B Llama on the meta device takes seconds, too slow for a live plan.
    tests/test_resources.py checks every entry against a fresh meta build."""
    try:
        return json.loads(SIZES_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, default=list)


def component_size(role: str, config: Mapping[str, Any]) -> ComponentSize:
    """Exact counts of `role` built from `config` (cached per config; shipped configs pre-counted)."""
    return _size_from_json(role, _config_json(config))


def measure_shipped_sizes() -> dict[str, dict]:
    """Fresh meta-device counts of every shipped config, keyed as `sizes.json` keys them."""
    table = {}
    for key in sorted(CONFIG_FILES):
        role, _, variant = key.partition(":")
        config_json = _config_json(load_config(role, variant or "original"))
        size = asdict(measure_module(role, build_on_meta(role, json.loads(config_json))))
        size.pop("role")
        table[f"{role}:{_digest(config_json)}"] = size
    return table


def write_shipped_sizes() -> Path:
    """Recount the shipped configs into `configs/sizes.json` (run after changing a config):
    `python -c "from framepack.models.component_sizes import write_shipped_sizes; write_shipped_sizes()"`."""
    SIZES_PATH.write_text(json.dumps(measure_shipped_sizes(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _shipped_sizes.cache_clear()
    _size_from_json.cache_clear()
    return SIZES_PATH


def recipe_configs(recipe, cache_dir: str | None = None) -> dict[str, dict]:
    """The `config.json` of each planned role of a `Recipe` that is on disk already (a local
    folder or the hub cache); roles not found keep the shipped config. Nothing is downloaded."""
    found: dict[str, dict] = {}
    for role in ROLES:
        path = _config_path(recipe[role], cache_dir)
        if path is None:
            continue
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found[role] = data
    return found


def _config_path(source, cache_dir: str | None) -> str | None:
    if source.is_local():
        path = source.path() / "config.json"
        return str(path) if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        name = f"{source.subfolder}/config.json" if source.subfolder else "config.json"
        hit = try_to_load_from_cache(source.source, name, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - no cache, bad id: plan with the shipped config
        return None
    return hit if isinstance(hit, str) else None
