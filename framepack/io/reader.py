"""Reading frames back: video files through PyAV, and one `open_frames` for raw or video input.

The CLI's `info`, `export`, `encode` and `interpolate` accept either a raw `.safetensors` file
or a video; both are exposed with the same small interface (fps, size, frame count, settings,
`iter_batches`) so each command is written once.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from framepack.errors import OutputError
from framepack.io.fps import format_fps
from framepack.io.raw import RawFrames
from framepack.io.writer import read_video_metadata

RAW_EXTENSIONS = (".safetensors",)


class VideoFrames:
    """A video file decoded to RGB frames on demand (never all at once)."""

    def __init__(self, path):
        import av
        self.path = Path(path)
        if not self.path.is_file():
            raise OutputError(f"video file {str(self.path)!r} does not exist")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise OutputError(f"{str(self.path)!r} has no video stream")
                stream = container.streams.video[0]
                self.codec = stream.codec_context.name
                self.pix_fmt = stream.codec_context.pix_fmt
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                self.fps = Fraction(stream.average_rate or stream.guessed_rate or 0)
                self.container_format = container.format.name
                self.frame_count = stream.frames or _count_packets(container, stream)
                self.bit_rate = container.bit_rate
        except OutputError:
            raise
        except Exception as e:
            raise OutputError(f"cannot read {str(self.path)!r} as a video: {e}") from e
        self.settings = read_video_metadata(self.path)
        self.metadata = {"fps": format_fps(self.fps)} if self.fps else {}
        self.interpolation = 0
        self.generated_fps = self.fps

    def __len__(self) -> int:
        return self.frame_count

    @property
    def duration(self) -> float:
        return float(self.frame_count / self.fps) if self.fps else 0.0

    def iter_batches(self, batch_size: int = 16) -> Iterator[np.ndarray]:
        """Decode in order, yielding uint8 [<=batch_size, H, W, 3] RGB arrays."""
        import av

        try:
            with av.open(str(self.path)) as container:
                yield from decode_batches(container, batch_size)
        except av.FFmpegError as e:
            raise OutputError(f"decoding {str(self.path)!r} failed: {e}") from e

    def close(self) -> None:
        """Nothing stays open between batches; present for symmetry with RawFrames."""

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        """Summary for `framepack_cli.py info`."""
        return {"path": str(self.path), "kind": "video", "container": self.container_format,
                "codec": self.codec, "pix_fmt": self.pix_fmt, "frames": self.frame_count,
                "width": self.width, "height": self.height, "fps": format_fps(self.fps),
                "duration": round(self.duration, 3), "bit_rate": self.bit_rate,
                "settings": self.settings}


def _count_packets(container, stream) -> int:
    """Frame count for containers that do not store it (Matroska): count packets, no decode."""
    count = 0
    for packet in container.demux(stream):
        if packet.size:
            count += 1
    return count


def open_frames(path) -> RawFrames | VideoFrames:
    """Open raw frames (`.safetensors`) or a video file as a frame source."""
    path = Path(path)
    if not path.exists():
        raise OutputError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise OutputError(f"{str(path)!r} is a folder, expected a .safetensors or video file")
    if path.suffix.lower() in RAW_EXTENSIONS:
        return RawFrames(path)
    return VideoFrames(path)


def decode_batches(container, batch_size: int, check=None) -> Iterator[np.ndarray]:
    """The first video stream of an open PyAV container as uint8 RGB batches in time order;
    `check(frame)` runs on every frame before it is converted (limits, counts)."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    batch: list[np.ndarray] = []
    for frame in container.decode(stream):
        if check is not None:
            check(frame)
        batch.append(frame.to_ndarray(format="rgb24"))
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)
