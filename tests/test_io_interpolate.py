"""Frame interpolation: counts, untouched originals, streaming, and flow beating a cross-fade."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from framepack.errors import InputError
from framepack.io.interpolate import interpolate, output_count

HEIGHT, WIDTH, SIDE = 192, 256, 48


def _texture() -> np.ndarray:
    import cv2
    noise = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(noise, (0, 0), 1.5)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


TEXTURE = _texture()


def scene(x: int) -> np.ndarray:
    """A textured square at column x over a smooth gradient background."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = xx, yy, 60
    image[72:72 + SIDE, x:x + SIDE] = TEXTURE
    return image


def clip(count: int, step: int = 4) -> list[np.ndarray]:
    return [scene(40 + step * i) for i in range(count)]


@pytest.mark.parametrize("method", ["flow", "blend"])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_counts_and_untouched_originals(method, k):
    frames = clip(4)
    out = list(interpolate(iter(frames), k, method))
    assert len(out) == output_count(len(frames), k) == (len(frames) - 1) * (k + 1) + 1
    for i, original in enumerate(frames):
        assert np.array_equal(out[i * (k + 1)], original)
    assert all(f.shape == frames[0].shape and f.dtype == np.uint8 for f in out)


def test_zero_passes_frames_through_unchanged():
    frames = clip(3)
    out = list(interpolate(frames, 0))
    assert all(a is b for a, b in zip(out, frames))


def test_batches_in_frames_out():
    frames = np.stack(clip(5))
    out = list(interpolate([frames[:2], frames[2:]], 1, "blend"))
    assert len(out) == 9 and all(f.ndim == 3 for f in out)


def test_short_inputs():
    assert list(interpolate([], 3)) == []
    single = clip(1)
    assert len(list(interpolate(single, 3))) == 1
    assert output_count(0, 3) == 0 and output_count(1, 3) == 1


def test_streams_without_reading_everything():
    endless = (scene(40 + (i % 8)) for i in itertools.count())
    first = list(itertools.islice(interpolate(endless, 2, "blend"), 7))
    assert len(first) == 7


def test_blend_is_the_linear_cross_fade():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 90, np.uint8)
    out = list(interpolate([a, b], 2, "blend"))
    assert [int(f[0, 0, 0]) for f in out] == [0, 30, 60, 90]


@pytest.mark.parametrize("shift", [8, 16])
def test_flow_lands_closer_to_the_true_midpoint_than_blend(shift):
    start, end, truth = scene(60), scene(60 + shift), scene(60 + shift // 2)
    flow_mid = list(interpolate([start, end], 1, "flow"))[1]
    blend_mid = list(interpolate([start, end], 1, "blend"))[1]
    flow_error = np.abs(flow_mid.astype(int) - truth).mean()
    blend_error = np.abs(blend_mid.astype(int) - truth).mean()
    assert flow_error < 0.5 * blend_error, (flow_error, blend_error)


@pytest.mark.parametrize("k,method,message", [
    (-1, "flow", "0 to 16"), (1.5, "flow", "whole number"), (99, "blend", "0 to 16"),
    (1, "rife", "needs a RIFE model file"), (1, "dain", "unknown interpolation method"),
])
def test_bad_arguments(k, method, message):
    with pytest.raises(InputError, match=message):
        interpolate(clip(2), k, method)  # refused at the call, before any frame is read


def test_size_change_refused():
    with pytest.raises(InputError, match="size changed"):
        list(interpolate([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)], 1))


@pytest.mark.parametrize("method", ["flow", "blend"])
def test_push_sink_matches_pull_generator(method):
    from framepack.io.interpolate import InterpolatingSink
    frames = np.stack(clip(6))
    received = []
    sink = InterpolatingSink(received.append, 2, method)
    for batch in (frames[:1], frames[1:4], frames[4:4], frames[4:]):  # uneven, one empty
        sink(batch)
    pushed = np.concatenate(received)
    pulled = np.stack(list(interpolate(frames, 2, method)))
    assert sink.frames_out == len(pushed) == output_count(6, 2)
    assert np.array_equal(pushed, pulled)


def test_push_sink_into_a_video_writer(tmp_path):
    import av
    from framepack.io.interpolate import InterpolatingSink
    from framepack.io.writer import VideoWriter
    frames = np.stack(clip(4))
    with VideoWriter(tmp_path / "smooth.mkv", 30, codec="ffv1") as video:
        sink = InterpolatingSink(video, 1, "blend")
        sink(frames[:2])
        sink(frames[2:])
    with av.open(str(video.path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 7 and np.array_equal(decoded[6], frames[3])
