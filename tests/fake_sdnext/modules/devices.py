"""Fake `modules.devices` (CPU): device, dtype, cpu, torch_gc, inference_context."""

import torch

cpu = torch.device("cpu")
device = torch.device("cpu")
dtype = torch.float32
dtype_vae = torch.float32
backend = "cpu"
inference_context = torch.no_grad
fake_gc_calls: list[dict] = []  # test-only


def torch_gc(force: bool = False, fast: bool = False, reason: str | None = None):
    import gc

    fake_gc_calls.append({"force": force, "fast": fast, "reason": reason})
    if force:
        gc.collect()
