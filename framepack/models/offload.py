"""Standalone device, dtype, offload and attention backend, all through diffusers' own machinery.

Inside SD.Next the host offloads (balanced, model, sequential, group); standalone, this module
does the same with diffusers' pipeline helpers:

- `none`: every component on the device;
- `model`: `enable_model_cpu_offload` (one whole component on the device at a time);
- `sequential`: `enable_sequential_cpu_offload` (leaf modules streamed in; least memory, slowest);
- `group`: diffusers group offloading (leaf level, CUDA streams) for every component;
- `auto`: the resource planner (`framepack.models.resources`) predicts each mode's peak for a
  default run (640 px bucket, window 9, the runtime's quantization, the components the recipe
  will load) and picks the fastest that fits the accelerator's free memory and the free RAM:
  none > model > group > sequential. A CPU device never offloads.

VAE tiling (`auto|on|off`) is decided by the same plan: `auto` tiles (and slices) the VAE only
when the untiled decode would not fit; `apply_vae_tiling` switches diffusers' own
`enable_tiling`/`enable_slicing` on the pipeline's VAE.

SigLIP (the `image_encoder`) breaks under accelerate's per-module hooks (sequential offload fails
inside its embeddings), so it is kept out of sequential offload and put on the device directly;
it is small (~0.8 GB in fp16).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from framepack.errors import InputError, ModelError
from framepack.models.hooks import offload_state  # noqa: F401 - re-exported: where callers look for it

log = logging.getLogger(__name__)

OFFLOAD_MODES = ("auto", "none", "model", "sequential", "group")
VAE_TILING_MODES = ("auto", "on", "off")
ACCELERATORS = ("cuda", "xpu", "mps")
UNKNOWN_FREE_FALLBACK = "model"  # auto when the accelerator cannot report its free memory
SEQUENTIAL_EXCLUDE = ("image_encoder",)  # SigLIP fails under accelerate's leaf hooks

ATTENTION_BACKENDS = ("native", "flash", "sage", "xformers")
_ATTENTION_PACKAGES = {"flash": "flash_attn", "sage": "sageattention", "xformers": "xformers"}


# ----------------------------------------------------------------------------- device and dtype


def pick_device(preferred: Any = None):
    """`preferred` if given, else the first available of cuda > xpu > mps > cpu."""
    import torch

    if preferred is not None and str(preferred).strip().lower() not in ("", "auto"):
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return torch.device("xpu")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: Any):
    """Compute dtype for the transformer: bf16 where the device has it, fp16 on MPS, fp32 on CPU.

    CPU stays float32: half precision there is slow and some kernels are missing.
    """
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    if kind == "xpu":
        return torch.bfloat16
    if kind == "mps":
        return torch.float16
    return torch.float32


def free_accelerator_bytes(device: Any) -> int | None:
    """Free memory of the accelerator behind `device` in bytes; None when it cannot be known."""
    import torch

    device = torch.device(device)
    try:
        if device.type == "cuda" and torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
            return int(torch.xpu.mem_get_info(device)[0])
        if device.type == "mps":  # unified memory: what the system has free
            import psutil

            return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown is a valid answer; auto then offloads
        return None
    return None


# ----------------------------------------------------------------------------- offload


def check_offload_mode(mode: str) -> str:
    name = str(mode or "auto").strip().lower()
    if name not in OFFLOAD_MODES:
        raise InputError(f"unknown offload mode {mode!r}; choose one of: {', '.join(OFFLOAD_MODES)}")
    return name


def check_vae_tiling(mode: str) -> str:
    name = str(mode or "auto").strip().lower()
    if name not in VAE_TILING_MODES:
        raise InputError(f"unknown vae_tiling {mode!r}; choose one of: {', '.join(VAE_TILING_MODES)}")
    return name


def available_ram_bytes() -> int | None:
    """RAM this process can use: what the system has available plus what we already hold."""
    try:
        import psutil

        return int(psutil.virtual_memory().available + psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - unknown RAM means "do not limit"
        return None


@dataclass(frozen=True)
class RuntimeChoice:
    """The concrete offload mode and VAE tiling for a device, and the plan they came from."""

    offload: str
    vae_tiling: bool
    plan: Any = None  # framepack.models.resources.ResourcePlan; None when nothing was planned


def plan_runtime(offload: str, vae_tiling: str, device: Any, *, free_bytes: int | None = None,
                 ram_bytes: int | None = None, workload: Mapping[str, Any] | None = None) -> RuntimeChoice:
    """Resolve `auto` offload and tiling with the resource planner.

    `free_bytes` / `ram_bytes` override the measured free accelerator memory and available RAM;
    `workload` holds `plan_resources` inputs (quantization, dtype, configs, resolution...).
    Forced modes are kept as given (an explicit offload mode on a CPU is an `InputError`); when
    nothing fits, `ResourceError` names what would.
    """
    import torch

    mode, tiling = check_offload_mode(offload), check_vae_tiling(vae_tiling)
    kind = torch.device(device).type
    if kind not in ACCELERATORS:
        if mode not in ("auto", "none"):
            raise InputError(f"offload mode {mode!r} moves weights between CPU memory and an accelerator, but "
                             f"the device is {kind}; use 'none' or 'auto' (accelerators: {', '.join(ACCELERATORS)})")
        mode = "none"
    free = None
    if kind in ACCELERATORS:
        free = free_accelerator_bytes(device) if free_bytes is None else free_bytes
        if mode == "auto" and free is None:
            log.warning("free memory of %s is unknown; offload auto uses %s", device, UNKNOWN_FREE_FALLBACK)
            mode = UNKNOWN_FREE_FALLBACK
    if mode != "auto" and tiling != "auto":
        return RuntimeChoice(mode, tiling == "on")
    from framepack.models.resource_choice import ResourceError, choose_resources

    ram = available_ram_bytes() if ram_bytes is None else ram_bytes
    # a run of several sections (later sections decode two windows), unless told otherwise
    inputs = {"sections": 2, **dict(workload or {}), "device": kind if kind in ACCELERATORS else "cpu"}
    try:
        plan = choose_resources(free, ram, offload=mode, vae_tiling=tiling, **inputs)
    except ResourceError as error:
        if kind in ACCELERATORS:
            raise
        # a CPU run only slows down when RAM runs short (the OS swaps): tile and go on
        log.warning("%s; tiling the VAE and trying anyway", error)
        return RuntimeChoice("none", tiling != "off")
    log.info("resource plan: %s", plan.summary())
    return RuntimeChoice(plan.offload, plan.vae_tiling, plan)


def resolve_offload(mode: str, device: Any, free_bytes: int | None = None, *, ram_bytes: int | None = None,
                    workload: Mapping[str, Any] | None = None) -> str:
    """The concrete mode (`none|model|sequential|group`) for `mode` on `device`.

    `auto` asks the resource planner for the fastest mode whose predicted peak fits the
    accelerator's free memory (`free_bytes` overrides the measurement) and the available RAM
    (`ram_bytes`), for the run `workload` describes (default: 640 px, window 9, the shipped
    full-size configs); `model` when the free memory cannot be read; `none` on a CPU. An explicit
    offload mode on a device that is not an accelerator is an `InputError`.
    """
    import torch

    mode = check_offload_mode(mode)
    if mode != "auto" or torch.device(device).type not in ACCELERATORS:
        return plan_runtime(mode, "off", device).offload  # validates; plans nothing
    return plan_runtime(mode, "auto", device, free_bytes=free_bytes, ram_bytes=ram_bytes, workload=workload).offload


def apply_vae_tiling(pipe: Any, enabled: bool) -> bool:
    """Switch diffusers' tiled (256 px tiles, 192 px stride) and sliced decode on or off."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        raise ModelError("the pipeline has no VAE that supports tiling")
    if enabled:
        vae.enable_tiling()
        vae.enable_slicing()
    else:
        vae.disable_tiling()
        vae.disable_slicing()
    return bool(enabled)


