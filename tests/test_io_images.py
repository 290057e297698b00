"""Frame images: numbered files in a fresh folder that appears only when complete."""

from __future__ import annotations

import os

import numpy as np
import pytest

from framepack.errors import InputError, OutputError
from framepack.io.images import FrameImageWriter, export_images


def frames_of(count=5) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, 10, 14, 3), dtype=np.uint8)


def read_rgb(path) -> np.ndarray:
    import cv2
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_png_numbered_and_exact(tmp_path):
    frames = frames_of()
    folder, count = export_images([frames[:2], frames[2:]], tmp_path, "clip_frames", "png")
    assert folder == tmp_path / "clip_frames" and count == 5
    names = sorted(os.listdir(folder))
    assert names == [f"frame_{i:06d}.png" for i in range(1, 6)]
    for i, name in enumerate(names):
        assert np.array_equal(read_rgb(folder / name), frames[i])
    assert sorted(os.listdir(tmp_path)) == ["clip_frames"]  # no temp folder left


@pytest.mark.parametrize("fmt,ext", [("jpg", ".jpg"), ("jpeg", ".jpg"), ("webp", ".webp"),
                                     ("PNG", ".png")])
def test_formats(tmp_path, fmt, ext):
    folder, _ = export_images([frames_of(2)], tmp_path, "f", fmt)
    assert sorted(os.listdir(folder)) == [f"frame_00000{i}{ext}" for i in (1, 2)]
    assert read_rgb(folder / f"frame_000001{ext}").shape == (10, 14, 3)


def test_each_export_gets_a_fresh_folder(tmp_path):
    a, _ = export_images([frames_of(1)], tmp_path, "clip")
    b, _ = export_images([frames_of(1)], tmp_path, "clip")
    assert (a.name, b.name) == ("clip", "clip-1")


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with FrameImageWriter(tmp_path, "clip") as images:
            images.write(frames_of(3))
            raise RuntimeError("stopped")
    assert os.listdir(tmp_path) == []


def test_no_frames_no_folder(tmp_path):
    with pytest.raises(OutputError, match="no frames"):
        export_images([], tmp_path, "clip")
    assert os.listdir(tmp_path) == []


def test_bad_format_and_frames(tmp_path):
    with pytest.raises(InputError, match="unsupported image format 'bmp'"):
        FrameImageWriter(tmp_path, "clip", "bmp")
    with pytest.raises(InputError, match="quality"):
        FrameImageWriter(tmp_path, "clip", "jpg", quality=0)
    with FrameImageWriter(tmp_path, "clip") as images:
        images.write(frames_of(1))
        with pytest.raises(OutputError, match="uint8"):
            images.write(np.zeros((1, 4, 4, 3), np.float32))


def test_name_cannot_escape(tmp_path):
    folder, _ = export_images([frames_of(1)], tmp_path / "out", "../../escape")
    assert folder.parent == tmp_path / "out"
