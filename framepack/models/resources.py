"""Plan a FramePack run's resources before it starts: peak VRAM, peak RAM, disk and time.

Everything here is arithmetic on plain inputs (numbers and strings) plus the released component
configs in `framepack/models/configs/` (see its README for where each came from). Nothing is
downloaded and no weights exist: each component is built once per process on PyTorch's meta
device to count its parameters exactly, split into what a weight quantizer replaces (the
`nn.Linear` weights) and what stays in the float dtype (embeddings, convolutions, norms, biases).

**Weights.** bf16/fp16 = 2 bytes and fp32 = 4 bytes per parameter. Quantized Linear weights
(transformer and Llama text encoder, as `framepack.models.quantize` does it): int8 and fp8 store 1
byte per weight plus one scale per output row; int4 stores half a byte plus a scale and a shift
per group of 128 (optimum-quanto's layout, the larger of quanto's and NNCF's). The rest of the
model stays in the compute dtype.

**Working sets** (bytes alive at once on the device, on top of the weights):

- *Transformer, one call at the section's token count.* Image tokens are the window
  (lws x h/2 x w/2) plus the clean latents (start + post: 2 frames at patch 2), the 2x history
  (kernel 2x4x4) and the 4x history (kernel 4x8x8); context tokens are SigLIP's image tokens plus
  the prompt's (at most `max_prompt_tokens`; batch 1 drops padding). Inference keeps only one
  block's tensors. The largest is the single-stream block during attention: the residual, the norm
  output, q/k/v, the concatenated streams and the MLP hidden state (`(mlp_ratio + 7)` tensors of
  tokens x width) plus RoPE's float32 temporaries (3 of image tokens x width, in fp32). Attention
  itself is counted as a memory-efficient kernel (flash / mem-efficient SDPA, which CUDA uses for
  batch 1 without a mask): O(tokens), no tokens x tokens matrix. Checked against a live-tensor
  trace of a full-size block on the meta device (tests/test_resources.py): within 2%.
- *VAE decode of one section* (`2*lws` latents, +1 when the inverted order reaches the start).
  diffusers decodes in chunks of 5 latent frames (17 pixel frames; `use_framewise_decoding`, on by
  default); with tiling each chunk is further cut into 256 px tiles (stride 192). The peak is the
  upsampler at full resolution: about `VAE_DECODE_TENSORS` tensors of
  `block_out_channels[1]` x 17 x tile height x tile width (the padded input, the upsampled copy and
  the convolution output). That factor was calibrated by tracing live tensors of a VAE with the
  real channel ratios at 1/8 width, decoded for real on the CPU (`benchmarks/vae_memory.py`:
  4.54-4.59 at 64-192 px), and the full-size VAE traced on the meta device gives 4.53-4.55. The
  mid-block attention builds a causal mask of n x n (n = latent tokens of the chunk or tile): a
  bool and a float32 copy converted to the VAE dtype, `(1 + 4 + dtype)` bytes per element at the
  moment of conversion; the peak is the larger of the two. Decoded chunks and tiles are kept until
  they are blended (the loop's float32 copy of the section comes after the decode's working set is
  freed, and is smaller).
- Text encoding (Llama returns every layer's hidden states), SigLIP and the VAE encode of the
  start image are small next to those two and are estimated the same way.

**Offload** decides which weights sit on the device at each stage (text, vision, VAE encode,
sample, decode):

- `none`: every component, always;
- `model` (`enable_model_cpu_offload`): simulated with diffusers' hook chain
  (text_encoder -> text_encoder_2 -> image_encoder -> transformer -> vae, each call offloads only
  the previous one) in our loop's call order. So the VAE and CLIP stay resident while the
  transformer samples (the decode sends the transformer away before a new prompt loads Llama);
- `group` (leaf-level groups with CUDA streams): `GROUP_RESIDENT_LEAVES` of the largest leaf
  modules of the running component (the running one plus the prefetched next);
- `sequential`: the running leaf module only, plus SigLIP, which is kept on the device.

**RAM**: the process (libraries and, on CUDA, the runtime), the weights that live in RAM (all of
them for every offload mode; none after loading without offload), the load transient (components
are loaded one after another, largest first; each arrives in full precision before it is
quantized and, without offload, moved), and the decoded section in float32 on its way to the
frame assembler. On a CPU device everything is RAM.

**Disk**: the video (an estimate at `VIDEO_BITS_PER_PIXEL`), raw frames (exactly T x H x W x 3
bytes), the inverted order's temporary spill file (every finished frame, in generation order, until
the end) and one checkpoint (the latent context the model still reads, the start/end latents and
the pixel overlap of the next blend, from the shapes).

**Time** comes from `device_speeds.json` (filled by `benchmarks/gpu.py --update-speeds`):
transformer TFLOP/s actually achieved, VAE decode speed and host-to-device bandwidth per device;
`seconds` is None when the device or a number is unknown. Sampling FLOPs are counted exactly
(`transformer_flops`, checked against torch's FlopCounterMode: ~0.52 PFLOP per step at 640 px).

`plan_resources` predicts one configuration; `choose_resources` picks, for a VRAM/RAM budget, the
fastest offload that fits (none > model > group > sequential) and turns VAE tiling on only when
the untiled decode would not fit; when nothing fits it raises `ResourceError` naming what would
(another offload, tiling, fp8/int8/int4, a lower resolution).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from framepack.errors import InputError

GiB = 2**30
MiB = 2**20

CONFIG_DIR = Path(__file__).with_name("configs")
SPEEDS_PATH = Path(__file__).with_name("device_speeds.json")
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
QUANTIZED_ROLES = ("transformer", "text_encoder")  # what framepack.models.quantize quantizes
VARIANTS = ("original", "f1")
OFFLOAD_ORDER = ("none", "model", "group", "sequential")  # fastest first
DEVICE_KINDS = ("cuda", "xpu", "mps", "cpu")

FLOAT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANT_ALIASES = {"none": "none", "quanto-int8": "int8", "nncf-int8": "int8", "quanto-fp8": "fp8",
                 "quanto-int4": "int4", "nncf-int4": "int4", "int8": "int8", "fp8": "fp8", "int4": "int4"}
INT4_GROUP = 128

# 14 reference buckets at 640 (height, width); the same table as framepack.engine.conditioning
BUCKETS_640 = (
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
)
HISTORY_FRAMES = (1, 2, 16)  # clean 1x, 2x and 4x latent slots
SIGLIP_TOKENS_DEFAULT = 729
PROMPT_TEMPLATE_TOKENS = 128  # the Llama chat template around the prompt (cropped after encoding)

# --- calibrated / assumed constants (see the module docstring) ---------------------------------
VAE_DECODE_TENSORS = 4.55  # full-resolution tensors alive at the decode peak (traced, see above)
VAE_TILE_PX, VAE_TILE_STRIDE_PX = 256, 192  # diffusers' AutoencoderKLHunyuanVideo defaults
VAE_CHUNK_LATENT_FRAMES = 5  # framewise decoding: 16 // 4 + 1 latent frames per chunk
GROUP_RESIDENT_LEAVES = 2  # group offload with streams: running + prefetched leaf group
VRAM_RESERVE_BYTES = 768 * MiB  # CUDA context, cuBLAS/cuDNN workspaces: outside torch's count
VRAM_MARGIN = 1.05  # caching-allocator fragmentation on top of the predicted peak
RAM_MARGIN = 1.10
PROCESS_RAM_BYTES = {"cuda": 3 * GiB, "xpu": 3 * GiB, "mps": 2 * GiB, "cpu": 1 * GiB}
VIDEO_BITS_PER_PIXEL = 0.5  # libx264 crf 16 yuv420p: a generous estimate (disk plans should err high)
TEACACHE_SPEEDUP = ((0.0, 1.0), (0.1, 1.6), (0.15, 2.1))  # reference demo's measurements


class ResourceError(InputError):
    """The run does not fit the budget; `suggestions` lists settings that would."""

    def __init__(self, message: str, suggestions: Iterable[str] = ()):
        super().__init__(message)
        self.suggestions = tuple(suggestions)


# ----------------------------------------------------------------------------- configs and sizes


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
    `python -c "from framepack.models.resources import write_shipped_sizes; write_shipped_sizes()"`."""
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


