"""Frame upscaling, applied to frames as they stream out (before encoding; memory stays flat).

`Lanczos` is always there (OpenCV); `ModelUpscaler` runs an upscaler model file (ESRGAN family,
loaded with spandrel) frame by frame and fits its native scale to the asked factor with Lanczos.
Output sizes are even (4:2:0 video needs it) and the same for every frame.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from framepack.errors import InputError

BUILTIN = "lanczos"


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """(height, width) times `factor`, rounded to even numbers (at least 2)."""
    return max(2, 2 * round(height * factor / 2)), max(2, 2 * round(width * factor / 2))


def lanczos_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One RGB frame resized to (height, width) with Lanczos (unchanged when it already has that size)."""
    import cv2

    if frame.shape[:2] == size:
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LANCZOS4)


class Lanczos:
    """Lanczos (8x8 kernel) resampling."""

    name = BUILTIN

    def __init__(self, factor: float):
        self.factor = float(factor)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        size = scaled_size(frames.shape[1], frames.shape[2], self.factor)
        return np.stack([lanczos_resize(frame, size) for frame in frames])


class ModelUpscaler:
    """An upscaler model (a spandrel descriptor) at its native scale, then Lanczos to `factor`."""

    def __init__(self, descriptor: Any, factor: float, name: str = "model"):
        self.descriptor, self.factor, self.name = descriptor, float(factor), name

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch

        size = scaled_size(frames.shape[1], frames.shape[2], self.factor)
        device = self.descriptor.device
        dtype = torch.float16 if device.type == "cuda" and self.descriptor.supports_half else torch.float32
        self.descriptor.to(dtype=dtype)
        out = []
        with torch.inference_mode():
            for frame in frames:  # one at a time: the model's activations at output size are the peak
                image = torch.from_numpy(np.array(frame)).to(device).permute(2, 0, 1)[None]
                result = self.descriptor(image.to(dtype) / 255.0)[0].clamp(0, 1)
                pixels = (result.permute(1, 2, 0).float() * 255.0).round().to(torch.uint8).cpu().numpy()
                out.append(lanczos_resize(pixels, size))
        return np.stack(out)


def make_upscaler(upscaler: str, factor: float, device: Any = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """`lanczos` or a model file (already resolved to a path on this machine) at `factor`."""
    if not 1.0 <= float(factor) <= 4.0:
        raise InputError(f"upscale factor must be between 1 and 4, got {factor!r}", ("upscale",))
    if upscaler == BUILTIN:
        return Lanczos(factor)
    from pathlib import Path

    from framepack.models.upscalers import load_upscaler_model

    return ModelUpscaler(load_upscaler_model(upscaler, device), factor, Path(upscaler).name)


class UpscalingSink:
    """Push-style: upscales each batch and hands it on (to the interpolator / writers)."""

    def __init__(self, sink: Callable[[np.ndarray], None], upscaler: Callable[[np.ndarray], np.ndarray]):
        self.sink, self.upscaler = sink, upscaler

    def write(self, frames: np.ndarray) -> None:
        if len(frames):
            self.sink(self.upscaler(np.asarray(frames)))

    __call__ = write
