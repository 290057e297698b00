"""Fake `modules.processing_video.apply_video_interpolation` (host RIFE): linear blends here.

Same call shape as the host's (`modules/processing_video.py` -> `modules/rife.interpolate_nchw`
with count + 1): a uint8 numpy batch [N, H, W, C] comes back as N * (count + 1) uint8 frames,
each frame preceded by `count` in-betweens from the frame before it (the first frame paired with
itself), converted through float 0..1 and truncated back to bytes as the host does. Like the
host, a failure is logged and the input is returned unchanged (`fake_fail` makes one happen).
"""

from __future__ import annotations

from typing import Any

fake_calls: list[dict] = []  # test-only
fake_fail: list[bool] = [False]  # test-only: pretend the RIFE model could not be loaded


def apply_video_interpolation(p: Any = None, frames: Any = None, count: int = 0, scale: float = 0.0, pad: int = 1,
                              change: float = 0.3):
    import numpy as np

    fake_calls.append({"count": count, "frames": None if frames is None else len(frames)})
    if frames is None:
        return frames
    if count <= 0:
        count = int(getattr(p, "video_interpolate", 0) or 0)
    if count <= 0:
        return frames
    if fake_fail[0]:
        from modules.logger import log

        log.error("Video interpolation: fake failure")
        return frames
    batch = np.asarray(frames).astype(np.float32) / 255.0
    out, previous = [], batch[0]
    for frame in batch:
        for i in range(count):
            t = (i + 1) / (count + 1)
            out.append(previous * (1 - t) + frame * t)
        out.append(frame)
        previous = frame
    result = (np.clip(np.stack(out), 0.0, 1.0) * 255.0).astype(np.uint8)  # .byte() truncates
    if p is not None:
        p.video_interpolated = True
    return result