# ----------------------------------------------------------------------------- the run's shape


def bucket_for(resolution: int) -> tuple[int, int]:
    """The largest-area bucket at `resolution` (height, width): the worst case for any image."""
    if resolution < 16:
        raise InputError(f"resolution must be at least 16 px, got {resolution}")
    scale = resolution / 640.0
    shapes = {(max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16)) for h, w in BUCKETS_640}
    return max(sorted(shapes), key=lambda hw: hw[0] * hw[1])


def _padded(size: int, kernel: int) -> int:
    return -(-size // kernel) * kernel


def image_tokens(latent_h: int, latent_w: int, window: int, patch: int = 2) -> int:
    """Tokens of the window plus the clean 1x/2x/4x history for one transformer call."""
    per_frame = (latent_h // patch) * (latent_w // patch)
    clean = 2 * per_frame  # start latent + the 1x slot
    two = (_padded(HISTORY_FRAMES[1], 2) // 2) * (_padded(latent_h, 4) // 4) * (_padded(latent_w, 4) // 4)
    four = (_padded(HISTORY_FRAMES[2], 4) // 4) * (_padded(latent_h, 8) // 8) * (_padded(latent_w, 8) // 8)
    return window * per_frame + clean + two + four


def decoded_latent_frames(variant: str, window: int, sections: int = 2) -> int:
    """Most latent frames one section decodes (engine/context.py): the first section its window
    and the start latent; later ones two windows, +1 when the inverted order reaches the start."""
    if sections == 1:
        return window + 1
    return 2 * window + 1 if variant == "original" else 2 * window


def pixel_frames(latent_frames: int, temporal_ratio: int = 4) -> int:
    return (latent_frames - 1) * temporal_ratio + 1


# ----------------------------------------------------------------------------- working sets


def transformer_block_bytes(config: Mapping[str, Any], image: int, context: int, elem: int) -> dict[str, int]:
    """Peak bytes inside one block, its inputs excluded, at its three largest moments.

    r = mlp_ratio, T = image + context tokens, W = width, e = bytes per activation. Single-stream
    block during attention: (r + 7) tensors of T x W plus RoPE's three float32 temporaries of
    image x W; at its output projection: the (1 + r)-wide concat, the MLP state and the rest,
    (2r + 7) tensors. Dual-stream block in its MLP: (2r + 3) of image x W plus the context
    stream; during attention: 5 of image x W plus RoPE. Fitted to live-tensor traces of the
    full-size blocks on the meta device (bf16 and fp32, 4,000 and 18,000 image tokens).
    """
    width = config["num_attention_heads"] * config["attention_head_dim"]
    ratio = float(config.get("mlp_ratio", 4.0))
    tokens = image + context
    rope = 3 * image * width * 4
    single = max((ratio + 7) * tokens * width * elem + rope, (2 * ratio + 7) * tokens * width * elem)
    return {"single": int(single),
            "double_ff": int((2 * ratio + 3) * image * width * elem + 3 * context * width * elem),
            "double_attn": int(5 * image * width * elem + rope)}


def transformer_activation_bytes(config: Mapping[str, Any], image: int, context: int, elem: int,
                                 teacache_branches: int = 0) -> int:
    """Peak bytes alive during one transformer call on top of its weights (see the docstring)."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    tokens = image + context
    block = max(transformer_block_bytes(config, image, context, elem).values())
    outer = 2 * tokens * width * elem + 2 * image * config["attention_head_dim"] * 4  # streams, RoPE tables
    teacache = teacache_branches * 3 * image * width * elem  # cached residual, last input, block input
    return int(block + outer + teacache)


def vae_decode_bytes(config: Mapping[str, Any], latent_frames: int, latent_h: int, latent_w: int, elem: int,
                     tiled: bool) -> int:
    """Peak bytes of decoding `latent_frames` at latent size h x w (weights excluded)."""
    s, t = config.get("spatial_compression_ratio", 8), config.get("temporal_compression_ratio", 4)
    chunk = min(latent_frames, VAE_CHUNK_LATENT_FRAMES)
    tile_latent = VAE_TILE_PX // s
    tile_h = min(latent_h, tile_latent) if tiled else latent_h
    tile_w = min(latent_w, tile_latent) if tiled else latent_w
    channels = config["block_out_channels"][1 if len(config["block_out_channels"]) > 1 else 0]
    chunk_px = pixel_frames(chunk, t)
    conv = VAE_DECODE_TENSORS * channels * chunk_px * tile_h * s * tile_w * s * elem
    attention = 0
    if config.get("mid_block_add_attention", True):
        n = chunk * tile_h * tile_w
        attention = n * n * (1 + 4 + (elem if elem != 4 else 0)) + 4 * n * config["block_out_channels"][-1] * elem
    frames = pixel_frames(latent_frames, t)
    out_channels = config.get("out_channels", 3)
    outputs = 2 * out_channels * frames * latent_h * s * latent_w * s * elem  # chunks kept + the final cat
    if tiled:  # every decoded tile of one chunk waits for blending
        overlap = (VAE_TILE_PX / VAE_TILE_STRIDE_PX) ** 2
        outputs += int(out_channels * chunk_px * latent_h * s * latent_w * s * elem * overlap)
    return int(max(conv, attention) + outputs)


def vae_encode_bytes(config: Mapping[str, Any], height: int, width: int, elem: int, tiled: bool) -> int:
    """One image through the encoder: bounded by a one-frame decode at the same size."""
    s = config.get("spatial_compression_ratio", 8)
    return vae_decode_bytes(config, 1, height // s, width // s, elem, tiled)


def text_encoder_bytes(config: Mapping[str, Any], tokens: int, elem: int, all_hidden_states: bool) -> int:
    """Llama/CLIP forward: the returned hidden states plus one layer's MLP temporaries."""
    width, inner = config["hidden_size"], config["intermediate_size"]
    layers = config["num_hidden_layers"] + 1 if all_hidden_states else 2
    return int(tokens * (layers * width + 3 * inner) * elem)


def vision_encoder_bytes(config: Mapping[str, Any], elem: int) -> int:
    tokens = (config["image_size"] // config["patch_size"]) ** 2
    return int(tokens * (4 * config["hidden_size"] + 2 * config["intermediate_size"]) * elem)


def transformer_flops_breakdown(config: Mapping[str, Any], latent_h: int, latent_w: int, window: int,
                                context: int, text: int) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of one transformer call, by part.

    `context` = SigLIP tokens + `text` prompt tokens. `linear`: every token through q/k/v/out and
    the MLP of each block, plus the per-block modulation; `attention`: QK^T and AV over all tokens
    (and the token refiner's over the prompt); `refiner`: the prompt's token refiner and input
    projection; `embed`: the 1x/2x/4x patch embeddings; `image`: SigLIP's projection; `head`: the
    output projection of the window tokens.
    """
    width = config["num_attention_heads"] * config["attention_head_dim"]
    ratio = float(config.get("mlp_ratio", 4.0))
    patch, channels = config.get("patch_size", 2), config.get("in_channels", 16)
    image = image_tokens(latent_h, latent_w, window, patch)
    tokens = image + context
    per_frame = (latent_h // patch) * (latent_w // patch)
    two = (_padded(latent_h, 4) // 4) * (_padded(latent_w, 4) // 4) * (_padded(HISTORY_FRAMES[1], 2) // 2)
    four = (_padded(latent_h, 8) // 8) * (_padded(latent_w, 8) // 8) * (_padded(HISTORY_FRAMES[2], 4) // 4)
    per_token = 2 * (4 + 2 * ratio) * width * width  # q, k, v, out and the MLP
    blocks = config["num_layers"] + config["num_single_layers"]
    refiner_layers = config.get("num_refiner_layers", 0)
    modulation = 2 * (config["num_layers"] * 12 + config["num_single_layers"] * 3 + 2) * width * width
    return {
        "linear": float(blocks * tokens * per_token + modulation),
        "attention": float(blocks * 4 * tokens * tokens * width + refiner_layers * 4 * text * text * width),
        "refiner": float(refiner_layers * text * per_token + 2 * text * config["text_embed_dim"] * width),
        "embed": float(2 * width * channels * ((window + 2) * per_frame * patch * patch + two * 32 + four * 256)),
        "image": float(2 * (context - text) * 3 * width * (config.get("image_proj_dim", 0) + width)),
        "head": float(2 * window * per_frame * width * config["out_channels"] * patch * patch),
    }


def transformer_flops(config: Mapping[str, Any], latent_h: int, latent_w: int, window: int, context: int,
                      text: int) -> float:
    """FLOPs of one transformer call (one sampling step of one guidance branch)."""
    return sum(transformer_flops_breakdown(config, latent_h, latent_w, window, context, text).values())


# ----------------------------------------------------------------------------- inputs


def _quantization(name: str) -> str:
    key = str(name or "none").strip().lower()
    if key not in QUANT_ALIASES:
        raise InputError(f"unknown quantization {name!r}; choose one of: none, int8, fp8, int4 "
                         "(or quanto-int8, quanto-fp8, quanto-int4, nncf-int8, nncf-int4)")
    return QUANT_ALIASES[key]


@dataclass(frozen=True)
class Workload:
    """One run, as plain data. `height`/`width` default to the largest bucket at `resolution`."""

    variant: str = "original"
    resolution: int = 640
    height: int | None = None
    width: int | None = None
    latent_window_size: int = 9
    sections: int = 1
    steps: int = 25
    cfg: float = 1.0
    teacache: bool = False
    teacache_threshold: float = 0.15
    distinct_prompts: int = 1
    max_prompt_tokens: int = 256
    dtype: str | None = None  # transformer compute dtype: bf16 on accelerators, fp32 on a CPU
    quantization: str = "none"
    offload: str = "none"
    vae_tiling: bool = False
    device: str = "cuda"
    device_name: str | None = None
    save_raw: bool = False
    interpolation: int = 0
    configs: Mapping[str, Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.dtype is None:
            object.__setattr__(self, "dtype", "fp32" if self.device == "cpu" else "bf16")
        checks = [
            (self.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}"),
            (self.latent_window_size >= 1, "latent_window_size must be at least 1"),
            (self.sections >= 1, "sections must be at least 1"),
            (self.steps >= 1, "steps must be at least 1"),
            (self.distinct_prompts >= 1, "distinct_prompts must be at least 1"),
            (self.dtype in FLOAT_BYTES, f"dtype must be one of {', '.join(FLOAT_BYTES)}"),
            (self.offload in OFFLOAD_ORDER, f"offload must be one of {', '.join(OFFLOAD_ORDER)}"),
            (self.device in DEVICE_KINDS, f"device must be one of {', '.join(DEVICE_KINDS)}"),
            (self.device != "cpu" or self.offload == "none", "a CPU device cannot offload; use offload 'none'"),
            (self.interpolation >= 0, "interpolation must be 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        object.__setattr__(self, "quantization", _quantization(self.quantization))
        if (self.height is None) != (self.width is None):
            raise InputError("give both height and width, or neither (then resolution picks the bucket)")
        if self.height is None:
            height, width = bucket_for(self.resolution)
            object.__setattr__(self, "height", height)
            object.__setattr__(self, "width", width)
        if self.height % 16 or self.width % 16 or self.height < 16 or self.width < 16:
            raise InputError(f"height and width must be multiples of 16, got {self.height}x{self.width}")

    def config(self, role: str) -> Mapping[str, Any]:
        if self.configs and role in self.configs:
            return self.configs[role]
        return load_config(role, self.variant)

    @property
    def accelerator(self) -> bool:
        return self.device != "cpu"

    @property
    def encoder_bytes(self) -> int:
        """Encoders and VAE run in fp16 on accelerators (the reference), float32 on a CPU."""
        return 2 if self.accelerator else 4

    @property
    def output_frames(self) -> int:
        generated = 4 * self.latent_window_size * self.sections
        return generated * (self.interpolation + 1) + 1


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ResourcePlan:
    """The prediction for one configuration; `to_dict()` is what faces show and `--json` prints."""

    vram_peak_bytes: int
    ram_peak_bytes: int
    disk_bytes: int
    seconds: float | None
    offload: str
    vae_tiling: bool
    quantization: str
    dtype: str
    device: str
    height: int
    width: int
    frames: int
    parameters: Mapping[str, int]
    weight_bytes: Mapping[str, int]
    stage_vram_bytes: Mapping[str, int]
    working_set_bytes: Mapping[str, int]
    ram_bytes: Mapping[str, int]
    disk: Mapping[str, int]
    tokens: Mapping[str, int]
    flops_per_step: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def vram_needed_bytes(self) -> int:
        """What the device must have free: the peak plus fragmentation margin and the reserve."""
        if self.device == "cpu":
            return 0
        return int(self.vram_peak_bytes * VRAM_MARGIN) + VRAM_RESERVE_BYTES

    def ram_needed_bytes(self) -> int:
        return int(self.ram_peak_bytes * RAM_MARGIN)

    def fits(self, vram_budget_bytes: int | None, ram_budget_bytes: int | None) -> bool:
        vram_ok = vram_budget_bytes is None or self.vram_needed_bytes() <= vram_budget_bytes
        ram_ok = ram_budget_bytes is None or self.ram_needed_bytes() <= ram_budget_bytes
        return vram_ok and ram_ok

    def summary(self) -> str:
        tiling = "tiled" if self.vae_tiling else "untiled"
        time = "unknown" if self.seconds is None else f"{self.seconds:.0f} s"
        weights = self.dtype if self.quantization == "none" else self.quantization
        return (f"{self.height}x{self.width}, {weights} weights, offload {self.offload}, VAE {tiling}: "
                f"VRAM {self.vram_peak_bytes / GiB:.1f} GiB, RAM {self.ram_peak_bytes / GiB:.1f} GiB, "
                f"disk {self.disk_bytes / GiB:.2f} GiB, time {time}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["vram_needed_bytes"] = self.vram_needed_bytes()
        data["ram_needed_bytes"] = self.ram_needed_bytes()
        return data


def plan_resources(**inputs) -> ResourcePlan:
    """Predict peak VRAM, peak RAM, disk and time of one configuration (see `Workload`)."""
    work = Workload(**inputs)
    sizes = {role: component_size(role, work.config(role)) for role in ROLES}
    weights = _weights(work, sizes)
    shape = _shape(work)
    working = _working_sets(work, shape)
    stages = _stage_vram(work, sizes, weights, working)
    vram = 0 if not work.accelerator else max(stages.values())
    ram = _ram(work, sizes, weights, working)
    disk = _disk(work, shape)
    flops = transformer_flops(work.config("transformer"), shape["latent_h"], shape["latent_w"],
                              work.latent_window_size, shape["context_tokens"], shape["text_tokens"])
    return ResourcePlan(
        vram_peak_bytes=int(vram), ram_peak_bytes=int(ram["peak"]), disk_bytes=int(disk["total"]),
        seconds=_seconds(work, sizes, weights, shape, flops), offload=work.offload, vae_tiling=work.vae_tiling,
        quantization=work.quantization, dtype=work.dtype, device=work.device, height=work.height,
        width=work.width, frames=work.output_frames, parameters={r: s.parameters for r, s in sizes.items()},
        weight_bytes=weights, stage_vram_bytes=stages, working_set_bytes=working, ram_bytes=ram, disk=disk,
        tokens={k: shape[k] for k in ("image_tokens", "context_tokens", "text_tokens")}, flops_per_step=flops,
        notes=_notes(work),
    )


def _weights(work: Workload, sizes: Mapping[str, ComponentSize]) -> dict[str, int]:
    out = {}
    for role, size in sizes.items():
        if role in QUANTIZED_ROLES:
            float_bytes = FLOAT_BYTES[work.dtype] if role == "transformer" else work.encoder_bytes
            out[role] = size.weight_bytes(float_bytes, work.quantization)
        else:
            out[role] = size.weight_bytes(work.encoder_bytes)
    return out


def _shape(work: Workload) -> dict[str, int]:
    transformer = work.config("transformer")
    vae = work.config("vae")
    s = vae.get("spatial_compression_ratio", 8)
    latent_h, latent_w = work.height // s, work.width // s
    siglip = work.config("image_encoder")
    vision_tokens = ((siglip["image_size"] // siglip["patch_size"]) ** 2 if "image_size" in siglip
                     else SIGLIP_TOKENS_DEFAULT)
    text = min(work.max_prompt_tokens, work.config("text_encoder").get("max_position_embeddings", 10**9))
    image = image_tokens(latent_h, latent_w, work.latent_window_size, transformer.get("patch_size", 2))
    decoded = decoded_latent_frames(work.variant, work.latent_window_size, work.sections)
    return {"latent_h": latent_h, "latent_w": latent_w, "image_tokens": image, "text_tokens": text,
            "context_tokens": vision_tokens + text, "decoded_latents": decoded,
            "decoded_frames": pixel_frames(decoded, vae.get("temporal_compression_ratio", 4))}


def _working_sets(work: Workload, shape: Mapping[str, int]) -> dict[str, int]:
    act = FLOAT_BYTES[work.dtype]
    enc = work.encoder_bytes
    vae = work.config("vae")
    branches = (2 if work.cfg > 1 else 1) if work.teacache else 0
    return {
        "text": text_encoder_bytes(work.config("text_encoder"), work.max_prompt_tokens + PROMPT_TEMPLATE_TOKENS,
                                   enc, all_hidden_states=True),
        "vision": vision_encoder_bytes(work.config("image_encoder"), enc),
        "vae_encode": vae_encode_bytes(vae, work.height, work.width, enc, work.vae_tiling),
        "sample": transformer_activation_bytes(work.config("transformer"), shape["image_tokens"],
                                               shape["context_tokens"], act, branches),
        "vae_decode": vae_decode_bytes(vae, shape["decoded_latents"], shape["latent_h"], shape["latent_w"], enc,
                                       work.vae_tiling),
    }


STAGE_ROLES = {"text": ("text_encoder",), "vision": ("image_encoder",), "vae_encode": ("vae",),
               "sample": ("transformer",), "vae_decode": ("vae",)}
MODEL_OFFLOAD_CHAIN = ("text_encoder", "text_encoder_2", "image_encoder", "transformer", "vae")


def _call_order(work: Workload) -> list[tuple[str, str]]:
    """(component, stage) calls in our loop's order, enough sections to show every transition."""
    calls = [("image_encoder", "vision"), ("vae", "vae_encode")]
    if work.cfg > 1:
        calls += [("text_encoder", "text"), ("text_encoder_2", "text")]
    sections = min(work.sections, work.distinct_prompts + 1)
    for index in range(sections):
        if index < work.distinct_prompts:
            calls += [("text_encoder", "text"), ("text_encoder_2", "text")]
        calls += [("transformer", "sample"), ("vae", "vae_decode")]
    return calls


def _stage_vram(work: Workload, sizes, weights: Mapping[str, int], working: Mapping[str, int]) -> dict[str, int]:
    """Peak device bytes per stage for the offload mode."""
    if not work.accelerator:
        return {stage: 0 for stage in working}
    if work.offload == "none":
        total = sum(weights.values())
        return {stage: total + ws for stage, ws in working.items()}
    if work.offload == "model":
        return _model_offload_stages(work, weights, working)
    stages = {}
    for stage, ws in working.items():
        roles = STAGE_ROLES[stage]
        leaf_bytes = max(_leaf_bytes(work, sizes[r], weights[r]) for r in roles)
        resident = (GROUP_RESIDENT_LEAVES if work.offload == "group" else 1) * leaf_bytes
        if work.offload == "sequential":
            resident += weights["image_encoder"]  # SigLIP stays on the device (accelerate's hooks break it)
        stages[stage] = resident + ws
    return stages


def _leaf_bytes(work: Workload, size: ComponentSize, weight_bytes: int) -> int:
    """Bytes of the component's largest leaf module, at its average bytes per parameter."""
    return math.ceil(size.largest_leaf * weight_bytes / max(1, size.parameters))


def _model_offload_stages(work: Workload, weights, working) -> dict[str, int]:
    """Simulate diffusers' model-offload hook chain over our call order."""
    previous = {b: a for a, b in zip(MODEL_OFFLOAD_CHAIN, MODEL_OFFLOAD_CHAIN[1:])}
    resident: set[str] = set()
    stages: dict[str, int] = {}
    for component, stage in _call_order(work):
        resident.add(component)
        resident.discard(previous.get(component, ""))
        peak = sum(weights[r] for r in resident) + working[stage]
        stages[stage] = max(stages.get(stage, 0), peak)
    return stages


def _ram(work: Workload, sizes, weights: Mapping[str, int], working: Mapping[str, int]) -> dict[str, int]:
    """RAM breakdown: process, weights kept, load transient, runtime; `peak` is the largest moment."""
    process = PROCESS_RAM_BYTES[work.device]
    float_bytes = {r: (FLOAT_BYTES[work.dtype] if r == "transformer" else work.encoder_bytes) for r in ROLES}
    loaded = {r: sizes[r].weight_bytes(float_bytes[r]) for r in ROLES}  # as from_pretrained delivers them
    kept_roles = [r for r in ROLES if work.offload != "none" or not work.accelerator]
    if work.offload == "sequential":
        kept_roles.remove("image_encoder")
    kept = sum(weights[r] for r in kept_roles)
    load_peak, held = 0, 0
    for role in sorted(ROLES, key=lambda r: -loaded[r]):  # build_pipeline loads the largest first
        load_peak = max(load_peak, held + loaded[role])
        held += weights[role] if role in kept_roles else 0
    decoded = 3 * 4 * _decoded_pixels(work)  # the float32 section on its way to the assembler
    runtime = 4 * decoded + 3 * _decoded_pixels(work)  # section, joined copy, pending, uint8 conversion
    if not work.accelerator:
        runtime += max(working.values())
    return {"process": process, "weights": kept, "load_peak": process + load_peak,
            "runtime": runtime, "peak": process + max(load_peak, kept + runtime)}


def _decoded_pixels(work: Workload) -> int:
    frames = pixel_frames(decoded_latent_frames(work.variant, work.latent_window_size, work.sections))
    return frames * work.height * work.width


def _disk(work: Workload, shape: Mapping[str, int]) -> dict[str, int]:
    frame = work.height * work.width * 3
    frames = work.output_frames
    video = int(frames * work.height * work.width * VIDEO_BITS_PER_PIXEL / 8)
    raw = frames * frame if work.save_raw else 0
    generated = 4 * work.latent_window_size * work.sections + 1
    spill = generated * frame if work.variant == "original" else 0
    checkpoint = checkpoint_bytes(work, shape)
    return {"video": video, "raw": raw, "spill": spill, "checkpoint": checkpoint,
            "total": video + raw + spill + checkpoint}


def checkpoint_bytes(work: Workload, shape: Mapping[str, int] | None = None) -> int:
    """One section's checkpoint: latent context (float32), start/end latents, the pixel overlap."""
    shape = shape or _shape(work)
    channels = work.config("transformer").get("in_channels", 16)
    latent_frame = channels * shape["latent_h"] * shape["latent_w"] * 4
    context = max(sum(HISTORY_FRAMES), 2 * work.latent_window_size + 1)
    overlap = (4 * work.latent_window_size - 3) * work.height * work.width * 3
    return (context + 2) * latent_frame + overlap


def _seconds(work: Workload, sizes, weights, shape, flops: float) -> float | None:
    speeds = device_speed(work.device_name)
    needed = ("transformer_tflops", "vae_decode_megapixel_frames_per_s")
    if speeds is None or any(not speeds.get(k) for k in needed):
        return None
    passes = 2 if work.cfg > 1 else 1
    computed = 1.0 / _teacache_speedup(work.teacache_threshold) if work.teacache else 1.0
    step = flops / (speeds["transformer_tflops"] * 1e12)
    decode = _decoded_pixels(work) / 1e6 / speeds["vae_decode_megapixel_frames_per_s"]
    transfer = _transfer_seconds(work, weights, speeds.get("host_to_device_gb_per_s"))
    if transfer is None:
        return None
    if work.offload == "group":  # streams overlap the copies with compute
        sample = work.steps * passes * max(step * computed, transfer)
        transfer = 0.0
    elif work.offload == "sequential":
        sample = work.steps * passes * (step * computed + transfer)
        transfer = 0.0
    else:
        sample = work.steps * passes * step * computed
    return work.sections * (sample + decode + transfer)


def _transfer_seconds(work: Workload, weights, bandwidth_gb_s: float | None) -> float | None:
    """Weight copies per section (model offload) or per transformer call (group, sequential)."""
    if work.offload == "none" or not work.accelerator:
        return 0.0
    if not bandwidth_gb_s:
        return None
    if work.offload == "model":  # the transformer comes in and goes out once per section
        return 2 * weights["transformer"] / (bandwidth_gb_s * 1e9)
    return weights["transformer"] / (bandwidth_gb_s * 1e9)


def _teacache_speedup(threshold: float) -> float:
    points = TEACACHE_SPEEDUP
    if threshold >= points[-1][0]:
        return points[-1][1]
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if t0 <= threshold <= t1:
            return s0 + (s1 - s0) * (threshold - t0) / (t1 - t0)
    return 1.0


def _notes(work: Workload) -> tuple[str, ...]:
    notes = []
    if work.offload == "sequential" and work.quantization != "none":
        notes.append("sequential offload needs nncf quantization: quanto weights cannot be moved by accelerate's hooks")
    if work.quantization == "fp8" and work.device == "mps":
        notes.append("MPS has no float8: use int8")
    return tuple(notes)


# ----------------------------------------------------------------------------- device speeds


def load_device_speeds(path: Path | None = None) -> dict:
    try:
        return json.loads((path or SPEEDS_PATH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"devices": {}}


def device_speed(name: str | None, path: Path | None = None) -> dict | None:
    """The table entry for a device name: exact key, else the longest key contained in the name."""
    if not name:
        return None
    devices = load_device_speeds(path).get("devices", {})
    if name in devices:
        return devices[name]
    lowered = name.lower()
    matches = [key for key in devices if key.lower() in lowered]
    return devices[max(matches, key=len)] if matches else None


def peak_bf16_tflops(name: str | None) -> float | None:
    entry = device_speed(name)
    return None if entry is None else entry.get("peak_bf16_tflops")


# ----------------------------------------------------------------------------- choosing


TILING_CHOICES = ("auto", "on", "off")


def choose_resources(vram_budget_bytes: int | None, ram_budget_bytes: int | None, *, offload: str = "auto",
                     vae_tiling: str = "auto", **inputs) -> ResourcePlan:
    """The fastest configuration that fits the budgets (None = unlimited).

    `offload` auto tries none > model > group > sequential; `vae_tiling` auto keeps the decode
    untiled unless it would not fit. Forced values are planned as given. Raises `ResourceError`
    with what would fit when nothing does.
    """
    offload = str(offload or "auto").strip().lower()
    tiling = str(vae_tiling or "auto").strip().lower()
    if offload not in ("auto", *OFFLOAD_ORDER):
        raise InputError(f"unknown offload mode {offload!r}; choose one of: auto, {', '.join(OFFLOAD_ORDER)}")
    if tiling not in TILING_CHOICES:
        raise InputError(f"unknown vae_tiling {vae_tiling!r}; choose one of: {', '.join(TILING_CHOICES)}")
    plan, tried = _search(vram_budget_bytes, ram_budget_bytes, inputs, offload, tiling)
    if plan is not None:
        return plan
    closest = _closest(tried, vram_budget_bytes)
    suggestions = _what_would_fit(vram_budget_bytes, ram_budget_bytes, inputs, offload, tiling)
    raise ResourceError(_refusal(closest, vram_budget_bytes, ram_budget_bytes, suggestions), suggestions)


def _closest(tried: list[ResourcePlan], vram: int | None) -> ResourcePlan:
    """The plan to explain a refusal with: the first that fits the VRAM (so RAM is the problem),
    else the one that needs the least VRAM."""
    for plan in tried:
        if plan.fits(vram, None):
            return plan
    return min(tried, key=lambda p: (p.vram_needed_bytes(), p.ram_needed_bytes()))


def _search(vram: int | None, ram: int | None, inputs: Mapping[str, Any], offload: str = "auto",
            tiling: str = "auto") -> tuple[ResourcePlan | None, list[ResourcePlan]]:
    """First plan that fits, trying offload modes fastest first and untiled before tiled."""
    modes = OFFLOAD_ORDER if offload == "auto" else (offload,)
    if inputs.get("device", "cuda") == "cpu":
        modes = ("none",)
    tilings = {"auto": (False, True), "on": (True,), "off": (False,)}[tiling]
    tried = []
    for mode in modes:
        for tiled in tilings:
            plan = plan_resources(**{**inputs, "offload": mode, "vae_tiling": tiled})
            if plan.fits(vram, ram):
                return plan, tried
            tried.append(plan)
    return None, tried


def _refusal(plan: ResourcePlan, vram: int | None, ram: int | None, suggestions: list[str]) -> str:
    short = []
    if vram is not None and plan.vram_needed_bytes() > vram:
        short.append(f"{plan.vram_needed_bytes() / GiB:.1f} GiB of VRAM (budget {vram / GiB:.1f} GiB)")
    if ram is not None and plan.ram_needed_bytes() > ram:
        short.append(f"{plan.ram_needed_bytes() / GiB:.1f} GiB of RAM (budget {ram / GiB:.1f} GiB)")
    weights = plan.dtype if plan.quantization == "none" else plan.quantization
    head = (f"this run does not fit: at {plan.height}x{plan.width} with {weights} weights it needs "
            f"{' and '.join(short)} even with offload {plan.offload!r} and VAE tiling {_on(plan.vae_tiling)}")
    if not suggestions:
        return head + "; nothing smaller fits either: free memory or use a machine with more"
    return head + "; what would fit: " + "; ".join(suggestions)


def _what_would_fit(vram: int | None, ram: int | None, inputs: Mapping[str, Any], offload: str,
                    tiling: str) -> list[str]:
    """Alternatives that fit, cheapest change first: other offload/tiling, quantization, resolution."""
    found: list[str] = []
    if offload != "auto" or tiling != "auto":
        plan, _ = _search(vram, ram, inputs)
        if plan is not None:
            found.append(f"offload {plan.offload!r} with VAE tiling {_on(plan.vae_tiling)}")
    current = _quantization(inputs.get("quantization", "none"))
    eight_bit = "int8" if inputs.get("device") == "mps" else "int8 or fp8"  # same size; MPS has no fp8
    for quant, label in (("int8", eight_bit), ("int4", "int4")):
        if quant == current or (quant == "int8" and current == "fp8"):
            continue
        plan, _ = _search(vram, ram, {**inputs, "quantization": quant})
        if plan is not None:
            found.append(f"{label} weights (offload {plan.offload!r}, VAE tiling {_on(plan.vae_tiling)})")
            break
    resolution = int(inputs.get("resolution", 640))
    for lower in range(resolution - 64, 239, -64):
        plan, _ = _search(vram, ram, _at_resolution(inputs, resolution, lower))
        if plan is not None:
            found.append(f"resolution {lower} (offload {plan.offload!r}, VAE tiling {_on(plan.vae_tiling)})")
            break
    return found


def _at_resolution(inputs: Mapping[str, Any], resolution: int, lower: int) -> dict[str, Any]:
    """`inputs` at a lower resolution; a given height and width (an image's bucket) scale with it
    on the 16 px grid, as the engine scales its buckets."""
    changed = {**inputs, "resolution": lower}
    if inputs.get("height") is not None and inputs.get("width") is not None:
        for key in ("height", "width"):
            changed[key] = max(16, round(int(inputs[key]) * lower / resolution / 16) * 16)
    return changed


def _on(flag: bool) -> str:
    return "on" if flag else "off"


__all__ = [
    "GiB", "ROLES", "OFFLOAD_ORDER", "ResourceError", "ResourcePlan", "Workload", "ComponentSize",
    "plan_resources", "choose_resources", "component_size", "load_config", "build_on_meta", "measure_module",
    "transformer_flops", "transformer_flops_breakdown", "transformer_activation_bytes", "transformer_block_bytes",
    "vae_decode_bytes",
    "image_tokens", "bucket_for", "checkpoint_bytes", "recipe_configs", "device_speed", "peak_bf16_tflops",
    "load_device_speeds",
]
