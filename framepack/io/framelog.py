"""The frames a job has already sent to its outputs, kept in its work folder so a resume can resend them.

A video file that was being written when its process died cannot be continued (its index is
missing), so a resumed job writes every output again from the first frame. The frames it had
streamed out before the interruption come from here: an append-only file of uint8 RGB frames in
time order. Its length counts only once `sync()` has put it on disk; a checkpoint records that
count, and `FrameLog.reopen` cuts off anything written after it (a section that was being
streamed when the process died). Reading back is memory-mapped, batch by batch.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import numpy as np

from framepack.errors import OutputError

LOG_NAME = "frames.log"


class FrameLog:
    """Append-only [n, H, W, 3] uint8 frames of one size, in time order."""

    def __init__(self, path: str | os.PathLike, height: int, width: int, *, _handle: int | None = None,
                 _frames: int = 0):
        self.path = Path(path)
        if not (type(height) is int and type(width) is int and height > 0 and width > 0):
            raise OutputError(f"a frame log needs a positive frame size, got {width}x{height}")
        self.height, self.width = height, width
        self.frame_bytes = height * width * 3
        if _handle is None:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
            try:
                _handle = os.open(self.path, flags, 0o644)
            except OSError as error:
                raise OutputError(f"cannot create the frame log {str(self.path)!r}: {error.strerror or error}") from None
        self._file = os.fdopen(_handle, "r+b")
        self.frames = _frames
        self._file.seek(self.frames * self.frame_bytes)

    @classmethod
    def reopen(cls, path: str | os.PathLike, height: int, width: int, frames: int) -> "FrameLog":
        """The log as a checkpoint recorded it: `frames` frames, anything after them cut off."""
        path = Path(path)
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            handle = os.open(path, flags)
        except OSError as error:
            raise OutputError(f"cannot reopen the frame log {str(path)!r}: {error.strerror or error}") from None
        info, expected = os.fstat(handle), frames * height * width * 3
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = f"the frame log {str(path)!r} is not a regular file"
        elif info.st_size < expected:
            problem = (f"the frame log {str(path)!r} holds {info.st_size} bytes but the checkpoint records "
                       f"{frames} frames ({expected} bytes): it was cut short")
        if problem is not None:
            os.close(handle)
            raise OutputError(problem)
        os.ftruncate(handle, expected)
        return cls(path, height, width, _handle=handle, _frames=frames)

    def append(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise OutputError(f"the frame log holds uint8 [n, {self.height}, {self.width}, 3] frames, "
                              f"got {frames.dtype} {tuple(frames.shape)}")
        self._file.write(memoryview(np.ascontiguousarray(frames)).cast("B"))
        self.frames += len(frames)

    __call__ = append

    def sync(self) -> int:
        """Put every appended frame on disk; returns the frame count a checkpoint may record."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self.frames

    def iter_batches(self, batch: int = 16, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames [0, stop) in time order, `batch` at a time (copies: the map closes behind)."""
        self._file.flush()
        stop = self.frames if stop is None else min(stop, self.frames)
        if stop == 0:
            return
        frames = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(stop, self.height, self.width, 3))
        try:
            for first in range(0, stop, batch):
                yield np.array(frames[first:first + batch])
        finally:
            del frames

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
