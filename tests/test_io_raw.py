"""Raw frames (.safetensors): streamed writes, memory-mapped reads, old files, damaged files."""

from __future__ import annotations

import json
import os
import struct
from fractions import Fraction

import numpy as np
import pytest

from framepack.errors import InputError, OutputError
from framepack.io.raw import RawFrames, RawFramesWriter, save_frames

SETTINGS = {"prompt": "a cat", "seed": 7, "sections": [{"start": 0, "prompt": "sits"}]}


def frames_of(count=10, height=12, width=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def write_safetensors(path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    """Hand-build a (possibly broken) safetensors file."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + raw + data)
    return path


def frames_header(shape, dtype="U8", offsets=None, metadata=None) -> dict:
    count = int(np.prod(shape)) if all(isinstance(d, int) and d >= 0 for d in shape) else 0
    header = {"frames": {"dtype": dtype, "shape": shape,
                         "data_offsets": offsets if offsets is not None else [0, count]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    return header


# ------------------------------------------------------------------ round trips

def test_round_trip_with_metadata(tmp_path):
    frames = frames_of()
    path = save_frames(tmp_path / "clip.safetensors", frames,
                       {"fps": "30000/1001", "interpolation": 1, "settings": SETTINGS})
    with RawFrames(path) as raw:
        assert len(raw) == 10 and raw.shape == (10, 12, 20, 3)
        assert (raw.height, raw.width) == (12, 20)
        assert raw.fps == Fraction(30000, 1001)
        assert raw.generated_fps == Fraction(15000, 1001)
        assert raw.interpolation == 1
        assert raw.settings == SETTINGS
        assert raw.metadata["frame_count"] == "10"
        assert np.array_equal(raw[:], frames)
    assert os.listdir(tmp_path) == ["clip.safetensors"]


def test_file_is_a_real_safetensors_file(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file
    frames = frames_of(5)
    path = save_frames(tmp_path / "clip.safetensors", frames, {"fps": 24, "settings": SETTINGS})
    assert np.array_equal(load_file(str(path))["frames"], frames)
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    assert meta["fps"] == "24" and json.loads(meta["settings"]) == SETTINGS
    assert meta["frame_count"] == "5" and meta["generated_fps"] == "24"
    assert meta["interpolation"] == "0"


def test_streaming_write_of_many_small_batches(tmp_path):
    frames = frames_of(240, 16, 24)
    path = tmp_path / "stream.safetensors"
    with RawFramesWriter(path, 16, 24, {"fps": 30}) as raw:
        i = 0
        for size in [1, 3, 2, 7] * 100:
            if i >= len(frames):
                break
            raw.write(frames[i:i + size])
            i += size
            assert raw.frames_written == min(i, len(frames))
    header_length = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_length % 8 == 0
    assert path.stat().st_size == 8 + header_length + frames.nbytes  # no slack after the data
    with RawFrames(path) as read:
        assert np.array_equal(read[:], frames)


def test_single_frames_accepted(tmp_path):
    frames = frames_of(3)
    with RawFramesWriter(tmp_path / "one.safetensors", 12, 20, fps=12) as raw:
        for frame in frames:
            raw.write(frame)
    with RawFrames(raw.path) as read:
        assert read.fps == 12 and np.array_equal(read[:], frames)


def test_memory_mapped_frame_by_frame(tmp_path):
    frames = frames_of(30)
    path = save_frames(tmp_path / "clip.safetensors", frames)
    with RawFrames(path) as raw:
        for i in range(len(raw)):
            frame = raw[i]
            assert not frame.flags.writeable and not frame.flags.owndata  # a view, no copy
            assert np.array_equal(frame, frames[i])
        assert np.array_equal(raw[-1], frames[-1])


@pytest.mark.parametrize("batch", [1, 4, 7, 30, 100])
def test_iter_batches(tmp_path, batch):
    frames = frames_of(30)
    path = save_frames(tmp_path / "clip.safetensors", frames)
    with RawFrames(path) as raw:
        batches = list(raw.iter_batches(batch))
        assert all(len(b) <= batch for b in batches)
        # views kept across the page release still read correctly
        assert np.array_equal(np.concatenate(batches), frames)
        assert np.array_equal(np.concatenate(list(raw.iter_batches(batch, start=5, stop=12))),
                              frames[5:12])


def test_large_frames_stream_through_page_release(tmp_path):
    frames = frames_of(12, 256, 256)  # frames larger than a page, batches not page aligned
    path = save_frames(tmp_path / "big.safetensors", frames)
    with RawFrames(path) as raw:
        for i, batch in enumerate(raw.iter_batches(5)):
            assert np.array_equal(batch, frames[i * 5:i * 5 + 5])


def test_empty_file_is_valid_but_empty(tmp_path):
    with RawFramesWriter(tmp_path / "empty.safetensors", 8, 8) as raw:
        pass
    with RawFrames(raw.path) as read:
        assert len(read) == 0 and list(read.iter_batches(4)) == []


def test_old_format_without_metadata(tmp_path):
    """Files the original extension wrote: safetensors.torch.save_file({'frames': ...})."""
    import torch
    from safetensors.torch import save_file
    frames = frames_of(6)
    path = tmp_path / "old.safetensors"
    save_file({"frames": torch.from_numpy(frames)}, str(path))
    with RawFrames(path) as raw:
        assert raw.fps == 30 and raw.generated_fps == 30 and raw.interpolation == 0
        assert raw.settings == {} and raw.metadata == {}
        assert np.array_equal(raw[:], frames)


def test_metadata_growing_past_the_reserve_still_writes(tmp_path):
    frames = frames_of(4)
    with RawFramesWriter(tmp_path / "grow.safetensors", 12, 20, {"fps": 30}) as raw:
        raw.write(frames)
        raw.metadata["settings"] = {"prompt": "p" * 10000}  # known only at the end
    with RawFrames(raw.path) as read:
        assert read.settings["prompt"] == "p" * 10000
        assert np.array_equal(read[:], frames)
    assert os.listdir(tmp_path) == ["grow.safetensors"]


def test_exception_mid_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with RawFramesWriter(tmp_path / "fail.safetensors", 12, 20) as raw:
            raw.write(frames_of(3))
            raise RuntimeError("stopped")
    assert os.listdir(tmp_path) == []


def test_dropped_writer_leaves_no_file(tmp_path):
    raw = RawFramesWriter(tmp_path / "drop.safetensors", 12, 20).open()
    raw.write(frames_of(2))
    del raw
    import gc
    gc.collect()
    assert os.listdir(tmp_path) == []


def test_writer_refuses_wrong_frames(tmp_path):
    with RawFramesWriter(tmp_path / "x.safetensors", 12, 20) as raw:
        with pytest.raises(OutputError, match=r"expects \[n, 12, 20, 3\]"):
            raw.write(np.zeros((1, 12, 21, 3), np.uint8))
        with pytest.raises(OutputError, match="uint8"):
            raw.write(np.zeros((1, 12, 20, 3), np.float32))
        raw.write(np.zeros((1, 12, 20, 3), np.uint8))


@pytest.mark.parametrize("kwargs,message", [
    ({"height": 0, "width": 10}, "positive frame size"),
    ({"height": 10, "width": 10, "metadata": {"fps": "fast"}}, "fps"),
    ({"height": 10, "width": 10, "metadata": {"interpolation": "two"}}, "interpolation"),
])
def test_writer_refuses_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        RawFramesWriter(tmp_path / "x.safetensors", **kwargs)


# ------------------------------------------------------------------ damaged files

def _valid_bytes(tmp_path) -> bytes:
    return save_frames(tmp_path / "valid.safetensors", frames_of(4, 8, 8)).read_bytes()


MALFORMED = {
    "empty file": lambda p: p.write_bytes(b""),
    "shorter than the length prefix": lambda p: p.write_bytes(b"\x10\x00\x00"),
    "header length larger than file": lambda p: write_safetensors(p, b"{}", length=4096),
    "absurd header length": lambda p: p.write_bytes(struct.pack("<Q", 2 ** 63) + b"{}" * 8),
    "zero header length": lambda p: write_safetensors(p, b"", length=0),
    "not json": lambda p: write_safetensors(p, b"this is not json at all"),
    "not utf-8": lambda p: write_safetensors(p, b"\xff\xfe{\"a\"}"),
    "json list": lambda p: write_safetensors(p, b"[1, 2, 3]"),
    "plain text file": lambda p: p.write_text("hello, I am a text file that is long enough"),
    "png renamed": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
    "missing frames tensor": lambda p: write_safetensors(
        p, {"latents": {"dtype": "U8", "shape": [1, 2, 2, 3], "data_offsets": [0, 12]}},
        b"\0" * 12),
    "frames not an object": lambda p: write_safetensors(p, {"frames": [1, 2]}),
    "wrong dtype": lambda p: write_safetensors(
        p, frames_header([1, 2, 2, 3], "F32", [0, 48]), b"\0" * 48),
    "rank 3": lambda p: write_safetensors(p, frames_header([2, 2, 3]), b"\0" * 12),
    "rank 5": lambda p: write_safetensors(p, frames_header([1, 1, 2, 2, 3]), b"\0" * 12),
    "four channels": lambda p: write_safetensors(p, frames_header([1, 2, 2, 4]), b"\0" * 16),
    "negative dimension": lambda p: write_safetensors(p, frames_header([1, -2, 2, 3], offsets=[0, 0])),
    "float dimension": lambda p: write_safetensors(p, frames_header([1, 2.0, 2, 3], offsets=[0, 12]),
                                                   b"\0" * 12),
    "zero width": lambda p: write_safetensors(p, frames_header([1, 2, 0, 3]), b""),
    "absurd frame size": lambda p: write_safetensors(
        p, frames_header([1, 10 ** 9, 10 ** 9, 3]), b"\0" * 64),
    "absurd frame count": lambda p: write_safetensors(
        p, frames_header([10 ** 15, 64, 64, 3]), b"\0" * 64),
    "offsets not matching shape": lambda p: write_safetensors(
        p, frames_header([2, 2, 2, 3], offsets=[0, 10]), b"\0" * 24),
    "offsets reversed": lambda p: write_safetensors(
        p, frames_header([1, 2, 2, 3], offsets=[12, 0]), b"\0" * 12),
    "offsets missing": lambda p: write_safetensors(
        p, {"frames": {"dtype": "U8", "shape": [1, 2, 2, 3]}}, b"\0" * 12),
    "truncated data": lambda p: write_safetensors(p, frames_header([4, 8, 8, 3]), b"\0" * 500),
    "metadata not strings": lambda p: write_safetensors(
        p, frames_header([1, 2, 2, 3], metadata={"fps": 30}), b"\0" * 12),
    "metadata not an object": lambda p: write_safetensors(
        p, {**frames_header([1, 2, 2, 3]), "__metadata__": "x"}, b"\0" * 12),
    "bad fps metadata": lambda p: write_safetensors(
        p, frames_header([1, 2, 2, 3], metadata={"fps": "fast"}), b"\0" * 12),
    "zero fps metadata": lambda p: write_safetensors(
        p, frames_header([1, 2, 2, 3], metadata={"fps": "0"}), b"\0" * 12),
    "bad interpolation metadata": lambda p: write_safetensors(
        p, frames_header([1, 2, 2, 3], metadata={"interpolation": "-1"}), b"\0" * 12),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_gives_clear_output_error(tmp_path, case):
    path = tmp_path / "bad.safetensors"
    MALFORMED[case](path)
    with pytest.raises(OutputError) as info:
        RawFrames(path)
    message = str(info.value)
    assert "bad.safetensors" in message
    assert "Traceback" not in message and len(message) < 300


@pytest.mark.parametrize("cut", [1, 7, 8, 20, 100, -1, -50])
def test_every_truncation_is_reported(tmp_path, cut):
    valid = _valid_bytes(tmp_path)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(valid[:cut])
    with pytest.raises(OutputError, match="cut.safetensors"):
        RawFrames(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        RawFrames(tmp_path / "nope.safetensors")
    with pytest.raises(OutputError, match="not a file"):
        RawFrames(tmp_path)


def test_bad_settings_json_does_not_lock_frames_away(tmp_path):
    frames = frames_of(2, 2, 2)
    path = write_safetensors(tmp_path / "s.safetensors",
                             frames_header([2, 2, 2, 3], metadata={"settings": "{broken"}),
                             frames.tobytes())
    with RawFrames(path) as raw:
        assert raw.settings == {} and np.array_equal(raw[:], frames)


def test_extra_tensors_and_trailing_offset_are_fine(tmp_path):
    frames = frames_of(2, 2, 2)
    header = {"thumb": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
              "frames": {"dtype": "U8", "shape": [2, 2, 2, 3], "data_offsets": [4, 28]}}
    path = write_safetensors(tmp_path / "multi.safetensors", header, b"\1" * 4 + frames.tobytes())
    with RawFrames(path) as raw:
        assert np.array_equal(raw[:], frames)
