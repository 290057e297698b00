"""Fake `modules.sd_models`: unload, offload (balanced and the other modes) and move_model.

Every call is recorded in `fake_calls` as (name, details) with `lock` = whether the GPU lock
was held at the time.
"""

from __future__ import annotations

from modules import call_queue, devices, shared
from modules.logger import log
from modules.modeldata import model_data
from modules.sd_checkpoint import CheckpointInfo  # noqa: F401  (re-exported like SD.Next)

fake_calls: list[tuple[str, dict]] = []  # test-only


def _record(name, **details):
    details["lock"] = call_queue.queue_lock.locked()
    fake_calls.append((name, details))


def move_model(model, device=None, force=False):
    _record("move_model", model=model, device=device, force=force)
    if model is None or device is None:
        return
    if hasattr(model, "to") and str(device) != "meta":
        model.to(device)


def unload_model_weights(op="model"):
    _record("unload_model_weights", op=op, model=model_data.sd_model)
    if op == "model" and model_data.sd_model is not None:
        disable_offload(model_data.sd_model)
        model_data.sd_model = None
        devices.torch_gc(force=True, reason="unload")


def disable_offload(sd_model):
    if getattr(sd_model, "has_accelerate", False):
        sd_model.has_accelerate = False


def apply_balanced_offload(sd_model=None, exclude: list[str] | None = None, force: bool = False, silent: bool = False):
    mode = shared.opts.diffusers_offload_mode
    _record("apply_balanced_offload", model=sd_model, mode=mode, applied=mode == "balanced")
    if mode != "balanced":
        return sd_model
    if sd_model is None:
        if not shared.sd_loaded:
            return sd_model
        sd_model = shared.sd_model
    if sd_model is None:
        return sd_model
    sd_model.has_accelerate = True
    return sd_model


def set_diffuser_offload(sd_model, op: str = "model", quiet: bool = False, force: bool = False):
    """Like SD.Next's (modules/sd_offload.py): the same diffusers calls with the same arguments; model and
    sequential offload errors are logged and swallowed, group offload errors propagate."""
    mode = shared.opts.diffusers_offload_mode
    _record("set_diffuser_offload", model=sd_model, mode=mode, op=op,
            exclude=list(getattr(sd_model, "_exclude_from_cpu_offload", []) or []))
    if sd_model is None:
        log.warning(f"{op} is not loaded")
        return
    if mode == "none":
        sd_model.has_accelerate = False
        move_model(sd_model, devices.device)
    elif mode == "model" and hasattr(sd_model, "enable_model_cpu_offload"):
        try:
            sd_model.enable_model_cpu_offload(device=devices.device)
            sd_model.has_accelerate = True
        except Exception as e:
            log.error(f"Setting {op}: offload={mode} {e}")
    elif mode == "sequential" and hasattr(sd_model, "enable_sequential_cpu_offload"):
        try:
            if not getattr(sd_model, "has_accelerate", False):
                sd_model.enable_sequential_cpu_offload(device=devices.device)
            sd_model.has_accelerate = True
        except Exception as e:
            log.error(f"Setting {op}: offload={mode} {e}")
    elif mode == "group":
        sd_model.enable_group_offload(onload_device=devices.device, offload_device=devices.cpu,
                                      offload_type="block_level", num_blocks_per_group=1, non_blocking=False,
                                      use_stream=False, record_stream=False, low_cpu_mem_usage=False,
                                      exclude_modules=["vae"])
        sd_model.has_accelerate = True
    elif mode == "balanced":
        apply_balanced_offload(sd_model, force=force)
