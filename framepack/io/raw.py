"""Raw frames in `.safetensors`: written as a stream, read memory-mapped.

File layout (the safetensors format): 8-byte little-endian header length N, N bytes of JSON
header, then the data. Ours holds one tensor, `frames`, uint8 [T, H, W, 3], exactly what the
original extension saved (so its files open here), plus string metadata:

    fps            playback rate of the frames in this file ("30" or "30000/1001")
    generated_fps  rate at which the model produced them (fps / (interpolation + 1))
    interpolation  frames inserted between generated frames (0 = none)
    frame_count    T, repeated for tools that only read metadata
    settings       the full generation settings, JSON

T is only known at the end, so the writer reserves room for the header at the start of a
temporary file, appends frame data as batches arrive, then writes the final header into the
reserved room (padded with spaces, which JSON allows) and renames the file into place. Nothing
but one batch is ever in RAM. Readers validate every header field against the file size before
mapping it, so a damaged file gives one clear `OutputError`, never a numpy or struct traceback.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import struct
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from framepack.errors import InputError, OutputError
from framepack.io.fps import format_fps, parse_fps
from framepack.io.paths import AtomicWriter, publish, remove_quietly, temp_sibling

log = logging.getLogger(__name__)

TENSOR = "frames"
DEFAULT_FPS = Fraction(30)
FORMAT_TAG = "framepack.frames"
MAX_HEADER_BYTES = 100_000_000
"""The safetensors library's own limit; anything larger is damage, not a header."""
MAX_SIDE = 65536
_HEADER_SLACK = 512
_COPY_CHUNK = 16 << 20


def _to_metadata(metadata: dict | None) -> dict[str, str]:
    """safetensors metadata must be str -> str: numbers become text, dicts/lists JSON."""
    result: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        if isinstance(value, Fraction):
            text = format_fps(value)
        elif isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        else:
            text = str(value)
        result[str(key)] = text
    return result


def _header_bytes(frames: int, height: int, width: int, metadata: dict[str, str]) -> bytes:
    """The JSON header for a `frames` tensor of T frames, compact and UTF-8."""
    header = {
        "__metadata__": metadata,
        TENSOR: {"dtype": "U8", "shape": [frames, height, width, 3],
                 "data_offsets": [0, frames * height * width * 3]},
    }
    return json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8


class RawFramesWriter(AtomicWriter):
    """Stream frame batches into a safetensors file without holding the video in RAM.

        with RawFramesWriter(path, height, width, {"fps": 30, "settings": {...}}) as raw:
            raw.write(batch)            # uint8 [n, H, W, 3], any n
        raw.path                        # the published file

    `metadata` may be changed until close (e.g. interpolation known late); `frame_count` is
    filled in at close. Like the video writer, the file appears only on a clean close.
    """

    def __init__(self, path, height: int, width: int, metadata: dict | None = None, *,
                 fps=None, overwrite: bool = False, work=None):
        self.path = Path(path)
        self.work = work  # WorkFolder for the unfinished file (None: hidden next to the final one)
        if not (isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))
                and 0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
            raise InputError(f"raw frames need a positive frame size, got {width}x{height}")
        self.height, self.width = int(height), int(width)
        self.metadata = dict(metadata or {})
        if fps is not None:
            self.metadata["fps"] = fps
        self.fps = parse_fps(self.metadata.get("fps", DEFAULT_FPS))
        self.metadata["fps"] = self.fps
        interpolation = self.metadata.get("interpolation", 0)
        if not str(interpolation).isdigit():
            raise InputError(f"interpolation must be a whole number >= 0, got {interpolation!r}")
        self.overwrite = overwrite
        self.frames_written = 0
        self._frame_bytes = self.height * self.width * 3
        self._file = None
        self._temp: Path | None = None
        self._reserved = 0
        self._closed = False

    def _final_metadata(self, frame_count: int) -> dict[str, str]:
        meta = {"format": FORMAT_TAG, "interpolation": 0, **self.metadata}
        meta["frame_count"] = frame_count
        if "generated_fps" not in meta:
            meta["generated_fps"] = self.fps / (int(meta["interpolation"]) + 1)
        return _to_metadata(meta)

    def open(self) -> "RawFramesWriter":
        """Create the temp file with room for the largest header this file could need."""
        if self._file is not None:
            return self
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder {str(self.path.parent)!r} does not exist")
        biggest = 10 ** 13
        worst = _header_bytes(biggest, self.height, self.width, self._final_metadata(biggest))
        self._reserved = _round8(len(worst) + _HEADER_SLACK)
        self._temp = temp_sibling(self.path, work=self.work)
        try:
            self._file = open(self._temp, "w+b")
            self._file.write(b"\0" * (8 + self._reserved))
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot create {str(self.path)!r}: {e.strerror or e}") from e
        return self

    def write(self, frames) -> None:
        """Append a batch (uint8 [n, H, W, 3] or one [H, W, 3] frame) to the file."""
        if self._closed:
            raise OutputError("cannot write to a closed raw frames writer")
        if self._file is None:
            self.open()
        batch = np.asarray(frames)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (self.height, self.width, 3):
            raise OutputError(f"raw frames writer expects [n, {self.height}, {self.width}, 3], "
                              f"got {tuple(batch.shape)}")
        if batch.dtype != np.uint8:
            raise OutputError(f"raw frames must be uint8, got {batch.dtype}")
        try:
            self._file.write(memoryview(np.ascontiguousarray(batch)).cast("B"))
        except OSError as e:
            raise OutputError(f"writing {str(self.path)!r} failed: {e.strerror or e}") from e
        self.frames_written += batch.shape[0]

    __call__ = write  # a writer is itself a frame sink for the engine

    def close(self) -> Path:
        """Write the final header and publish the file; returns its path."""
        if self._closed:
            return self.path
        if self._file is None:
            self.open()
        try:
            header = _header_bytes(self.frames_written, self.height, self.width,
                                   self._final_metadata(self.frames_written))
            if len(header) <= self._reserved:
                self._patch_header(header)
            else:
                self._rewrite_with_header(header)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        except OSError as e:
            self.abort()
            raise OutputError(f"finishing {str(self.path)!r} failed: {e.strerror or e}") from e
        self.path = publish(self._temp, self.path, overwrite=self.overwrite)
        self._temp = None
        self._closed = True
        return self.path

    def _patch_header(self, header: bytes) -> None:
        """Fill the reserved room: length prefix, header, spaces up to the data start."""
        self._file.seek(0)
        self._file.write(struct.pack("<Q", self._reserved))
        self._file.write(header + b" " * (self._reserved - len(header)))

    def _rewrite_with_header(self, header: bytes) -> None:
        """Metadata grew past the reserve: copy the data behind a bigger header, in chunks."""
        size = _round8(len(header))
        bigger = temp_sibling(self.path, work=self.work)
        with open(bigger, "wb") as out:
            out.write(struct.pack("<Q", size))
            out.write(header + b" " * (size - len(header)))
            self._file.seek(8 + self._reserved)
            shutil.copyfileobj(self._file, out, _COPY_CHUNK)
        self._file.close()
        remove_quietly(self._temp)
        self._temp = bigger
        self._file = open(bigger, "r+b")

    def abort(self) -> None:
        """Drop the partial file."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        remove_quietly(self._temp)
        self._temp = None
        self._closed = True


def save_frames(path, frames: np.ndarray, metadata: dict | None = None, **kwargs) -> Path:
    """Write an in-memory [T, H, W, 3] array in one go (tests, small clips)."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise OutputError(f"frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    with RawFramesWriter(path, frames.shape[1], frames.shape[2], metadata, **kwargs) as raw:
        raw.write(frames)
    return raw.path


