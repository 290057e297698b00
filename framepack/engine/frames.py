"""Stream finished frames out of the section loop without ever holding the whole video.

Each decoded section overlaps the previous one by `overlap` frames, which are cross-faded
linearly (the reference's soft append). Only that overlap is kept in RAM: every other frame
is final as soon as it is decoded. Forward (F1) output goes straight to the sink; the inverted
model produces the END of the video first, so its finished chunks spill to a temporary file
and are streamed back in time order when the video is complete (or interrupted).
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import numpy as np
import torch

FrameSink = Callable[[np.ndarray], None]  # receives [n, H, W, 3] uint8 frames in time order
SPILL_READ_BATCH = 16


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] float in [-1, 1] -> [T, H, W, 3] uint8."""
    frames = ((pixels[0].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def cross_fade(leaving: torch.Tensor, arriving: torch.Tensor) -> torch.Tensor:
    """Linear blend along time: weight 1 -> 0 for `leaving`, 0 -> 1 for `arriving`."""
    weights = torch.linspace(1.0, 0.0, leaving.shape[2], dtype=leaving.dtype, device=leaving.device)
    weights = weights.view(1, 1, -1, 1, 1)
    return leaving * weights + arriving * (1.0 - weights)


class SpillFile:
    """Chunks of uint8 frames on disk, written in generation order, read back in reverse chunk order."""

    def __init__(self, directory: str | None = None):
        handle, self.path = tempfile.mkstemp(prefix="framepack-spill-", suffix=".raw", dir=directory)
        self._file = os.fdopen(handle, "w+b")
        self._chunks: list[tuple[int, tuple[int, ...]]] = []

    def append(self, frames: np.ndarray) -> None:
        self._chunks.append((self._file.tell(), frames.shape))
        self._file.write(np.ascontiguousarray(frames).tobytes())

    @property
    def frame_count(self) -> int:
        return sum(shape[0] for _, shape in self._chunks)

    def replay_reversed(self, sink: FrameSink) -> None:
        self._file.flush()
        for offset, shape in reversed(self._chunks):
            chunk = np.memmap(self.path, dtype=np.uint8, mode="r", offset=offset, shape=shape)
            for start in range(0, shape[0], SPILL_READ_BATCH):
                sink(np.array(chunk[start : start + SPILL_READ_BATCH]))
            del chunk

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


class FrameAssembler:
    """Blends decoded sections, keeps only the overlap, and hands finished frames to the sink."""

    def __init__(self, overlap: int, sink: FrameSink, reverse: bool, spill_dir: str | None = None):
        self.overlap = overlap
        self.sink = sink
        self.reverse = reverse
        self.pending: torch.Tensor | None = None  # frames a later blend may still change
        self.emitted = 0
        self._spill = SpillFile(spill_dir) if reverse else None

    def add(self, pixels: torch.Tensor) -> int:
        """Take one decoded section ([1, 3, T, H, W]); return how many frames became final."""
        pixels = pixels.float().cpu()
        joined = pixels if self.pending is None else self._join(pixels)
        keep = min(self.overlap, joined.shape[2])
        if self.reverse:
            finished, pending = joined[:, :, keep:], joined[:, :, :keep]
        else:
            finished, pending = joined[:, :, : joined.shape[2] - keep], joined[:, :, joined.shape[2] - keep :]
        self.pending = pending.clone()  # a view would keep the whole decoded section alive
        if finished.shape[2]:
            self._release(to_uint8_frames(finished))
        return finished.shape[2]

    def _join(self, pixels: torch.Tensor) -> torch.Tensor:
        n = self.overlap
        if self.reverse:  # the new section lies BEFORE the pending frames in time
            return torch.cat([pixels[:, :, :-n], cross_fade(pixels[:, :, -n:], self.pending)], dim=2)
        return torch.cat([cross_fade(self.pending, pixels[:, :, :n]), pixels[:, :, n:]], dim=2)

    def _release(self, frames: np.ndarray) -> None:
        if self._spill is not None:
            self._spill.append(frames)
            return
        self.sink(frames)
        self.emitted += len(frames)

    def finish(self) -> int:
        """Flush the pending frames and, for the inverted order, the spilled chunks in time order."""
        if self.pending is not None and self.pending.shape[2]:
            pending = to_uint8_frames(self.pending)
            self.pending = None
            self.sink(pending)
            self.emitted += len(pending)
        if self._spill is not None:
            spilled = self._spill.frame_count
            self._spill.replay_reversed(self.sink)
            self.emitted += spilled
        self.close()
        return self.emitted

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
