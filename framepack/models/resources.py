"""Plan a FramePack run's resources before it starts: peak VRAM, peak RAM, disk and time.

Everything here is arithmetic on plain inputs (numbers and strings) plus the released component
configs in `framepack/models/configs/`; nothing is downloaded and no weights exist. The planner is
four modules, in the order a plan is derived:

- `component_sizes`: each component's parameters and weight bytes (dtype, quantization), counted
  on a meta-device build of its config;
- `component_costs`: what one call of each component keeps alive on top of its weights (the
  working sets: transformer activations, VAE decode, encoders) and its FLOPs;
- this module: one configuration's plan (`plan_resources` on a `Workload`): which weights sit on
  the device at each stage for an offload mode, then RAM, disk and time;
- `resource_choice`: for a VRAM/RAM budget, the fastest configuration that fits
  (`choose_resources`), or a `ResourceError` naming what would.

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
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from framepack.errors import InputError
from framepack.models.component_costs import (HISTORY_FRAMES, bucket_for, decoded_latent_frames, image_tokens,
                                              pixel_frames, text_encoder_bytes, transformer_activation_bytes,
                                              transformer_flops, vae_decode_bytes, vae_encode_bytes,
                                              vision_encoder_bytes)
from framepack.models.component_sizes import ROLES, ComponentSize, component_size, load_config

GiB = 2**30
MiB = 2**20

SPEEDS_PATH = Path(__file__).with_name("device_speeds.json")

QUANTIZED_ROLES = ("transformer", "text_encoder")  # what framepack.models.quantize quantizes
VARIANTS = ("original", "f1")
OFFLOAD_ORDER = ("none", "model", "group", "sequential")  # fastest first
DEVICE_KINDS = ("cuda", "xpu", "mps", "cpu")

FLOAT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANT_ALIASES = {"none": "none", "quanto-int8": "int8", "nncf-int8": "int8", "quanto-fp8": "fp8",
                 "quanto-int4": "int4", "nncf-int4": "int4", "int8": "int8", "fp8": "fp8", "int4": "int4"}
SIGLIP_TOKENS_DEFAULT = 729
PROMPT_TEMPLATE_TOKENS = 128  # the Llama chat template around the prompt (cropped after encoding)

# calibrated / assumed constants (see the module docstring)
GROUP_RESIDENT_LEAVES = 2  # group offload with streams: running + prefetched leaf group
VRAM_RESERVE_BYTES = 768 * MiB  # CUDA context, cuBLAS/cuDNN workspaces: outside torch's count
VRAM_MARGIN = 1.05  # caching-allocator fragmentation on top of the predicted peak
RAM_MARGIN = 1.10
PROCESS_RAM_BYTES = {"cuda": 3 * GiB, "xpu": 3 * GiB, "mps": 2 * GiB, "cpu": 1 * GiB}
VIDEO_BITS_PER_PIXEL = 0.5  # libx264 crf 16 yuv420p: a generous estimate (disk plans should err high)
TEACACHE_SPEEDUP = ((0.0, 1.0), (0.1, 1.6), (0.15, 2.1))  # reference demo's measurements


# ----------------------------------------------------------------------------- inputs


def quantization_scheme(name: str) -> str:
    """The weight format a quantization setting stores: none, int8, fp8 or int4."""
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
        object.__setattr__(self, "quantization", quantization_scheme(self.quantization))
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
