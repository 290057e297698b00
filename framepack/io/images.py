"""Frames as numbered image files (`frame_000001.png` ...) in a fresh folder.

Images are written into a hidden temporary folder next to the destination and the folder is
renamed into place when the last frame is done, so a reader never sees half an export, and a
failed export leaves nothing. The destination is always a new folder (a counter is added when
the name is taken): exporting twice never mixes or overwrites frames.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from framepack.errors import InputError, OutputError
from framepack.io.paths import AtomicWriter, publish, temp_sibling, unique_output_path

IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}
DIGITS = 6


def image_extension(fmt: str) -> str:
    """`.png`/`.jpg`/`.webp` for a format name; anything else is a user error."""
    ext = IMAGE_FORMATS.get(str(fmt).lower().lstrip("."))
    if ext is None:
        raise InputError(f"unsupported image format {fmt!r}; use one of: png, jpg, webp")
    return ext


def _encode_params(ext: str, quality: int) -> list[int]:
    """OpenCV encoder parameters: quality for lossy formats, fast-but-small zlib level for png."""
    import cv2
    if ext == ".jpg":
        return [cv2.IMWRITE_JPEG_QUALITY, quality]
    if ext == ".webp":
        return [cv2.IMWRITE_WEBP_QUALITY, quality]
    return [cv2.IMWRITE_PNG_COMPRESSION, 3]


class FrameImageWriter(AtomicWriter):
    """Write RGB frames as numbered images into a new folder `parent/<name>[-N]`.

        with FrameImageWriter(out_dir, "clip_frames", "png") as images:
            images.write(batch)        # uint8 [n, H, W, 3] or one [H, W, 3]
        images.folder                  # the published folder
    """

    def __init__(self, parent, name: str = "frames", fmt: str = "png", quality: int = 95,
                 prefix: str = "frame_", work=None):
        self.ext = image_extension(fmt)
        self.work = work  # WorkFolder for the unfinished folder (None: hidden next to the final one)
        if not 1 <= int(quality) <= 100:
            raise InputError(f"image quality must be 1-100, got {quality}")
        self.quality = int(quality)
        self.prefix = prefix
        self.folder = unique_output_path(parent, name, "")
        self.frames_written = 0
        self._temp: Path | None = None
        self._closed = False

    def open(self) -> "FrameImageWriter":
        if self._temp is None:
            self._temp = temp_sibling(self.folder, keep_suffix=False, work=self.work)
            try:
                self._temp.mkdir()
            except OSError as e:
                self._temp = None
                raise OutputError(f"cannot create {str(self.folder)!r}: {e.strerror or e}") from e
        return self

    def file_name(self, index: int) -> str:
        """1-based, zero-padded: frame_000001.png (more digits past 999999 frames)."""
        return f"{self.prefix}{index:0{DIGITS}d}{self.ext}"

    def write(self, frames) -> None:
        """Encode and store each frame of the batch."""
        import cv2
        if self._closed:
            raise OutputError("cannot write to a closed image writer")
        self.open()
        batch = np.asarray(frames)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise OutputError(f"frames must be uint8 [n, H, W, 3], got {batch.dtype} "
                              f"{tuple(batch.shape)}")
        params = _encode_params(self.ext, self.quality)
        for frame in batch:
            ok, data = cv2.imencode(self.ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise OutputError(f"OpenCV could not encode a {self.ext} image")
            target = self._temp / self.file_name(self.frames_written + 1)
            try:
                target.write_bytes(data.tobytes())
            except OSError as e:
                raise OutputError(f"writing {str(target)!r} failed: {e.strerror or e}") from e
            self.frames_written += 1

    __call__ = write  # a writer is itself a frame sink for the engine

    def close(self) -> Path:
        """Publish the folder under its final name; returns it."""
        if self._closed:
            return self.folder
        if self.frames_written == 0:
            self.abort()
            raise OutputError("no frames were written, so no image folder was created")
        self.folder = publish(self._temp, self.folder)
        self._temp = None
        self._closed = True
        return self.folder

    def abort(self) -> None:
        """Remove the temporary folder and everything in it."""
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
        self._closed = True


def export_images(batches, parent, name: str = "frames", fmt: str = "png",
                  quality: int = 95) -> tuple[Path, int]:
    """Write every frame of an iterable of batches; returns (folder, frame count)."""
    with FrameImageWriter(parent, name, fmt, quality) as images:
        for batch in batches:
            images.write(batch)
    return images.folder, images.frames_written