def pipeline_offload_state(pipe: Any) -> str | None:
    """The offload mode a pipeline's components carry (first one found), None when none."""
    for component in _modules(pipe).values():
        state = offload_state(component)
        if state is not None:
            return state
    return None


def _modules(pipe: Any) -> dict[str, Any]:
    import torch

    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def _check_quantized(pipe: Any, mode: str) -> None:
    """quanto's tensors cannot be rebuilt by accelerate's leaf hooks: refuse sequential offload."""
    from framepack.models.quantize import quantized_with

    if mode != "sequential":
        return
    for name, component in _modules(pipe).items():
        if quantized_with(component) == "quanto":
            raise InputError(f"sequential offload cannot move quanto-quantized weights ({name}); "
                             "use 'model' or 'group' offload, or nncf quantization")


def apply_offload(pipe: Any, mode: str, device: Any, *, free_bytes: int | None = None,
                  workload: Mapping[str, Any] | None = None) -> str:
    """Place the pipeline's components for `mode` on `device` and return the concrete mode.

    `auto` is resolved by `resolve_offload` (for `workload`, see there). `model` and `sequential` need an accelerator;
    `group` onloads to `device` whatever it is (on a CPU that only exercises the hooks). Call it
    once, after quantization; changing the mode later needs a freshly loaded pipeline.
    """
    import torch

    mode = check_offload_mode(mode)
    device = torch.device(device)
    if mode == "auto":
        mode = resolve_offload(mode, device, free_bytes, workload=workload)
    if mode in ("model", "sequential") and device.type not in ACCELERATORS:
        raise InputError(f"offload mode {mode!r} needs an accelerator ({', '.join(ACCELERATORS)}), "
                         f"but the device is {device.type}; use 'none'")
    current = pipeline_offload_state(pipe)
    if current is not None:
        if current == mode:
            return mode
        raise ModelError(f"the pipeline already uses {current} offload; load it again to switch to {mode!r}")
    _check_quantized(pipe, mode)
    try:
        _APPLY[mode](pipe, device)
    except (InputError, ModelError):
        raise
    except Exception as exc:  # diffusers/accelerate refusals, one line for the user
        raise ModelError(f"could not enable {mode} offload on {device}: {type(exc).__name__}: {exc}") from exc
    log.info("offload %s on %s", mode, device)
    return mode


