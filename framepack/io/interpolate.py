"""Frame interpolation: k new frames between every pair of frames, streamed.

The planner generates fewer frames when k > 0 (duration and fps stay as asked), and this fills
the gaps. `flow` estimates dense optical flow both ways (OpenCV Farneback), moves each of the
two frames along it to the in-between time and blends the two warps, so moving things move
instead of ghosting; `blend` is a plain cross-fade, for speed or when OpenCV is unavailable.
`rife` runs a RIFE model file (framepack.models.rife, given as `model`): learned flow, sharper on
large motion. A `model` may also take whole batches (`interpolate_batch(previous, frames, k)`, e.g.
SD.Next's RIFE through the host), which `InterpolatingSink` then prefers.

Streaming: frames (or batches of frames) go in one at a time and frames come out one at a time,
so only two source frames are ever held.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from framepack.errors import InputError

METHODS = ("flow", "blend", "rife")


def output_count(frames: int, k: int) -> int:
    """Frames after inserting k between each pair: (T - 1) * (k + 1) + 1."""
    return 0 if frames <= 0 else (frames - 1) * (k + 1) + 1


def check_factor(k, method: str = "flow") -> int:
    """Validate k (frames inserted per gap) and the method name."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= 16:
        raise InputError(f"interpolation must be a whole number of frames from 0 to 16, got {k!r}")
    if method not in METHODS:
        raise InputError(f"unknown interpolation method {method!r}; use one of: "
                         f"{', '.join(METHODS)}")
    return int(k)


def iter_frames(frames: Iterable) -> Iterator[np.ndarray]:
    """Flatten an iterable of frames [H, W, 3] and/or batches [n, H, W, 3] into frames."""
    for item in frames:
        array = np.asarray(item)
        if array.ndim == 4:
            yield from array
        elif array.ndim == 3:
            yield array
        else:
            raise InputError(f"expected frames [H, W, 3] or batches [n, H, W, 3], "
                             f"got shape {tuple(array.shape)}")


def _between(method: str, model):
    if method == "rife":
        if model is None:
            raise InputError("interpolation method 'rife' needs a RIFE model file")
        return model.between
    return flow_between if method == "flow" else blend_between


def load_rife(path, device="cpu"):
    """The RIFE model of a `.safetensors` file (framepack.models.rife)."""
    from framepack.models.rife import load_rife as load

    return load(path, device)


def interpolate(frames: Iterable, k: int, method: str = "flow", model=None) -> Iterator[np.ndarray]:
    """Yield the input frames with k interpolated frames inserted between each pair.

    Originals pass through unchanged (the endpoints are exactly the input); k = 0 is a plain
    pass-through. Output length is (T - 1) * (k + 1) + 1. Arguments are checked at call time,
    not at the first frame, so a bad setting fails before any work starts.
    """
    k = check_factor(k, method)
    return _interleave(frames, k, _between(method, model))


def _interleave(frames: Iterable, k: int, between) -> Iterator[np.ndarray]:
    previous = None
    for frame in iter_frames(frames):
        if previous is not None and k:
            if frame.shape != previous.shape:
                raise InputError("frame size changed in the middle of the video")
            yield from between(previous, frame, k)
        yield frame
        previous = frame


class InterpolatingSink:
    """Push-style interpolation: the engine's frame sink, feeding another sink.

        with VideoWriter(path, fps) as video:
            sink = InterpolatingSink(video.write, k=2)
            engine.run(sink)              # sink(batch) with batches of any size

    Same output as `interpolate`, for code that hands frames over instead of being iterated;
    only the last frame of the previous batch is kept between calls.
    """

    def __init__(self, sink, k: int, method: str = "flow", model=None):
        self.k = check_factor(k, method)
        self.sink = sink
        self._between = _between(method, model)
        self._batch = getattr(model, "interpolate_batch", None) if method == "rife" else None
        self._previous: np.ndarray | None = None
        self.frames_out = 0

    def _write_batch(self, frames: np.ndarray) -> None:
        if frames.ndim == 3:
            frames = frames[None]
        if not len(frames):
            return
        if self._previous is not None and frames.shape[1:] != self._previous.shape:
            raise InputError("frame size changed in the middle of the video")
        out = self._batch(self._previous, frames, self.k) if self.k else frames
        self._previous = frames[-1]
        self.sink(out)
        self.frames_out += len(out)

    def write(self, frames) -> None:
        """Interpolate from the previous frame through this batch and pass it all on."""
        if self._batch is not None:
            self._write_batch(np.asarray(frames))
            return
        out: list[np.ndarray] = []
        for frame in iter_frames([frames]):
            if self._previous is not None and self.k:
                if frame.shape != self._previous.shape:
                    raise InputError("frame size changed in the middle of the video")
                out.extend(self._between(self._previous, frame, self.k))
            out.append(frame)
            self._previous = frame
        if out:
            self.sink(np.stack(out))
            self.frames_out += len(out)

    __call__ = write


def times(k: int) -> list[float]:
    """The k in-between times in (0, 1), evenly spaced."""
    return [j / (k + 1) for j in range(1, k + 1)]


def blend_between(a: np.ndarray, b: np.ndarray, k: int) -> list[np.ndarray]:
    """Cross-fade: (1 - t) * a + t * b at each in-between time."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    return [_to_uint8((1.0 - t) * fa + t * fb) for t in times(k)]


def flow_between(a: np.ndarray, b: np.ndarray, k: int) -> list[np.ndarray]:
    """Optical-flow interpolation of k frames between a and b.

    Flows a->b and b->a are computed once per pair. For time t the flow from the new frame
    back to each source uses the linear-motion approximation of Super SloMo (Jiang et al.
    2018): F_t0 = -(1-t) t F_01 + t^2 F_10 and F_t1 = (1-t)^2 F_01 - t (1-t) F_10. Each
    source is sampled along its flow (cv2.remap) and the two are blended with weights
    (1 - t) and t.
    """
    import cv2
    f01 = _flow(a, b)
    f10 = _flow(b, a)
    height, width = a.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    result = []
    for t in times(k):
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
        warp_a = cv2.remap(a, grid_x + ft0[..., 0], grid_y + ft0[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        warp_b = cv2.remap(b, grid_x + ft1[..., 0], grid_y + ft1[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        result.append(_to_uint8((1 - t) * warp_a.astype(np.float32)
                                + t * warp_b.astype(np.float32)))
    return result


def _flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Dense Farneback flow src -> dst (float32 [H, W, 2]).

    OpenCV stops the pyramid by itself once a level gets smaller than 32 px, so asking for 5
    levels is safe at any size. The wider polynomial (poly_n 7, sigma 1.5) and 21 px window
    follow textured objects that move many pixels per frame, which the defaults lose.
    """
    import cv2
    gray_src = cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_RGB2GRAY)
    gray_dst = cv2.cvtColor(np.ascontiguousarray(dst), cv2.COLOR_RGB2GRAY)
    return cv2.calcOpticalFlowFarneback(gray_src, gray_dst, None, pyr_scale=0.5, levels=5,
                                        winsize=21, iterations=3, poly_n=7, poly_sigma=1.5,
                                        flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
