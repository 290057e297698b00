"""Stream finished frames out of the section loop without ever holding the whole video.

Each decoded section overlaps the previous one by `overlap` frames, which are cross-faded
linearly (the reference's soft append). Only that overlap is kept in RAM: every other frame
is final as soon as it is decoded. Forward (F1) output goes straight to the sink; the inverted
model produces the END of the video first, so its finished chunks spill to a file in a folder
the caller owns (the job's work folder) and are streamed back in time order when the video is
complete (or interrupted). Both can be saved and reopened to continue a job in a new process.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
from typing import Any, Callable

import numpy as np
import torch

from framepack.errors import OutputError

FrameSink = Callable[[np.ndarray], None]  # receives [n, H, W, 3] uint8 frames in time order
SPILL_READ_BATCH = 16


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] float in [-1, 1] -> [T, H, W, 3] uint8.

    Converted where the pixels are (the accelerator after a decode), so a quarter of the bytes of
    float32 cross to the host.
    """
    frames = ((pixels[0].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return frames.permute(1, 2, 3, 0).contiguous().cpu().numpy()


def cross_fade(leaving: torch.Tensor, arriving: torch.Tensor) -> torch.Tensor:
    """Linear blend along time: weight 1 -> 0 for `leaving`, 0 -> 1 for `arriving`."""
    weights = torch.linspace(1.0, 0.0, leaving.shape[2], dtype=leaving.dtype, device=leaving.device)
    weights = weights.view(1, 1, -1, 1, 1)
    return leaving * weights + arriving * (1.0 - weights)


class SpillFile:
    """Chunks of uint8 frames on disk, written in generation order, read back in reverse chunk order.

    The file lives in a folder the caller owns (the job's work folder). Its state is the file's
    name and the shape of every chunk, so another process can reopen it in the same folder,
    append to it and replay it (`state_dict` / `from_state`).
    """

    PREFIX, SUFFIX = "framepack-spill-", ".raw"

    def __init__(self, directory: str | os.PathLike | None = None):
        handle, self.path = tempfile.mkstemp(prefix=self.PREFIX, suffix=self.SUFFIX, dir=directory)
        self._file = os.fdopen(handle, "w+b")
        self._chunks: list[tuple[int, int, int, int]] = []  # [frames, height, width, channels] each

    def append(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(f"spilled frames must be [n, H, W, C] uint8, got {frames.dtype} {frames.shape}")
        self._file.seek(self._size())
        self._file.write(np.ascontiguousarray(frames).tobytes())
        self._chunks.append(tuple(int(n) for n in frames.shape))

    @property
    def frame_count(self) -> int:
        return sum(shape[0] for shape in self._chunks)

    def replay_reversed(self, sink: FrameSink) -> None:
        """Hand every chunk to `sink`, newest chunk first (time order for the inverted model).

        Read into a fresh batch of `SPILL_READ_BATCH` frames, not through a memory map, whose
        pages would count in the process's resident memory for as long as the chunk is mapped.
        """
        self._file.flush()
        offset = self._size()
        for shape in reversed(self._chunks):
            offset -= _chunk_bytes(shape)
            frame_bytes = _chunk_bytes(shape[1:])
            for start in range(0, shape[0], SPILL_READ_BATCH):
                count = min(SPILL_READ_BATCH, shape[0] - start)
                batch = np.empty((count, *shape[1:]), dtype=np.uint8)
                self._read_into(memoryview(batch).cast("B"), offset + start * frame_bytes)
                sink(batch)

    def _read_into(self, into: memoryview, offset: int) -> None:
        """Fill `into` from the file at `offset`; a file that ends first is an error, not short frames."""
        self._file.seek(offset)
        done = 0
        while done < len(into):
            count = self._file.readinto(into[done:])
            if not count:
                raise OutputError(f"the spill file {self.path} ended {len(into) - done} bytes early: "
                                  "the frames it held are lost")
            done += count

    def state_dict(self) -> dict[str, Any]:
        """The file's name and chunk shapes; the chunks are on disk when this returns."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return {"name": os.path.basename(self.path), "chunks": [list(shape) for shape in self._chunks]}

    @classmethod
    def from_state(cls, state: dict[str, Any], directory: str | os.PathLike) -> "SpillFile":
        """Reopen the spill file `state_dict()` described, in `directory`, to append to and replay.

        Bytes past the recorded chunks (a section that was being written when the process died)
        are cut off; a file shorter than its chunks is an error.
        """
        name, chunks = _checked_spill_state(state, cls.PREFIX, cls.SUFFIX)
        path = os.path.join(os.fspath(directory), name)
        try:
            handle = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        except OSError as error:
            raise OutputError(f"cannot reopen the spill file {path}: {error.strerror or error}") from None
        info, expected = os.fstat(handle), sum(_chunk_bytes(shape) for shape in chunks)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = f"the spill file {path} is not a regular file"
        elif info.st_size < expected:
            problem = (f"the spill file {path} holds {info.st_size} bytes but its state records {expected} bytes: "
                       "it was cut short, the frames it held are lost")
        if problem is not None:
            os.close(handle)
            raise OutputError(problem)
        spill = cls.__new__(cls)
        spill.path, spill._file, spill._chunks = path, os.fdopen(handle, "r+b"), chunks
        spill._file.truncate(expected)
        return spill

    def close(self, remove: bool = True) -> None:
        """Close the file and, unless `remove` is False (a saved state still names it), delete it."""
        if not self._file.closed:
            self._file.close()
        if remove and os.path.exists(self.path):
            os.unlink(self.path)

    def _size(self) -> int:
        return sum(_chunk_bytes(shape) for shape in self._chunks)


def _chunk_bytes(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _checked_spill_state(state: dict[str, Any], prefix: str, suffix: str) -> tuple[str, list[tuple[int, ...]]]:
    """The name and chunk shapes of a spill state, refusing anything a spill file could not have written."""
    try:
        name, chunks = state["name"], state["chunks"]
    except (KeyError, TypeError) as error:
        raise ValueError(f"spill file state is incomplete: missing {error}") from None
    if not (isinstance(name, str) and name.startswith(prefix) and name.endswith(suffix)
            and name == os.path.basename(name) and "\0" not in name and "\\" not in name):
        raise ValueError(f"spill file state names {name!r}, which is not a spill file name")
    shapes = [tuple(chunk) for chunk in chunks] if isinstance(chunks, (list, tuple)) else None
    if shapes is None or not all(len(shape) == 4 and all(type(n) is int and n > 0 for n in shape)
                                 for shape in shapes):
        raise ValueError("spill file state: chunks must be [frames, height, width, channels] with positive sizes")
    return name, shapes


class FrameAssembler:
    """Blends decoded sections, keeps only the overlap, and hands finished frames to the sink.

    Its state (`state_dict` / `from_state`) is the pending overlap frames, how many frames the
    sink has received and, for the inverted order, the spill file's state.
    """

    def __init__(self, overlap: int, sink: FrameSink, reverse: bool, spill_dir: str | os.PathLike | None = None):
        self.overlap = overlap
        self.sink = sink
        self.reverse = reverse
        self.pending: torch.Tensor | None = None  # frames a later blend may still change
        self.emitted = 0
        self._spill = SpillFile(spill_dir) if reverse else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "overlap": self.overlap,
            "reverse": self.reverse,
            "emitted": self.emitted,
            "pending": None if self.pending is None else self.pending.cpu().clone(),
            "spill": None if self._spill is None else self._spill.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], sink: FrameSink,
                   spill_dir: str | os.PathLike | None = None) -> "FrameAssembler":
        """The assembler `state_dict()` described; `spill_dir` is the folder that holds its spill file."""
        try:
            overlap, reverse, emitted = state["overlap"], state["reverse"], state["emitted"]
            pending, spill = state["pending"], state["spill"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"frame assembler state is incomplete: missing {error}") from None
        if type(overlap) is not int or overlap < 1 or type(emitted) is not int or emitted < 0:
            raise ValueError(f"frame assembler state: invalid overlap {overlap!r} or emitted count {emitted!r}")
        if type(reverse) is not bool or (spill is None) == reverse:
            raise ValueError("frame assembler state: the inverted order needs a spill file, the forward order none")
        if pending is not None and not (isinstance(pending, torch.Tensor) and pending.ndim == 5
                                        and pending.shape[:2] == (1, 3) and pending.shape[2] <= overlap):
            raise ValueError(f"frame assembler state: pending frames of shape {tuple(getattr(pending, 'shape', ()))} "
                             f"are not [1, 3, at most {overlap}, H, W]")
        if reverse and spill_dir is None:
            raise ValueError("frame assembler state: the folder holding the spill file is needed to reopen it")
        assembler = cls.__new__(cls)
        assembler.overlap, assembler.sink, assembler.reverse, assembler.emitted = overlap, sink, reverse, emitted
        assembler.pending = None if pending is None else pending.float()
        assembler._spill = SpillFile.from_state(spill, spill_dir) if reverse else None
        return assembler

    def add(self, pixels: torch.Tensor) -> int:
        """Take one decoded section ([1, 3, T, H, W]); return how many frames became final.

        Works where the pixels are: on an accelerator the blend runs there, the overlap waiting for
        the next section stays there (float32), and only finished frames come to the host, as uint8.
        """
        pixels = pixels.float()
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
        self.pending = self.pending.to(pixels.device)  # from a saved state it is on the host
        if self.reverse:  # the new section lies BEFORE the pending frames in time
            return torch.cat([pixels[:, :, :-n], cross_fade(pixels[:, :, -n:], self.pending)], dim=2)
        return torch.cat([cross_fade(self.pending, pixels[:, :, :n]), pixels[:, :, n:]], dim=2)

    def _release(self, frames: np.ndarray) -> None:
        if self._spill is not None:
            self._spill.append(frames)
            return
        self.sink(frames)
        self.emitted += len(frames)

    def finish(self, remove_spill: bool = True) -> int:
        """Flush the pending frames and, for the inverted order, the spilled chunks in time order.

        `remove_spill=False` keeps the spill file (a checkpoint that names it can still be resumed)."""
        if self.pending is not None and self.pending.shape[2]:
            pending = to_uint8_frames(self.pending)
            self.pending = None
            self.sink(pending)
            self.emitted += len(pending)
        if self._spill is not None:
            spilled = self._spill.frame_count
            self._spill.replay_reversed(self.sink)
            self.emitted += spilled
        self.close(remove_spill)
        return self.emitted

    def close(self, remove_spill: bool = True) -> None:
        if self._spill is not None:
            self._spill.close(remove_spill)