# ------------------------------------------------------------------------------ reading

class RawFrames:
    """Read-only, memory-mapped view of a raw frames file.

        with RawFrames(path) as raw:
            raw.fps, len(raw), raw.height, raw.width, raw.settings
            first = raw[0]                            # [H, W, 3], no copy
            for batch in raw.iter_batches(16): ...    # streamed, pages released behind

    Files from the original extension (only a `frames` tensor, no metadata) get defaults:
    fps 30, no interpolation, empty settings.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._mm: mmap.mmap | None = None
        self._array: np.ndarray | None = None
        header, data_start, size = _read_header(self.path)
        self.metadata: dict[str, str] = _metadata_of(header, self.path)
        shape, begin = _frames_entry(header, data_start, size, self.path)
        self.frame_count, self.height, self.width = shape[0], shape[1], shape[2]
        self._offset = data_start + begin
        self.fps = _rate(self.metadata.get("fps"), DEFAULT_FPS, "fps", self.path)
        self.interpolation = _int_field(self.metadata.get("interpolation"), 0, self.path)
        self.generated_fps = _rate(self.metadata.get("generated_fps"),
                                   self.fps / (self.interpolation + 1), "generated_fps", self.path)
        self.settings = _settings_of(self.metadata.get("settings"), self.path)
        self._map()

    def _map(self) -> None:
        """Map the file read-only and view the frame region as [T, H, W, 3] without copying."""
        if self.frame_count == 0:
            self._array = np.zeros((0, self.height, self.width, 3), dtype=np.uint8)
            return
        try:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise OutputError(f"cannot map {str(self.path)!r}: {e}") from e
        count = self.frame_count * self.height * self.width * 3
        flat = np.frombuffer(self._mm, dtype=np.uint8, count=count, offset=self._offset)
        self._array = flat.reshape(self.frame_count, self.height, self.width, 3)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.frame_count, self.height, self.width, 3)

    @property
    def duration(self) -> float:
        return float(self.frame_count / self.fps)

    def __len__(self) -> int:
        return self.frame_count

    def __getitem__(self, index) -> np.ndarray:
        """Frames by index or slice, as read-only views into the mapped file."""
        if self._array is None:
            raise OutputError(f"raw frames file {str(self.path)!r} is closed")
        return self._array[index]

    def iter_batches(self, batch_size: int = 16, start: int = 0,
                     stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield [<=batch_size, H, W, 3] views in time order.

        Pages of batches already consumed are handed back to the kernel (MADV_DONTNEED), so
        streaming a file larger than RAM keeps the process small; a view kept by the caller
        still reads correctly (the pages come back from the file on access).
        """
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        stop = self.frame_count if stop is None else min(stop, self.frame_count)
        frame_bytes = self.height * self.width * 3
        released = self._offset
        for first in range(max(0, start), stop, batch_size):
            yield self[first:min(first + batch_size, stop)]
            released = self._release(released, self._offset + (first + batch_size) * frame_bytes)

    def _release(self, begin: int, end: int) -> int:
        """Drop whole pages in [begin, end) from this process; returns the new low mark."""
        if self._mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return begin
        page = mmap.PAGESIZE
        start = begin // page * page
        end = min(end, len(self._mm)) // page * page
        if end > start:
            try:
                self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                return begin
            return end
        return begin

    def close(self) -> None:
        """Unmap the file (views still held by callers keep it alive until they go)."""
        self._array = None
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # a caller still holds a frame view; the map closes when it is dropped

    def __enter__(self) -> "RawFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        """Summary for `framepack_cli.py info` and the API."""
        return {"path": str(self.path), "kind": "raw", "frames": self.frame_count,
                "width": self.width, "height": self.height, "fps": format_fps(self.fps),
                "generated_fps": format_fps(self.generated_fps),
                "interpolation": self.interpolation, "duration": round(self.duration, 3),
                "settings": self.settings, "metadata": dict(self.metadata)}


# ------------------------------------------------------------------------------ validation

def _fail(path: Path, why: str) -> OutputError:
    return OutputError(f"{str(path)!r} is not a usable raw frames file: {why}")


def _read_header(path: Path) -> tuple[dict, int, int]:
    """Parse length prefix and JSON header; returns (header, data_start, file_size)."""
    if not path.exists():
        raise OutputError(f"raw frames file {str(path)!r} does not exist")
    if not path.is_file():
        raise OutputError(f"{str(path)!r} is not a file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _fail(path, f"only {size} bytes long, not a safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
                raise _fail(path, f"header length {length} does not fit a {size}-byte file "
                                  f"(not a safetensors file, or truncated)")
            raw = f.read(length)
    except OSError as e:
        raise OutputError(f"cannot read {str(path)!r}: {e.strerror or e}") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _fail(path, "the header is not valid JSON (not a safetensors file?)") from None
    if not isinstance(header, dict):
        raise _fail(path, "the header is not a JSON object")
    return header, 8 + length, size


def _metadata_of(header: dict, path: Path) -> dict[str, str]:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail(path, "__metadata__ must map names to strings")
    return dict(meta)


def _frames_entry(header: dict, data_start: int, size: int, path: Path) -> tuple[list[int], int]:
    """Validate the `frames` entry; returns (shape, begin offset within the data region)."""
    entry = header.get(TENSOR)
    if entry is None:
        names = [k for k in header if k != "__metadata__"]
        found = ", ".join(repr(n) for n in names[:5]) or "no tensors"
        raise _fail(path, f"it has no {TENSOR!r} tensor (found {found})")
    if not isinstance(entry, dict):
        raise _fail(path, f"the {TENSOR!r} entry is not an object")
    if entry.get("dtype") != "U8":
        raise _fail(path, f"frames must be uint8 (U8), found dtype {entry.get('dtype')!r}")
    shape = entry.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise _fail(path, f"frames must have shape [T, H, W, 3], found {shape!r}")
    if shape[3] != 3:
        raise _fail(path, f"frames must have 3 colour channels (RGB), found {shape[3]}")
    if not (0 < shape[1] <= MAX_SIDE and 0 < shape[2] <= MAX_SIDE):
        raise _fail(path, f"frame size {shape[2]}x{shape[1]} is not plausible")
    offsets = entry.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise _fail(path, f"invalid data_offsets {offsets!r}")
    needed = shape[0] * shape[1] * shape[2] * 3
    if offsets[1] - offsets[0] != needed:
        raise _fail(path, f"data_offsets span {offsets[1] - offsets[0]} bytes but shape "
                          f"{shape} needs {needed}")
    available = size - data_start
    if offsets[1] > available:
        raise _fail(path, f"the file is truncated: frame data needs {offsets[1]} bytes after "
                          f"the header, only {available} are present")
    return shape, offsets[0]


def _rate(text: str | None, default: Fraction, name: str, path: Path) -> Fraction:
    if text is None or text == "":
        return default
    try:
        return parse_fps(text, name)
    except InputError as e:
        raise _fail(path, f"metadata {e}") from None


def _int_field(text: str | None, default: int, path: Path) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _fail(path, f"metadata interpolation {text!r} is not a whole number") from None
    if value < 0:
        raise _fail(path, f"metadata interpolation {value} is negative")
    return value


def _settings_of(text: str | None, path: Path) -> dict:
    """Settings JSON; a damaged settings string must not lock the frames away, so warn only."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("%s: settings metadata is not valid JSON; ignoring it", path)
        return {}
    return value if isinstance(value, dict) else {"value": value}
