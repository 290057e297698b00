"""Measure the peak bytes of tensors a piece of PyTorch code keeps alive, on any device.

`LiveTensorPeak` is a `TorchDispatchMode`: every operator's fresh output storage is counted when
it appears and uncounted when the storage is freed (a weak reference expires). Views and in-place
results share their input's storage and are not counted again; tensors that existed before the
context (weights, inputs) are not counted at all. The result is the working set the code adds,
what CUDA's `max_memory_allocated` would show above the weights, without allocator caching or
kernels' private workspaces. It works on the meta device too, so a full-size model can be traced
on a laptop without any memory.

`efficient_attention()` makes `F.scaled_dot_product_attention` use the memory-efficient kernel's
operator while measuring: on the CPU and the meta device PyTorch otherwise falls back to the math
path, which builds the tokens x tokens score matrix that CUDA's kernels never allocate.
Measurement only: the patch is undone on exit.

Used by `benchmarks/vae_memory.py` (calibration), `benchmarks/gpu.py --tiny` (CPU peak) and the
planner's tests.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorPeak(TorchDispatchMode):
    """`with LiveTensorPeak() as tracker: run()` -> `tracker.peak_bytes`, `tracker.peak_op`."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self.peak_op: str | None = None

    def _forget_freed(self) -> None:
        freed = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in freed:
            self.current_bytes -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        self._forget_freed()
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            ref = StorageWeakRef(storage)
            if ref.cdata not in self._live:
                self._live[ref.cdata] = (ref, storage.nbytes())
                self.current_bytes += storage.nbytes()
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_op = self.current_bytes, str(func)
        return out


def _efficient_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    out = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask, False, dropout_p,
                                                                  is_causal, scale=scale)
    return out[0]


@contextmanager
def efficient_attention() -> Iterator[None]:
    """Route `F.scaled_dot_product_attention` through the memory-efficient kernel's operator."""
    original = torch.nn.functional.scaled_dot_product_attention
    torch.nn.functional.scaled_dot_product_attention = _efficient_sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


def peak_bytes(fn, *args, **kwargs) -> tuple[int, object]:
    """(peak bytes added while running fn(*args, **kwargs), its result), under no_grad."""
    with torch.no_grad(), LiveTensorPeak() as tracker:
        result = fn(*args, **kwargs)
    return tracker.peak_bytes, result
