"""Streaming video writer (PyAV) and the settings it embeds in the file.

The engine hands frames over in batches as sections finish; `VideoWriter` encodes them at once,
so RAM never holds the whole video. The file exists under a hidden temporary name until a clean
`close()`: an exception inside the `with` block, a Stop, or a writer that is simply dropped leaves
nothing behind. The full generation settings travel inside the container as JSON, so a video
found months later still says how it was made (`read_video_metadata`).

Odd frame sizes: chroma-subsampled formats (yuv420p ...) need even sizes. Rather than failing
after a long generation, frames are padded by repeating their last column/row up to the size the
pixel format needs; `writer.width/height` report the encoded size and `writer.padded` says
whether padding happened.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from framepack.errors import InputError, OutputError
from framepack.io import codecs
from framepack.io.fps import format_fps, parse_fps
from framepack.io.paths import AtomicWriter, publish, remove_quietly, temp_sibling, unique_output_path

log = logging.getLogger(__name__)

SETTINGS_KEY = "framepack_settings"
"""Container tag holding the settings JSON (mkv/webm keep any tag; mp4/mov with use_metadata_tags)."""
COMMENT_KEY = "comment"
"""Also written: the one tag every container (avi included) keeps and players show."""
MAX_SETTINGS_CHARS = 1_000_000
"""Longest settings tag read back: our own are far smaller (prompt and schedule limits)."""

_MUXER_OPTIONS = {"mp4": {"movflags": "use_metadata_tags"}, "mov": {"movflags": "use_metadata_tags"}}
_BT709 = 1
_BT601 = 5


def settings_json(metadata: dict | None) -> str | None:
    """Serialize settings for embedding; non-JSON values (paths, enums) become strings."""
    if metadata is None:
        return None
    try:
        return json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError) as e:
        raise InputError(f"video metadata cannot be stored as JSON: {e}") from e


def as_frame_batch(frames) -> np.ndarray:
    """View input as a uint8 [n, H, W, 3] array; a single [H, W, 3] frame becomes n=1."""
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise OutputError(f"frames must be an array of shape [n, height, width, 3], "
                          f"got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        raise OutputError(f"frames must be uint8 (0-255), got {array.dtype}")
    return array


def pad_to_alignment(batch: np.ndarray, height: int, width: int) -> np.ndarray:
    """Repeat the last row/column so a batch reaches the encoded size (no-op when equal)."""
    extra_h, extra_w = height - batch.shape[1], width - batch.shape[2]
    if extra_h == 0 and extra_w == 0:
        return batch
    return np.pad(batch, ((0, 0), (0, extra_h), (0, extra_w), (0, 0)), mode="edge")


class VideoWriter(AtomicWriter):
    """Encode frames into `path` with PyAV; a context manager with explicit lifetime.

        with VideoWriter("out.mp4", fps=30, codec="libx264", crf=16, metadata=settings) as w:
            for batch in batches:          # uint8 [n, H, W, 3], any n
                w.write(batch)
        print(w.path)                      # the published file

    Everything that can be checked before the first frame is checked in the constructor (codec
    works here, container can hold it, options and pixel format valid), so a bad setting fails
    before generation starts. The frame size comes from the first batch.
    """

    def __init__(self, path, fps, codec: str = "libx264", options=None, pix_fmt: str | None = None,
                 metadata: dict | None = None, crf: float | int | None = None, *,
                 overwrite: bool = False, work=None):
        self.path = Path(path)
        self.work = work  # WorkFolder for the unfinished file (None: hidden next to the final one)
        self.muxer = codecs.container_for(self.path)
        self.fps = parse_fps(fps)
        self.codec = codec
        codecs.check_codec(codec)
        self.pix_fmt = codecs.pick_pix_fmt(codec, pix_fmt)
        self.options = codecs.expand_aliases(
            codecs.with_quality(codec, codecs.parse_options(options), crf))
        codecs.check_encoder_settings(codec, self.muxer, self.options, self.pix_fmt)
        self.metadata = dict(metadata) if metadata is not None else None
        self._settings = settings_json(self.metadata)
        self.overwrite = overwrite
        self.width: int | None = None
        self.height: int | None = None
        self.source_size: tuple[int, int] | None = None
        self.padded = False
        self.frames_written = 0
        self._temp: Path | None = None
        self._container = None
        self._stream = None
        self._closed = False

    # ---------------------------------------------------------------- lifetime

    def open(self) -> "VideoWriter":
        """Create the temporary file and container; idempotent."""
        if self._container is not None:
            return self
        if self._closed:
            raise OutputError("this video writer is already closed")
        folder = self.path.parent
        if not folder.is_dir():
            raise OutputError(f"output folder {str(folder)!r} does not exist")
        if self.path.is_dir():
            raise OutputError(f"{str(self.path)!r} is a folder, not a video file name")
        import av
        self._temp = temp_sibling(self.path, work=self.work)
        try:
            self._container = av.open(str(self._temp), "w", format=self.muxer,
                                      options=dict(_MUXER_OPTIONS.get(self.muxer, {})))
        except Exception as e:
            remove_quietly(self._temp)
            self._temp = None
            raise OutputError(f"cannot create {str(self.path)!r}: {e}") from e
        if self._settings is not None:
            self._container.metadata[COMMENT_KEY] = self._settings
            self._container.metadata[SETTINGS_KEY] = self._settings
        return self

    def close(self) -> Path:
        """Flush the encoder, finish the container and publish the file; returns its path."""
        if self._closed:
            return self.path
        if self._container is None:
            self.open()
        if self._stream is None:
            self.abort()
            raise OutputError(f"no frames were written, so {str(self.path)!r} was not created")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(self._timestamps(packet))
            self._container.close()
        except Exception as e:
            self.abort()
            raise OutputError(f"could not finish {str(self.path)!r}: {e}") from e
        self._container = None
        self.path = publish(self._temp, self.path, overwrite=self.overwrite)
        self._temp = None
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; the final name is never created."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # already failing: the temp file goes away regardless
                pass
        remove_quietly(self._temp)
        self._temp = None
        self._closed = True

    # ---------------------------------------------------------------- frames

    def write(self, frames) -> None:
        """Encode a batch (uint8 [n, H, W, 3] RGB, or one [H, W, 3] frame)."""
        if self._closed:
            raise OutputError("cannot write to a closed video writer")
        if self._container is None:
            self.open()
        batch = as_frame_batch(frames)
        if batch.shape[0] == 0:
            return
        if self._stream is None:
            self._start_stream(batch.shape[1], batch.shape[2])
        if (batch.shape[1], batch.shape[2]) != self.source_size:
            raise OutputError(f"frame size changed from {self.source_size[1]}x{self.source_size[0]}"
                              f" to {batch.shape[2]}x{batch.shape[1]} in the middle of a video")
        batch = pad_to_alignment(batch, self.height, self.width)
        try:
            for frame in batch:
                self._encode_one(frame)
        except Exception as e:
            raise OutputError(f"encoding {str(self.path)!r} failed at frame "
                              f"{self.frames_written}: {e}") from e

    __call__ = write  # a writer is itself a frame sink for the engine

    def _start_stream(self, height: int, width: int) -> None:
        """Create the video stream once the frame size is known (from the first batch)."""
        if height < 2 or width < 2:
            raise OutputError(f"frames of {width}x{height} pixels are too small to encode")
        align_x, align_y = codecs.chroma_alignment(self.pix_fmt)
        self.source_size = (height, width)
        self.height = -(-height // align_y) * align_y
        self.width = -(-width // align_x) * align_x
        self.padded = (self.height, self.width) != (height, width)
        if self.padded:
            log.warning("frame size %dx%d is not a multiple of %dx%d required by %s; padding to %dx%d",
                        width, height, align_x, align_y, self.pix_fmt, self.width, self.height)
        stream = self._container.add_stream(self.codec, rate=self.fps, options=dict(self.options))
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"  # frame threads where the encoder has them, as ffmpeg does
        ctx.thread_count = 0
        self._color = _colorimetry(self.pix_fmt)
        if self._color is not None:
            ctx.colorspace, ctx.color_range = self._color
            ctx.color_primaries = ctx.color_trc = _BT709 if self._color[0] == _BT709 else _BT601
        self._stream = stream
        self._timestamps = codecs.SaneTimestamps(self.fps)

    def _encode_one(self, rgb: np.ndarray) -> None:
        import av
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if self._color is not None:
            frame = frame.reformat(format=self.pix_fmt, dst_colorspace=self._color[0],
                                   dst_color_range=self._color[1], threads=0)
        elif self.pix_fmt != "rgb24":
            frame = frame.reformat(format=self.pix_fmt, threads=0)
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(self._timestamps(packet))
        self.frames_written += 1

    @property
    def duration(self) -> float:
        """Seconds of video written so far."""
        return float(self.frames_written / self.fps)

    def describe(self) -> dict:
        """What was (or is being) written, for logs, the API and `--json` output."""
        return {"path": str(self.path), "codec": self.codec, "pix_fmt": self.pix_fmt,
                "fps": format_fps(self.fps), "frames": self.frames_written,
                "width": self.width, "height": self.height, "options": dict(self.options)}


def _colorimetry(pix_fmt: str) -> tuple[int, int] | None:
    """(matrix, range) for YUV outputs: BT.709 limited, or BT.601 full for JPEG-style yuvj.

    Converting with an explicit matrix and tagging it lets browsers show the colours we meant;
    untagged BT.601 (FFmpeg's default) looks washed or shifted in players that assume BT.709.
    RGB outputs need no matrix (None).
    """
    color_range = codecs.color_range_for(pix_fmt)
    if color_range == 0:
        return None
    if color_range == 2:
        return _BT601, 2
    return _BT709, 1


# ------------------------------------------------------------------------------ OpenCV backend

class Cv2VideoWriter(AtomicWriter):
    """Fallback writer through OpenCV's `cv2.VideoWriter` with the `mp4v` codec.

    For machines where PyAV misbehaves; same `write/close/abort` lifetime and atomic publish as
    VideoWriter, but no codec choice, no options and no embedded metadata (OpenCV cannot).
    """

    FOURCC = "mp4v"

    def __init__(self, path, fps, *, overwrite: bool = False, work=None):
        self.path = Path(path)
        self.work = work
        if self.path.suffix.lower() not in (".mp4", ".mov", ".avi", ".mkv", ".m4v"):
            raise InputError(f"the cv2 backend writes .mp4/.mov/.avi/.mkv files, "
                             f"not {self.path.suffix or 'files without extension'}")
        self.fps = parse_fps(fps)
        self.codec, self.pix_fmt, self.options = "mpeg4", "yuv420p", {}
        self.overwrite = overwrite
        self.width = self.height = None
        self.frames_written = 0
        self._writer = None
        self._temp: Path | None = None
        self._closed = False

    def write(self, frames) -> None:
        """Encode a batch of RGB frames (converted to BGR for OpenCV)."""
        import cv2
        if self._closed:
            raise OutputError("cannot write to a closed video writer")
        batch = as_frame_batch(frames)
        if batch.shape[0] == 0:
            return
        if self._writer is None:
            self._start(batch.shape[1], batch.shape[2])
        if (batch.shape[1], batch.shape[2]) != (self.height, self.width):
            raise OutputError("frame size changed in the middle of a video")
        for frame in batch:
            self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            self.frames_written += 1

    __call__ = write  # a writer is itself a frame sink for the engine

    def _start(self, height: int, width: int) -> None:
        import cv2
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder {str(self.path.parent)!r} does not exist")
        self.height, self.width = height, width
        self._temp = temp_sibling(self.path, work=self.work)
        fourcc = cv2.VideoWriter_fourcc(*self.FOURCC)
        self._writer = cv2.VideoWriter(str(self._temp), fourcc, float(self.fps), (width, height))
        if not self._writer.isOpened():
            self.abort()
            raise OutputError(f"OpenCV could not open a {self.FOURCC} writer for {str(self.path)!r}")

    def close(self) -> Path:
        """Finish the file and publish it under its final name."""
        if self._closed:
            return self.path
        if self._writer is None:
            self._closed = True
            raise OutputError(f"no frames were written, so {str(self.path)!r} was not created")
        self._writer.release()
        self._writer = None
        self.path = publish(self._temp, self.path, overwrite=self.overwrite)
        self._temp = None
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        remove_quietly(self._temp)
        self._temp = None
        self._closed = True

    def describe(self) -> dict:
        return {"path": str(self.path), "codec": self.codec, "pix_fmt": self.pix_fmt,
                "fps": format_fps(self.fps), "frames": self.frames_written,
                "width": self.width, "height": self.height, "options": {}}


# ------------------------------------------------------------------------------ reading back

def read_video_metadata(path) -> dict:
    """The generation settings embedded by VideoWriter, or {} when the file has none.

    Looks for our own tag first (any letter case: Matroska upper-cases tag names), then a JSON
    object in the comment tag (the only tag AVI keeps).
    """
    tags = _container_tags(path)
    lowered = {k.lower(): v for k, v in tags.items()}
    for key in (SETTINGS_KEY, COMMENT_KEY):
        text = lowered.get(key)
        if not text or len(text) > MAX_SETTINGS_CHARS:  # a forged file's oversized tag is not ours
            continue
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON in a forged tag
            continue
        if isinstance(value, dict):
            return value
    return {}


def _container_tags(path) -> dict:
    import av
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"video file {str(path)!r} does not exist")
    try:
        with av.open(str(path)) as container:
            return dict(container.metadata)
    except Exception as e:
        raise OutputError(f"cannot read {str(path)!r} as a video: {e}") from e


__all__ = ["VideoWriter", "Cv2VideoWriter", "read_video_metadata", "settings_json",
           "as_frame_batch", "unique_output_path", "SETTINGS_KEY", "COMMENT_KEY"]
