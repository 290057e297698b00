"""Which encoders work here, which pixel format and container each one gets, and option parsing.

Everything in this module answers a question before any frame is generated, so a user who picks
an unusable codec, a container that cannot hold it, or a misspelled option learns it in one
clear line instead of after ten minutes of sampling. Answers come from FFmpeg itself (a tiny
in-memory test encode or mux), not from a hand-written table that drifts from the build.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from fractions import Fraction
from pathlib import Path

from framepack.errors import InputError
from framepack.request.limits import NO_VIDEO_CODEC
from framepack.io.codec_options import (FF_QP2LAMBDA, QUALITY_OPTION, allowed_options, check_options,  # noqa: F401
                                        expand_aliases, parse_options, with_quality)

NONE = NO_VIDEO_CODEC
"""Pseudo-codec: skip writing a video (raw frames or images only)."""

HARDWARE_ENCODERS = (
    "h264_nvenc", "hevc_nvenc", "av1_nvenc",
    "h264_qsv", "hevc_qsv", "av1_qsv",
    "h264_vaapi", "hevc_vaapi", "av1_vaapi",
    "h264_amf", "hevc_amf", "av1_amf",
    "h264_videotoolbox", "hevc_videotoolbox",
    "h264_mf", "hevc_mf",
)
"""Listed first by `available_encoders` when (and only when) they open on this machine."""

SOFTWARE_ENCODERS = (
    "libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1", "librav1e", "libvpx",
    "mpeg4", "libx264rgb", "ffv1", "prores_ks", "mjpeg", "utvideo", "huffyuv", "ffvhuff",
    "png", "qtrle", "mpeg2video",
)
"""Candidates in the order users most likely want them (browser-friendly first)."""

CODEC_FAMILIES = {
    "h264": ("libx264", "h264_nvenc", "h264_qsv", "h264_vaapi", "h264_amf", "h264_videotoolbox", "h264_mf",
             "libopenh264"),
    "hevc": ("libx265", "hevc_nvenc", "hevc_qsv", "hevc_vaapi", "hevc_amf", "hevc_videotoolbox", "hevc_mf"),
    "av1": ("libsvtav1", "libaom-av1", "librav1e", "av1_nvenc", "av1_qsv", "av1_vaapi", "av1_amf"),
    "vp9": ("libvpx-vp9", "vp9_qsv", "vp9_vaapi"),
    "vp8": ("libvpx",),
    "prores": ("prores_ks",),
}
"""Common format names -> encoders for it, software first (the same output on every machine), then
hardware; `resolve_codec` picks the first that opens here."""

CODEC_ALIASES = {"avc": "h264", "x264": "h264", "h265": "hevc", "x265": "hevc"}

CONTAINERS = {
    ".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm",
    ".avi": "avi",
}
"""File extension -> FFmpeg muxer."""

RGB_PREFERENCE = ("rgb24", "bgr24", "gbrp", "bgr0", "rgb0", "0rgb", "0bgr", "bgra", "rgba")
RGB_NATIVE_CODECS = frozenset(
    {"libx264rgb", "ffv1", "png", "qtrle", "huffyuv", "ffvhuff", "utvideo"})
"""Lossless codecs that keep RGB: converting to yuv420p would throw away the exactness."""

FULL_RANGE_CODECS = {"mjpeg": "yuvj420p"}
"""Codecs whose 4:2:0 output must be full range (FFmpeg refuses limited-range yuv420p)."""

PROBE_SIZE = 256
"""Test-encode size: hardware encoders refuse very small frames."""

_QUIET_OPTIONS = {"libx265": {"x265-params": "log-level=none"}}
_cache_lock = threading.Lock()
_encoders_cache: list[str] | None = None
_pair_cache: dict[tuple[str, str], str | None] = {}
_open_cache: dict[str, bool] = {}


# --------------------------------------------------------------------------- encoder discovery

def available_encoders(refresh: bool = False) -> list[str]:
    """Video encoders that really open here: working hardware ones first, then software, then `none`.

    Each candidate compiled into FFmpeg is opened and fed one frame in memory; an NVENC encoder
    in the build but no NVIDIA driver, for instance, fails that test and is left out. The
    result is cached for the process; `refresh=True` probes again (e.g. after a driver install).
    """
    global _encoders_cache
    with _cache_lock:
        if _encoders_cache is None or refresh:
            found = [name for name in (*HARDWARE_ENCODERS, *SOFTWARE_ENCODERS)
                     if _encoder_opens(name)]
            _open_cache.update({name: name in found
                                for name in (*HARDWARE_ENCODERS, *SOFTWARE_ENCODERS)})
            _encoders_cache = [*found, NONE]
        return list(_encoders_cache)


def is_hardware(codec: str) -> bool:
    """True for GPU / media-engine encoders (they are listed before software ones)."""
    return codec in HARDWARE_ENCODERS


def _codec_or_none(name: str):
    """The PyAV encoder named `name`, or None when this FFmpeg build lacks it."""
    import av
    try:
        codec = av.Codec(name, "w")
    except Exception:  # UnknownCodecError and friends: not in this build
        return None
    return codec if codec.type == "video" else None


def _encoder_opens(name: str) -> bool:
    """Whether `name` encodes one test frame without error on this machine."""
    codec = _codec_or_none(name)
    if codec is None:
        return False
    try:
        pix_fmt = pick_pix_fmt(name)
        with _quiet_env(name):
            _test_encode(name, pix_fmt, dict(_QUIET_OPTIONS.get(name, {})))
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _quiet_env(codec: str):
    """Silence SVT-AV1's banner during its probes (it logs to stderr by itself, read at init).

    Only for libsvtav1, so the process environment is touched as rarely as possible.
    """
    if codec != "libsvtav1":
        yield
        return
    old = os.environ.get("SVT_LOG")
    os.environ["SVT_LOG"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SVT_LOG", None)
        else:
            os.environ["SVT_LOG"] = old


def _test_frame(pix_fmt: str, width: int = PROBE_SIZE, height: int = PROBE_SIZE):
    """A mid-grey frame already in `pix_fmt`, so probes exercise the encoder, not swscale."""
    import av
    import numpy as np
    rgb = np.full((height, width, 3), 128, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(format=pix_fmt, dst_color_range=color_range_for(pix_fmt))


def _test_encode(codec: str, pix_fmt: str, options: dict[str, str]) -> dict[str, str]:
    """Open `codec` with `options`, encode one frame; return the options FFmpeg did not use."""
    import av
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height = PROBE_SIZE, PROBE_SIZE
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.color_range = color_range_for(pix_fmt)
    ctx.options = dict(options)
    ctx.encode(_test_frame(pix_fmt))
    ctx.encode(None)
    return dict(ctx.options)


# --------------------------------------------------------------------------- pixel formats

def supported_pix_fmts(codec: str) -> list[str]:
    """Pixel formats the encoder declares, in FFmpeg's order (empty if it declares none)."""
    found = _codec_or_none(codec)
    if found is None:
        raise InputError(f"unknown video codec {codec!r}")
    return [f.name for f in (found.video_formats or [])]


