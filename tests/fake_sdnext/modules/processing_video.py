"""Fake `modules.processing_video.apply_video_interpolation` (host RIFE): linear blends here."""

from __future__ import annotations

from typing import Any

fake_calls: list[dict] = []  # test-only


def apply_video_interpolation(p: Any = None, frames: Any = None, count: int = 0, scale: float = 0.0, pad: int = 1,
                              change: float = 0.3):
    """np.ndarray (N,H,W,C) in 0..1 -> (N-1)*(count+1)+1 frames."""
    import numpy as np

    fake_calls.append({"count": count, "frames": None if frames is None else len(frames)})
    if frames is None:
        return frames
    if count <= 0:
        count = int(getattr(p, "video_interpolate", 0) or 0)
    if count <= 0:
        return frames
    frames = np.asarray(frames)
    out = []
    for a, b in zip(frames[:-1], frames[1:]):
        out.append(a)
        for k in range(1, count + 1):
            t = k / (count + 1)
            out.append(a * (1 - t) + b * t)
    out.append(frames[-1])
    if p is not None:
        p.video_interpolated = True
    return np.stack(out)
