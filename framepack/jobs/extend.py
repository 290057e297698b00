"""Extending a clip: its frames go to the output first, its end conditions the new sections.

The clip is read once, as a stream: every frame is fitted to the output size (when the clip's
own size is not a bucket the model can generate, it is resized and cropped, and the job says so)
and sent to the output, except the last few, which a ring buffer holds back:

- F1 continues the clip: the last `continuation_frames` are VAE-encoded as the latent history
  and the last overlap frames are cross-faded with the first new section, the seam rule between
  any two sections. Output: the clip's frames, then `new_frames(plan)` new ones.
- the original model bridges the clip's last frame to the end image (or just continues from it):
  that frame is the start image, and the new part's first frame (the same frame, decoded again)
  is dropped, so the seam is the clip's own last frame. Output: the same count.

Memory stays flat whatever the clip's length: one batch and the ring buffer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from framepack.errors import InputError
from framepack.request.limits import RESOLUTION_RANGE, RESOLUTION_STEP
from framepack.request.planner import VideoPlan

DEFAULT_RESOLUTION = 640
READ_BATCH = 16


def new_frames(plan: VideoPlan) -> int:
    """Frames an extension adds after the clip: the plan's frames but its start frame (the clip's end)."""
    return plan.total_frames - 1


def frame_size_for(height: int, width: int, resolution: int | None = None) -> tuple[tuple[int, int], int, str | None]:
    """((height, width), resolution, note) of an extension of a `width` x `height` clip.

    The clip keeps its size when it is a bucket at some resolution (every FramePack video is);
    `resolution` is tried first. Otherwise it is fitted to the bucket of `resolution` (640 by
    default) and the note says so.
    """
    from framepack.engine.conditioning import pick_bucket

    low, high = RESOLUTION_RANGE
    tries = ([resolution] if resolution else []) + list(range(low, high + 1, RESOLUTION_STEP))
    for candidate in tries:
        if pick_bucket(height, width, candidate) == (height, width):
            return (height, width), candidate, None
    chosen = resolution or DEFAULT_RESOLUTION
    size = pick_bucket(height, width, chosen)
    for _ in range(4):  # at small resolutions the 16 px rounding can move a bucket's own bucket: settle it
        settled = pick_bucket(*size, chosen)
        if settled == size:
            break
        size = settled
    else:
        raise InputError(f"no frame size at resolution {chosen} fits a {width}x{height} clip; choose another "
                         f"resolution", ("resolution",))
    note = (f"the clip's frames are {width}x{height}, not a size the model generates: they are resized and "
            f"cropped to {size[1]}x{size[0]} (the {chosen} px bucket nearest its shape)")
    return size, chosen, note


def fit_frames(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames at `size` (height, width): unchanged when they have it, else resized and centre-cropped."""
    if batch.shape[1:3] == tuple(size):
        return batch
    from framepack.engine.conditioning import resize_and_crop

    return np.stack([resize_and_crop(frame, *size) for frame in batch])


@dataclass
class ClipEnd:
    """What the new sections need from the clip, once its other frames have been sent out."""

    last_frames: np.ndarray
    """The frames held back, uint8 [k, H, W, 3]: F1 encodes them; the original model starts from the last."""
    frames: int
    """Frames the clip had."""
    sent: int
    """Frames already sent to the output (the rest are cross-faded by the first new section, F1)."""

    @property
    def last_frame(self) -> np.ndarray:
        return self.last_frames[-1]


def stream_clip(path: Path, size: tuple[int, int], send: Callable[[np.ndarray], None], variant: str,
                window: int) -> ClipEnd:
    """Send the clip's frames to `send` (fitted to `size`) and return its end, held back for the model."""
    from framepack.engine.loop import continuation_frames
    from framepack.io.clip import open_clip

    overlap = 4 * window - 3
    keep = continuation_frames(window) if variant == "f1" else 1
    ring: deque[np.ndarray] = deque()
    count = sent = 0
    clip = open_clip(path)
    try:
        for batch in clip.iter_batches(READ_BATCH):
            fitted = fit_frames(batch, size)
            ring.extend(fitted)
            count += len(fitted)
            if len(ring) > keep:
                out = np.stack([ring.popleft() for _ in range(len(ring) - keep)])
                send(out)
                sent += len(out)
    finally:
        getattr(clip, "close", lambda: None)()
    if variant == "f1" and count < overlap:
        raise InputError(f"{path.name} has {count} frames; continuing it with the F1 model needs at least {overlap} "
                         f"(4 x latent window - 3) to cross-fade with the first new section")
    if count == 0:
        raise InputError(f"{path.name} holds no frames")
    held = np.stack(list(ring))
    out = held[: len(held) - overlap] if variant == "f1" else held
    if len(out):
        send(out)
        sent += len(out)
    return ClipEnd(held, count, sent)


@dataclass
class ClipJob:
    """The clip an extension job continues, and the size its frames are fitted to."""

    path: Path
    size: tuple[int, int]

    def start(self, request, send: Callable[[np.ndarray], None]):
        """Send the clip's frames out; return the request (its last frame as the start image) and the
        loop's start arguments (F1: the frames it continues from)."""
        end = stream_clip(self.path, self.size, send, request.variant, request.latent_window_size)
        request = request.replace(image=end.last_frame)
        return request, ({"continue_frames": end.last_frames} if request.variant == "f1" else {})