def _apply_none(pipe, device) -> None:
    pipe.to(device)


def _apply_model(pipe, device) -> None:
    pipe.enable_model_cpu_offload(device=device)


def _apply_sequential(pipe, device) -> None:
    # an instance attribute: only this pipeline keeps SigLIP out of the leaf hooks
    pipe._exclude_from_cpu_offload = [*getattr(pipe, "_exclude_from_cpu_offload", []), *SEQUENTIAL_EXCLUDE]
    pipe.enable_sequential_cpu_offload(device=device)


def _apply_group(pipe, device) -> None:
    """Leaf-level groups, as diffusers documents it: on CUDA a side stream prefetches the next
    layer while the current one runs (near model-offload speed at sequential-offload memory);
    pinning happens on the fly so a 40 GB model set is never pinned in RAM all at once."""
    import torch

    streams = device.type == "cuda"
    pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="leaf_level",
                              use_stream=streams, low_cpu_mem_usage=streams)


_APPLY = {"none": _apply_none, "model": _apply_model, "sequential": _apply_sequential, "group": _apply_group}


# ----------------------------------------------------------------------------- attention


def available_attention_backends() -> tuple[str, ...]:
    """`native` always; `flash`, `sage`, `xformers` when their package imports here."""
    found = ["native"]
    for name, package in _ATTENTION_PACKAGES.items():
        try:
            importlib.import_module(package)
        except Exception:  # noqa: BLE001 - a broken install counts as missing
            continue
        found.append(name)
    return tuple(found)


def set_attention_backend(pipe: Any, name: str) -> str:
    """Select the transformer's attention kernel through diffusers' dispatcher; return the name.

    Only the transformer has dispatcher-aware attention. Unknown names and backends whose
    package is missing are `InputError`s that list what this machine has.
    """
    backend = str(name or "native").strip().lower()
    if backend not in ATTENTION_BACKENDS:
        raise InputError(f"unknown attention backend {name!r}; choose one of: {', '.join(ATTENTION_BACKENDS)}")
    available = available_attention_backends()
    if backend not in available:
        raise InputError(f"attention backend {backend!r} needs the {_ATTENTION_PACKAGES[backend]} package, which "
                         f"is not installed; available here: {', '.join(available)}")
    if backend != "native":
        device = pipe._execution_device
        if device.type != "cuda":
            raise InputError(f"attention backend {backend!r} runs on CUDA only, but the pipeline runs on "
                             f"{device.type}; use 'native'")
    try:
        pipe.transformer.set_attention_backend(backend)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"attention backend {backend!r} cannot be used here: {exc}") from exc
    return backend
