"""Which offload hooks a module carries (diffusers group offload, accelerate model/sequential).

Kept apart from `offload` (which applies offloading) and `quantize` (which must refuse modules
whose weights a hook already moved), so that neither of those imports the other's internals.
"""

from __future__ import annotations

from typing import Any


def offload_state(model: Any) -> str | None:
    """Which offload hooks a module carries: 'model', 'sequential', 'group' or None."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and any("group_offloading" in name for name in getattr(registry, "hooks", {})):
            return "group"
    top = getattr(model, "_hf_hook", None)
    if top is not None and type(top).__name__ == "CpuOffload":
        return "model"
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and getattr(hook, "offload", False):
            return "sequential"
    return None
