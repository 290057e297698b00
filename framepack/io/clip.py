"""Reading a clip to continue (`extend`): a video file or raw frames, decoded as a stream, within limits.

A clip may come from anyone (an upload to the API), so it is read like hostile input:

- only real video containers are opened (MP4/MOV, Matroska/WebM, AVI, GIF), recognised from
  their first bytes and opened with that demuxer named explicitly. FFmpeg is never left to guess,
  so a playlist or concat script (HLS, ffconcat) that would make it open other files or URLs is
  refused, and MP4 external data references stay off;
- the declared frame size is checked before anything is decoded, and every decoded frame again
  (a size change mid-stream cannot smuggle in a huge frame); the frame count is capped while
  decoding; the frame rate must be one the writers can encode;
- frames are decoded batch by batch and never all held at once.

Every problem is one `InputError` saying what is wrong with the clip.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from framepack.errors import InputError, OutputError
from framepack.io.fps import format_fps
from framepack.request.limits import MAX_FPS, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MIN_FPS

MAX_CLIP_FRAMES = 36000
"""Frames of a clip to continue (20 minutes at 30 fps): all of them pass through the output again."""
MIN_CLIP_SIDE = 16

_DEMUXERS = (  # (first bytes test, FFmpeg demuxer, name users know)
    (lambda head: head[:4] == b"\x1aE\xdf\xa3", "matroska", "Matroska/WebM"),
    (lambda head: head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"), "mov", "MP4/MOV"),
    (lambda head: head[:4] == b"RIFF" and head[8:12] == b"AVI ", "avi", "AVI"),
    (lambda head: head[:6] in (b"GIF87a", b"GIF89a"), "gif", "GIF"),
)
_DEMUXER_OPTIONS = {"mov": {"enable_drefs": "0", "use_absolute_path": "0"}}


def open_clip(path: str | Path) -> "VideoClip | RawClip":
    """The clip in `path`: raw frames (`.safetensors`) or a video file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the clip {str(path)!r} does not exist or is not a file")
    head = _head(path)
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 100_000_000:
        return RawClip(path)
    return VideoClip(path, head)


class VideoClip:
    """A video file, decoded to RGB frames on demand."""

    kind = "video"

    def __init__(self, path: Path, head: bytes | None = None):
        import av

        self.path = path
        head = _head(path) if head is None else head
        found = next(((demuxer, label) for test, demuxer, label in _DEMUXERS if test(head)), None)
        if found is None:
            raise InputError(f"{path.name} is not a video this can continue: use an MP4, MOV, MKV, WebM, AVI "
                             f"or GIF file, or raw frames (.safetensors)")
        self.demuxer, self.container_name = found
        try:
            with self._open() as container:
                if not container.streams.video:
                    raise InputError(f"{path.name} has no video stream")
                stream = container.streams.video[0]
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                rate = stream.average_rate or stream.guessed_rate
                self.fps = Fraction(rate) if rate else Fraction(0)
                self.declared_frames = int(stream.frames or 0)
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"{path.name} cannot be read as a {self.container_name} video: {error}") from None
        _check_size(self.width, self.height, path.name)
        if not MIN_FPS <= float(self.fps) <= MAX_FPS:
            raise InputError(f"{path.name} plays at {float(self.fps):g} fps; a clip to continue must be between "
                             f"{MIN_FPS:g} and {MAX_FPS:g} fps")

    def _open(self):
        import av

        return av.open(str(self.path), format=self.demuxer, options=dict(_DEMUXER_OPTIONS.get(self.demuxer, {})))

    def iter_batches(self, batch_size: int = 16) -> Iterator[np.ndarray]:
        """uint8 [<=batch_size, H, W, 3] RGB batches in time order; limits checked frame by frame."""
        import av

        batch: list[np.ndarray] = []
        count = 0
        try:
            with self._open() as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    _check_size(frame.width, frame.height, self.path.name)
                    count += 1
                    if count > MAX_CLIP_FRAMES:
                        raise InputError(f"{self.path.name} has more than {MAX_CLIP_FRAMES} frames, the most a clip "
                                         f"to continue may have; cut it first (its end is what matters)")
                    batch.append(frame.to_ndarray(format="rgb24"))
                    if len(batch) == batch_size:
                        yield np.stack(batch)
                        batch = []
        except av.FFmpegError as error:
            raise InputError(f"decoding {self.path.name} failed after {count} frames: {error}") from None
        if batch:
            yield np.stack(batch)

    def describe(self) -> dict:
        return {"name": self.path.name, "kind": self.kind, "container": self.container_name,
                "width": self.width, "height": self.height, "fps": format_fps(self.fps),
                "frames": self.declared_frames or None}


class RawClip:
    """Raw frames (`.safetensors`, as FramePack saves them), memory-mapped."""

    kind = "raw"

    def __init__(self, path: Path):
        from framepack.io.raw import RawFrames

        self.path = path
        try:
            self._raw = RawFrames(path)
        except OutputError as error:
            raise InputError(str(error)) from None
        self.width, self.height, self.fps = self._raw.width, self._raw.height, self._raw.fps
        self.declared_frames = self._raw.frame_count
        _check_size(self.width, self.height, path.name)
        if self.declared_frames > MAX_CLIP_FRAMES:
            raise InputError(f"{path.name} has {self.declared_frames} frames; a clip to continue may have at most "
                             f"{MAX_CLIP_FRAMES}")
        if not MIN_FPS <= float(self.fps) <= MAX_FPS:
            raise InputError(f"{path.name} plays at {float(self.fps):g} fps; a clip to continue must be between "
                             f"{MIN_FPS:g} and {MAX_FPS:g} fps")

    def iter_batches(self, batch_size: int = 16) -> Iterator[np.ndarray]:
        for batch in self._raw.iter_batches(batch_size):
            yield np.array(batch)

    def describe(self) -> dict:
        return {"name": self.path.name, "kind": self.kind, "container": "safetensors", "width": self.width,
                "height": self.height, "fps": format_fps(self.fps), "frames": self.declared_frames}

    def close(self) -> None:
        self._raw.close()


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(16)
    except OSError as error:
        raise InputError(f"cannot read the clip {path.name}: {error.strerror or error}") from None


def _check_size(width: int, height: int, name: str) -> None:
    if not (MIN_CLIP_SIDE <= width <= MAX_IMAGE_SIDE and MIN_CLIP_SIDE <= height <= MAX_IMAGE_SIDE
            and width * height <= MAX_IMAGE_PIXELS):
        raise InputError(f"{name} has frames of {width}x{height}; a clip to continue needs frames between "
                         f"{MIN_CLIP_SIDE} and {MAX_IMAGE_SIDE} px per side and at most "
                         f"{MAX_IMAGE_PIXELS // (1024 * 1024)} megapixels")