def pick_pix_fmt(codec: str, requested: str | None = None) -> str:
    """The pixel format to encode with.

    A requested format must be one the codec supports. Otherwise: lossless RGB codecs keep RGB
    (exact round trip), MJPEG gets full-range 4:2:0, codecs that can do yuv420p get it (what
    browsers play), and the rest (ProRes, 10-bit only, hardware nv12...) keep their native one.
    """
    formats = supported_pix_fmts(codec)
    if requested:
        if formats and requested not in formats:
            raise InputError(f"codec {codec} cannot encode pixel format {requested!r}; "
                             f"it supports: {', '.join(formats)}")
        return requested
    if not formats:
        return "yuv420p"
    if codec in RGB_NATIVE_CODECS:
        for name in RGB_PREFERENCE:
            if name in formats:
                return name
    if codec in FULL_RANGE_CODECS and FULL_RANGE_CODECS[codec] in formats:
        return FULL_RANGE_CODECS[codec]
    if "yuv420p" in formats:
        return "yuv420p"
    return formats[0]


def color_range_for(pix_fmt: str) -> int:
    """AVColorRange for a pixel format: full (2) for yuvj*, limited (1) for YUV, unset for RGB."""
    import av
    if pix_fmt.startswith("yuvj"):
        return 2
    try:
        is_rgb = av.VideoFormat(pix_fmt).is_rgb
    except Exception:
        is_rgb = False
    return 0 if is_rgb else 1


def chroma_alignment(pix_fmt: str) -> tuple[int, int]:
    """(x, y) multiples the frame size must be for `pix_fmt` (2, 2) for 4:2:0, (1, 1) for RGB."""
    import av
    fmt = av.VideoFormat(pix_fmt)
    return 16 // max(1, fmt.chroma_width(16)), 16 // max(1, fmt.chroma_height(16))


# --------------------------------------------------------------------------- options
# Parsing, the allowlist and value checks live in codec_options; every face reaches them through
# check_encoder_settings (the request's output options, the video writer, the CLI).

# --------------------------------------------------------------------------- containers

def container_for(path: str | os.PathLike) -> str:
    """FFmpeg muxer for an output file name, from its extension."""
    ext = Path(path).suffix.lower()
    if ext not in CONTAINERS:
        known = ", ".join(sorted(CONTAINERS))
        shown = ext or "no extension"
        raise InputError(f"unsupported video file type ({shown}) for {os.fspath(path)!r}; "
                         f"use one of: {known}")
    return CONTAINERS[ext]


def _extension_of(muxer: str) -> str:
    return next(ext for ext, fmt in CONTAINERS.items() if fmt == muxer)


def pair_problem(codec: str, muxer: str) -> str | None:
    """None when `muxer` can store `codec`; otherwise FFmpeg's reason. Cached per pair.

    Tested by muxing one encoded frame into an in-memory container, which catches both the
    muxer's codec list (h264 in webm) and header-time refusals (vp9 in mov).
    """
    key = (codec, muxer)
    with _cache_lock:
        if key in _pair_cache:
            return _pair_cache[key]
    problem = _try_mux(codec, muxer)
    if problem is not None:  # once more: a passing failure (memory, threads) must not stick for the process
        problem = _try_mux(codec, muxer)
    with _cache_lock:
        _pair_cache[key] = problem
    return problem


def _try_mux(codec: str, muxer: str) -> str | None:
    import av
    pix_fmt = pick_pix_fmt(codec)
    buffer = io.BytesIO()
    try:
        with _quiet_env(codec), av.open(buffer, "w", format=muxer) as container:
            stream = container.add_stream(codec, rate=30,
                                          options=dict(_QUIET_OPTIONS.get(codec, {})))
            stream.width, stream.height, stream.pix_fmt = PROBE_SIZE, PROBE_SIZE, pix_fmt
            stream.codec_context.color_range = color_range_for(pix_fmt)
            frame = _test_frame(pix_fmt)
            frame.pts, frame.time_base = 0, Fraction(1, 30)
            sane = SaneTimestamps(frame_rate=30)
            for packet in (*stream.encode(frame), *stream.encode(None)):
                container.mux(sane(packet))
    except Exception as e:  # FFmpeg reports refusals as ValueError / FFmpegError
        return str(e) or type(e).__name__
    return None


class SaneTimestamps:
    """Repairs a decode timestamp the encoder left impossible, before the muxer sees it.

    libx265 in PyAV's FFmpeg sometimes leaves the DTS of clips of one or two frames
    uninitialised (values like -9e18); MP4 then refuses the packet ("patches welcome"). A DTS
    after the PTS, or more than `max_delay` frames before it, cannot come from frame
    reordering, so it is replaced by the earliest value that keeps decode order.
    """

    def __init__(self, frame_rate: float, max_delay: int = 32):
        self.frame_rate = float(frame_rate)
        self.max_delay = max_delay
        self.last_dts: int | None = None

    def __call__(self, packet):
        pts, dts = packet.pts, packet.dts
        if pts is not None and packet.time_base is not None and not self._plausible(pts, dts, packet.time_base):
            packet.dts = dts = pts if self.last_dts is None else min(pts, self.last_dts + 1)
        if dts is not None:
            self.last_dts = dts
        return packet

    def _plausible(self, pts: int, dts: int | None, time_base) -> bool:
        if dts is None or dts > pts:
            return False
        return (pts - dts) * time_base * self.frame_rate <= self.max_delay


def check_compatible(codec: str, muxer: str) -> None:
    """Refuse a codec/container pair up front, naming containers that would work."""
    if pair_problem(codec, muxer) is None:
        return
    fits = [_extension_of(m) for m in dict.fromkeys(CONTAINERS.values())
            if m != muxer and pair_problem(codec, m) is None]
    hint = f"; use {', '.join(fits)} instead" if fits else ""
    others = [c for c in available_encoders()
              if c not in (NONE, codec) and pair_problem(c, muxer) is None]
    if others:
        hint += f", or a codec that fits {_extension_of(muxer)}: {', '.join(others)}"
    raise InputError(f"codec {codec} cannot be stored in a {_extension_of(muxer)} file{hint}")


def check_codec(codec: str) -> None:
    """Refuse a codec that is unknown or does not open here, listing what does.

    Only the requested codec is test-opened on the happy path; the full list of working
    encoders is probed just to write the error message.
    """
    if codec == NONE:
        raise InputError("codec 'none' writes no video; choose a real codec to encode")
    if not isinstance(codec, str) or not codec:
        raise InputError(f"video codec must be a name like 'libx264', got {codec!r}")
    if _opens_cached(codec):
        return
    listed = ", ".join(encoder_names())
    if _codec_or_none(codec) is None:
        raise InputError(f"unknown video codec {codec!r}; available here: {listed}")
    raise InputError(f"video codec {codec!r} does not work on this machine "
                     f"(no suitable hardware, driver or library); available here: {listed}")


def resolve_codec(codec: str) -> str:
    """`h264` / `hevc` / `av1` / `vp9` (and a few aliases) -> the first of their encoders that opens
    here; any other name is returned as given (check_codec judges it). The result is a real encoder
    name, so the option allowlist of that encoder applies."""
    if not isinstance(codec, str):
        return codec
    family = CODEC_ALIASES.get(codec.lower(), codec.lower())
    if family not in CODEC_FAMILIES:
        return codec
    for name in CODEC_FAMILIES[family]:
        if _opens_cached(name):
            return name
    listed = ", ".join(encoder_names())
    raise InputError(f"no {family} encoder works on this machine (tried {', '.join(CODEC_FAMILIES[family])}); "
                     f"available here: {listed}")


def encoder_names() -> list[str]:
    """The encoders that open here, without the `none` pseudo-codec (for lists shown to users)."""
    return [name for name in available_encoders() if name != NONE]


def _opens_cached(codec: str) -> bool:
    """`_encoder_opens` with the answer remembered for the process."""
    with _cache_lock:
        if _encoders_cache is not None and codec in _encoders_cache:
            return True
        known = _open_cache.get(codec)
    if known is None:
        known = _encoder_opens(codec)
        with _cache_lock:
            _open_cache[codec] = known
    return known


def check_encoder_settings(codec: str, muxer: str, options: dict[str, str],
                           pix_fmt: str) -> None:
    """Validate everything about an encode before it starts, without opening an encoder on them.

    Codec usable here and container compatible (probes with our own fixed settings, in memory),
    then every option against the allowlist and FFmpeg's declared types and ranges. The user's
    options reach an encoder only when the video is written, after all of this passed.
    """
    check_codec(codec)
    check_compatible(codec, muxer)
    check_options(codec, options)
