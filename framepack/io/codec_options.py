"""Encoder options: parsing `crf=16,preset=fast`, the allowlist, and checking values without an encoder.

Encoder options come from users (API `output.codec_options`, the tab, `--options`), and some
options of the encoders name files: libx264's `stats` / `passlogfile` or `x264-params=stats=`,
libx265's `x265-stats` or `x265-params=csv=` / `analysis-save=`, SVT-AV1's `recon`... Passed on,
they create or overwrite files anywhere the process may write. So an option reaches an encoder
only when its name is on the allowlist of that encoder's family (rate control, preset / tune /
profile / level, GOP and B-frames, quality tools), and for `x264-params`, `x265-params` and
`svtav1-params` only allowlisted keys pass. Values are checked here against what FFmpeg
declares about each option (type, range, named values) and, for the few free-text options, a
list or pattern of valid values: no encoder is opened to validate, so validation writes nothing.
"""

from __future__ import annotations

import difflib
import math
import re
import threading

from framepack.errors import InputError

# --------------------------------------------------------------------------- parsing

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(?::[a-z])?")


def parse_options(text: str | dict | None) -> dict[str, str]:
    """Parse `crf=16,preset=fast` (or the original extension's `crf:16`) into a dict of strings.

    Pieces are separated by commas; each is `key=value`, or `key:value` when it has no `=`
    (so `x264-params=keyint=60:min-keyint=30` keeps its value). ffmpeg-style stream specifiers
    (`b:v=2M`) are accepted. Empty pieces are ignored; anything else malformed is refused,
    naming the piece.
    """
    if text is None:
        return {}
    if isinstance(text, dict):
        return {_check_key(str(k), f"{k}={v}"): _check_value(str(v), f"{k}={v}")
                for k, v in text.items()}
    if not isinstance(text, str):
        raise InputError(f"codec options must be text like 'crf=16,preset=fast', got {text!r}")
    result: dict[str, str] = {}
    for raw_piece in text.split(","):
        piece = raw_piece.strip()
        if not piece:
            continue
        if "=" in piece:
            key, value = piece.split("=", 1)
        elif ":" in piece:
            key, value = piece.split(":", 1)
        else:
            raise InputError(f"codec option {piece!r} has no value: write it as key=value "
                             f"(for example crf=16)")
        key = _check_key(key.strip(), piece)
        value = _check_value(value.strip(), piece)
        if key in result:
            raise InputError(f"codec option {key!r} is given twice ({piece!r})")
        result[key] = value
    return result


def _check_key(key: str, piece: str) -> str:
    """Return the option name without its `:v` stream specifier, refusing odd characters."""
    if not key or not _KEY.fullmatch(key):
        raise InputError(f"codec option {piece!r} has an invalid name {key!r}")
    return key.split(":", 1)[0]


def _check_value(value: str, piece: str) -> str:
    """Refuse empty values and control characters (they would be passed on to FFmpeg)."""
    if not value:
        raise InputError(f"codec option {piece!r} has an empty value")
    if any(ord(c) < 32 for c in value):
        raise InputError(f"codec option {piece!r} contains a control character")
    return value


# --------------------------------------------------------------------------- quality and aliases

QUALITY_OPTION = {"libx264": "crf", "libx264rgb": "crf", "libx265": "crf", "libvpx-vp9": "crf",
                  "libvpx": "crf", "libsvtav1": "crf", "libaom-av1": "crf",
                  "h264_nvenc": "cq", "hevc_nvenc": "cq", "av1_nvenc": "cq",
                  "h264_qsv": "global_quality", "hevc_qsv": "global_quality"}
"""Codec -> the private option that a `crf` setting maps to."""


def with_quality(codec: str, options: dict[str, str], crf: float | int | None) -> dict[str, str]:
    """Fold a `crf` setting into the options under the name this codec uses for it."""
    if crf is None:
        return dict(options)
    name = QUALITY_OPTION.get(codec)
    if name is None:
        raise InputError(f"codec {codec} has no crf/quality setting; use its own options "
                         f"instead (for example 'q=2' or 'b=8M')")
    try:
        value = float(crf)
    except (TypeError, ValueError):
        raise InputError(f"crf must be a number, got {crf!r}") from None
    if not 0 <= value <= 63:
        raise InputError(f"crf {crf} is out of range (0-63; 16-23 is typical)")
    merged = dict(options)
    if name in merged and merged[name] != _num(value):
        raise InputError(f"crf={crf} conflicts with option {name}={merged[name]}")
    merged[name] = _num(value)
    if codec in ("libvpx-vp9", "libvpx") and "b" not in merged:
        merged["b"] = "0"  # constant quality: without b=0 libvpx treats crf as a cap
    return merged


FF_QP2LAMBDA = 118


def expand_aliases(options: dict[str, str]) -> dict[str, str]:
    """Translate ffmpeg command-line shorthands that are not codec options into real ones.

    `q=2` / `qscale=2` (fixed quantizer, as in `ffmpeg -q:v 2` for mpeg4/mjpeg) becomes
    `flags=+qscale` plus `global_quality=2*QP2LAMBDA`, which is what the ffmpeg tool does.
    """
    result = dict(options)
    for alias in ("q", "qscale"):
        if alias not in result:
            continue
        text = result.pop(alias)
        try:
            quantizer = float(text)
        except ValueError:
            raise InputError(f"option {alias}={text} must be a number (1-31)") from None
        if not 0 < quantizer <= 69:
            raise InputError(f"option {alias}={text} is out of range (1-31 typical)")
        result["flags"] = result.get("flags", "") + "+qscale"
        result["global_quality"] = str(int(round(quantizer * FF_QP2LAMBDA)))
    return result


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- the allowlist

GENERIC_OPTIONS = frozenset({
    "b", "maxrate", "minrate", "bufsize", "rc_init_occupancy", "g", "bf", "keyint_min", "refs", "qmin", "qmax",
    "qdiff", "qcomp", "qblur", "global_quality", "compression_level", "trellis", "mbd", "level", "profile",
    "flags", "slices", "threads",
})
"""Options every encoder has (AVCodecContext): bitrate and rate control, GOP, B-frames, quantizers."""

SAFE_FLAGS = frozenset({"qscale", "cgop", "loop", "gray", "low_delay", "mv4", "qpel", "aic", "ildct", "ilme",
                        "bitexact", "global_header"})
"""Values of the generic `flags` option; `pass1` / `pass2` make libx264 write a stats file."""

_X264 = frozenset({
    "preset", "tune", "profile", "level", "crf", "crf_max", "qp", "aq-mode", "aq-strength", "psy", "psy-rd",
    "rc-lookahead", "weightb", "weightp", "intra-refresh", "bluray-compat", "b-bias", "b-pyramid", "mixed-refs",
    "8x8dct", "fast-pskip", "aud", "mbtree", "deblock", "cplxblur", "partitions", "direct-pred", "slice-max-size",
    "nal-hrd", "avcintra-class", "me_method", "motion-est", "forced-idr", "coder", "b_strategy", "chromaoffset",
    "sc_threshold", "noise_reduction", "a53cc", "udu_sei", "x264-params", "x264opts",
})
_X265 = frozenset({"preset", "tune", "profile", "crf", "qp", "forced-idr", "a53cc", "udu_sei", "x265-params"})
_VPX = frozenset({
    "deadline", "quality", "cpu-used", "speed", "crf", "lag-in-frames", "auto-alt-ref", "arnr-maxframes",
    "arnr-strength", "arnr-type", "arnr_max_frames", "arnr_strength", "arnr_type", "tune", "error-resilient",
    "max-intra-rate", "static-thresh", "drop-threshold", "noise-sensitivity", "undershoot-pct", "overshoot-pct",
    "lossless", "tile-columns", "tile-rows", "frame-parallel", "aq-mode", "level", "row-mt", "tune-content",
    "corpus-complexity", "enable-tpl", "min-gf-interval", "screen-content-mode", "sharpness", "rc_lookahead",
    "vp8flags",
})
_SVTAV1 = frozenset({"preset", "crf", "qp", "svtav1-params"})
_AOM = frozenset({
    "cpu-used", "crf", "usage", "tile-columns", "tile-rows", "tiles", "row-mt", "lag-in-frames", "aq-mode",
    "auto-alt-ref", "arnr-max-frames", "arnr-strength", "tune", "enable-cdef", "enable-restoration",
    "enable-global-motion", "enable-intrabc", "denoise-noise-level", "static-thresh", "drop-threshold",
    "noise-sensitivity", "undershoot-pct", "overshoot-pct", "minsection-pct", "maxsection-pct", "frame-parallel",
    "still-picture",
})
_RAV1E = frozenset({"qp", "speed", "tiles", "tile-rows", "tile-columns"})
_MPEG = frozenset({
    "mpeg_quant", "data_partitioning", "alternate_scan", "b_strategy", "b_sensitivity", "brd_scale", "mpv_flags",
    "luma_elim_threshold", "chroma_elim_threshold", "quantizer_noise_shaping", "lmin", "lmax", "skip_threshold",
    "skip_factor", "skip_exp", "skip_cmp", "noise_reduction", "motion_est", "mepc", "mepre", "intra_penalty",
    "sc_threshold", "huffman", "force_duplicated_matrix", "intra_dc_precision", "intra_vlc", "non_linear_quant",
    "seq_disp_ext", "video_format", "qsquish", "rc_qmod_amp", "rc_qmod_freq", "rc_init_cplx",
    "rc_buf_aggressivity", "border_mask",
})
_FFV1 = frozenset({"slicecrc", "coder", "context", "qtable", "remap_mode", "remap_optimizer"})
_PRORES = frozenset({"mbs_per_slice", "profile", "vendor", "bits_per_mb", "quant_mat", "alpha_bits"})
_LOSSLESS = frozenset({"pred", "context", "non_deterministic", "dpi", "dpm"})
_NVENC = frozenset({
    "preset", "tune", "profile", "level", "tier", "rc", "rc-lookahead", "cq", "qp", "init_qpP", "init_qpB",
    "init_qpI", "qp_cb_offset", "qp_cr_offset", "qmin", "qmax", "cbr", "no-scenecut", "forced-idr", "b_adapt",
    "spatial-aq", "spatial_aq", "temporal-aq", "temporal_aq", "aq-strength", "zerolatency", "nonref_p",
    "strict_gop", "weighted_pred", "b_ref_mode", "highbitdepth", "lookahead_level", "tf_level", "bluray-compat",
    "aud", "coder", "tile-rows", "tile-columns", "intra-refresh", "a53cc", "udu_sei",
})
_QSV = frozenset({
    "preset", "profile", "async_depth", "forced_idr", "low_power", "look_ahead", "look_ahead_depth",
    "look_ahead_downsampling", "scenario", "extbrc", "adaptive_i", "adaptive_b", "b_strategy", "p_strategy",
    "mbbrc", "idr_interval", "max_qp_i", "min_qp_i", "max_qp_p", "min_qp_p", "max_qp_b", "min_qp_b", "cavlc",
    "rdo", "aud", "a53cc",
})
_VAAPI = frozenset({"rc_mode", "qp", "quality", "profile", "level", "tier", "aud", "sei", "async_depth",
                    "low_power", "idr_interval", "b_depth", "coder"})
_AMF = frozenset({
    "usage", "profile", "level", "quality", "preset", "rc", "qp_i", "qp_p", "qp_b", "qvbr_quality_level",
    "enforce_hrd", "filler_data", "vbaq", "frame_skipping", "preanalysis", "header_spacing", "bf_delta_qp",
    "bf_ref", "bf_ref_delta_qp", "max_b_frames", "max_au_size", "coder", "forced_idr", "aud", "latency",
    "async_depth",
})
_VIDEOTOOLBOX = frozenset({"profile", "level", "realtime", "allow_sw", "require_sw", "coder", "entropy",
                           "prio_speed", "power_efficient", "constant_bit_rate", "max_slice_bytes"})
_MEDIA_FOUNDATION = frozenset({"rate_control", "quality", "scenario", "hw_encoding"})

_FAMILIES: dict[str, frozenset[str]] = {
    "libx264": _X264, "libx264rgb": _X264, "libx265": _X265, "libvpx": _VPX, "libvpx-vp9": _VPX,
    "libsvtav1": _SVTAV1, "libaom-av1": _AOM, "librav1e": _RAV1E,
    "mpeg4": _MPEG, "mpeg2video": _MPEG, "mpeg1video": _MPEG, "mjpeg": _MPEG, "h263": _MPEG, "h263p": _MPEG,
    "msmpeg4": _MPEG, "msmpeg4v2": _MPEG, "wmv1": _MPEG, "wmv2": _MPEG,
    "ffv1": _FFV1, "prores_ks": _PRORES, "prores": _PRORES, "prores_aw": _PRORES,
    "utvideo": _LOSSLESS, "huffyuv": _LOSSLESS, "ffvhuff": _LOSSLESS, "png": _LOSSLESS, "qtrle": _LOSSLESS,
}
_SUFFIX_FAMILIES = (("_nvenc", _NVENC), ("_qsv", _QSV), ("_vaapi", _VAAPI), ("_amf", _AMF),
                    ("_videotoolbox", _VIDEOTOOLBOX), ("_mf", _MEDIA_FOUNDATION))

PARAM_OPTIONS = {"x264-params": "x264", "x264opts": "x264", "x265-params": "x265", "svtav1-params": "svtav1"}
"""Options whose value is a `key=value:key=value` list handed to the encoder library itself."""

_X264_KEYS = frozenset({
    "keyint", "min-keyint", "keyint-min", "scenecut", "bframes", "b-adapt", "b-bias", "b-pyramid", "ref",
    "deblock", "no-deblock", "crf", "crf-max", "qp", "bitrate", "vbv-maxrate", "vbv-bufsize", "vbv-init", "qpmin",
    "qpmax", "qpstep", "ipratio", "pbratio", "chroma-qp-offset", "aq-mode", "aq-strength", "psy", "no-psy",
    "psy-rd", "me", "merange", "subme", "trellis", "rc-lookahead", "weightp", "weightb", "no-weightb", "direct",
    "partitions", "8x8dct", "no-8x8dct", "cabac", "no-cabac", "open-gop", "mbtree", "no-mbtree", "mixed-refs",
    "no-mixed-refs", "fast-pskip", "no-fast-pskip", "deadzone-inter", "deadzone-intra", "nr", "qcomp", "cplxblur",
    "qblur", "colorprim", "transfer", "colormatrix", "range", "fullrange", "chromaloc", "videoformat", "overscan",
    "level", "profile", "preset", "tune", "threads", "lookahead-threads", "sliced-threads", "slices", "nal-hrd",
    "aud", "force-cfr", "bluray-compat", "intra-refresh", "constrained-intra", "sar", "log-level",
})
_X265_KEYS = frozenset({
    "keyint", "min-keyint", "scenecut", "bframes", "b-adapt", "b-pyramid", "bframe-bias", "ref", "crf", "qp",
    "bitrate", "vbv-maxrate", "vbv-bufsize", "vbv-init", "qpmin", "qpmax", "qpstep", "ipratio", "pbratio",
    "cbqpoffs", "crqpoffs", "aq-mode", "aq-strength", "aq-motion", "qg-size", "psy-rd", "psy-rdoq", "rd",
    "rdoq-level", "me", "merange", "subme", "sao", "no-sao", "selective-sao", "deblock", "no-deblock",
    "strong-intra-smoothing", "no-strong-intra-smoothing", "open-gop", "no-open-gop", "rc-lookahead",
    "lookahead-slices", "cutree", "no-cutree", "tskip", "limit-refs", "limit-modes", "rect", "no-rect", "amp",
    "no-amp", "weightp", "no-weightp", "weightb", "early-skip", "fast-intra", "b-intra", "ctu", "min-cu-size",
    "max-tu-size", "tu-intra-depth", "tu-inter-depth", "sbh", "signhide", "nr-intra", "nr-inter", "qcomp",
    "colorprim", "transfer", "colormatrix", "range", "chromaloc", "videoformat", "overscan", "sar", "level-idc",
    "high-tier", "profile", "preset", "tune", "frame-threads", "wpp", "pmode", "pme", "repeat-headers", "aud",
    "hrd", "info", "no-info", "hdr-opt", "hdr10", "hdr10-opt", "max-cll", "lossless", "radl", "fades",
    "temporal-layers", "log-level",
})
_SVTAV1_KEYS = frozenset({
    "preset", "crf", "qp", "rc", "tbr", "mbr", "keyint", "irefresh-type", "scd", "lookahead", "enable-overlays",
    "tune", "film-grain", "film-grain-denoise", "enable-tf", "enable-qm", "qm-min", "qm-max", "fast-decode",
    "tile-rows", "tile-columns", "aq-mode", "enable-variance-boost", "variance-boost-strength", "variance-octile",
    "sharpness", "lp", "enable-dlf", "enable-cdef", "enable-restoration", "hierarchical-levels", "pred-struct",
    "color-primaries", "transfer-characteristics", "matrix-coefficients", "color-range",
    "chroma-sample-position", "enable-hdr", "profile", "level", "tier", "scm", "enable-mfmv", "min-qp", "max-qp",
    "overshoot-pct", "undershoot-pct", "bias-pct", "buf-sz", "buf-initial-sz", "buf-optimal-sz", "recode-loop",
    "startup-mg-size", "enable-dg", "luminance-qp-bias", "max-32-tx-size", "tf-strength", "psy-rd",
})
_PARAM_KEYS = {"x264": _X264_KEYS, "x265": _X265_KEYS, "svtav1": _SVTAV1_KEYS}
_PARAM_VALUE = re.compile(r"[A-Za-z0-9_.+\-]+|\d+/\d+")
"""A value inside a params list: a word or number (nothing that could be a path), or a ratio."""

FILE_WORDS = ("file", "log", "stat", "analysis", "csv", "dump", "pass", "recon", "path", "dir")
"""Words in option names that read or write files; named in the refusal message of such an option."""

_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                 "placebo")
_TEXT_VALUES: dict[tuple[frozenset[str], str], tuple[str, ...] | re.Pattern] = {
    (_X264, "preset"): _X26X_PRESETS,
    (_X264, "tune"): ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"),
    (_X264, "profile"): ("baseline", "main", "high", "high10", "high422", "high444"),
    (_X264, "level"): re.compile(r"1b|[1-6](?:\.[0-9])?|[1-6][0-9]"),
    (_X264, "psy-rd"): re.compile(r"\d{1,3}(?:\.\d{1,4})?(?::\d{1,3}(?:\.\d{1,4})?)?"),
    (_X264, "deblock"): re.compile(r"-?\d{1,2}(?::-?\d{1,2})?"),
    (_X264, "partitions"): ("p8x8", "p4x4", "b8x8", "i8x8", "i4x4", "none", "all"),
    (_X265, "preset"): _X26X_PRESETS,
    (_X265, "tune"): ("psnr", "ssim", "grain", "zerolatency", "fastdecode", "animation"),
    (_X265, "profile"): ("main", "main10", "mainstillpicture", "msp", "main-intra", "main10-intra", "main12",
                         "main12-intra", "main422-10", "main422-10-intra", "main422-12", "main422-12-intra",
                         "main444-8", "main444-intra", "main444-stillpicture", "main444-10", "main444-10-intra",
                         "main444-12", "main444-12-intra"),
    (_PRORES, "vendor"): re.compile(r"[A-Za-z0-9]{4}"),
}
"""Free-text options (FFmpeg declares them as strings, checked only by the library): valid values."""
_JOINABLE = {(_X264, "tune"), (_X264, "partitions")}
"""Text options taking several values joined by '+' (x264 reads `film+fastdecode`)."""


def allowed_options(codec: str) -> frozenset[str]:
    """Option names that may be passed to `codec`: the generic ones plus its family's."""
    family = _family(codec)
    return GENERIC_OPTIONS | family


def _family(codec: str) -> frozenset[str]:
    if codec in _FAMILIES:
        return _FAMILIES[codec]
    for suffix, family in _SUFFIX_FAMILIES:
        if codec.endswith(suffix):
            return family
    return frozenset()


# --------------------------------------------------------------------------- checking

_option_cache: dict[str, dict] = {}
_option_lock = threading.Lock()


def declared_options(codec: str) -> dict:
    """Name -> PyAV `Option` FFmpeg declares for `codec`, private ones first (as FFmpeg looks them up).

    Creating a codec context only allocates it: nothing is opened or encoded.
    """
    with _option_lock:
        if codec not in _option_cache:
            import av

            declared = av.CodecContext.create(codec, "w").supported_options
            table = {option.name: option for option in declared.generic}
            table.update({option.name: option for option in declared.private})
            _option_cache[codec] = table
        return _option_cache[codec]


def check_options(codec: str, options: dict[str, str]) -> None:
    """Refuse any option that is unknown, not allowlisted, or has an invalid value; opens nothing."""
    declared = declared_options(codec)
    allowed = allowed_options(codec)
    for key, value in options.items():
        if key not in allowed:
            raise InputError(_refusal(codec, key, declared, allowed))
        option = declared.get(key)
        if option is None:
            raise InputError(f"unknown option {key!r} for codec {codec}{_suggest(key, allowed & set(declared))}")
        problem = _value_problem(codec, key, value, option)
        if problem:
            raise InputError(f"codec {codec} refused option {key}={value}: {problem}")


def _refusal(codec: str, key: str, declared: dict, allowed: frozenset[str]) -> str:
    touches_files = next((word for word in FILE_WORDS if word in key.lower()), None)
    if touches_files:
        return (f"codec option {key!r} is refused: options that name files, logs, stats, analysis, csv, dumps "
                f"or passes make the encoder read or write files of its own, so FramePack never passes them on")
    if key not in declared:
        return f"unknown option {key!r} for codec {codec}{_suggest(key, allowed & set(declared))}"
    return (f"codec option {key!r} is not allowed for {codec}; allowed: "
            f"{', '.join(sorted(allowed & set(declared)))}")


def _suggest(key: str, names) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _value_problem(codec: str, key: str, value: str, option) -> str | None:
    """Why FFmpeg (or the encoder library) would refuse `value`, or None."""
    if key in PARAM_OPTIONS:
        return _params_problem(PARAM_OPTIONS[key], value)
    if key == "flags":
        return _flags_problem(value, SAFE_FLAGS)
    kind = option.type.name
    constants = {choice.name: choice for choice in option.choices or ()}
    if kind in ("INT", "INT64", "UINT", "UINT64", "DOUBLE", "FLOAT"):
        return _number_problem(value, option, constants, whole=kind not in ("DOUBLE", "FLOAT"))
    if kind == "BOOL":
        return _bool_problem(value, option)
    if kind == "FLAGS":
        return _flags_problem(value, set(constants))
    if kind == "STRING":
        return _text_problem(codec, key, value)
    return "this kind of option cannot be set here"


_SI = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3}
_NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?)(|[kKMG]i?)")


def _number_problem(value: str, option, constants: dict, whole: bool) -> str | None:
    if value in constants:
        return None
    found = _NUMBER.fullmatch(value) if len(value) <= 40 else None
    if found is None:
        named = f"; or one of: {', '.join(constants)}" if constants else ""
        return f"expected a number{named}"
    number = float(found[1]) * _SI[found[2]]
    if not math.isfinite(number):
        return "expected a finite number"
    if whole and not number.is_integer():
        return "expected a whole number"
    low, high = option.min, option.max
    if not low <= number <= high:
        return f"out of range ({_shown(low)} to {_shown(high)})"
    return None


def _shown(bound: float) -> str:
    return "no limit" if abs(bound) > 1e15 else (str(int(bound)) if float(bound).is_integer() else str(bound))


_TRUE = ("true", "yes", "y", "on", "enable", "enabled", "1")
_FALSE = ("false", "no", "n", "off", "disable", "disabled", "0")


def _bool_problem(value: str, option) -> str | None:
    text = value.lower()
    if text in _TRUE or text in _FALSE or (text in ("auto", "-1") and option.min < 0):
        return None
    return "expected true or false" + (" or auto" if option.min < 0 else "")


_FLAG_TOKEN = re.compile(r"[+-]?[^+-]+")


def _flags_problem(value: str, allowed: set[str] | frozenset[str]) -> str | None:
    tokens = _FLAG_TOKEN.findall(value)
    if "".join(tokens) != value or not tokens:
        return "expected flag names joined by + or -, e.g. +cgop"
    for token in tokens:
        name = token.lstrip("+-")
        if name not in allowed:
            return f"flag {name!r} is not allowed here; allowed: {', '.join(sorted(allowed))}"
    return None


def _text_problem(codec: str, key: str, value: str) -> str | None:
    rule = _TEXT_VALUES.get((_family(codec), key))
    if rule is None:
        return "this option takes free text, which is not passed to encoders"
    if isinstance(rule, re.Pattern):
        return None if rule.fullmatch(value) else "not a valid value for it"
    parts = value.split("+") if (_family(codec), key) in _JOINABLE else [value]
    if all(part in rule for part in parts):
        return None
    return f"choose one of {', '.join(rule)}"


def _params_problem(library: str, value: str) -> str | None:
    """Check a `key=value:key=value` list key by key (FFmpeg splits it the same way)."""
    allowed = _PARAM_KEYS[library]
    for pair in value.split(":"):
        key, equals, item = pair.partition("=")
        if not equals or not key or not item:
            return f"write it as key=value:key=value (the piece {pair!r} is not)"
        if key not in allowed:
            touches_files = next((word for word in FILE_WORDS if word in key.lower()), None)
            if touches_files:
                return (f"the {library} parameter {key!r} is refused: parameters that name files, logs, stats, "
                        f"analysis, csv, dumps or passes make the encoder write files")
            return f"the {library} parameter {key!r} is not allowed{_suggest(key, allowed)}"
        if not _PARAM_VALUE.fullmatch(item):
            return f"the value of {key!r} must be a plain word or number, not {item!r}"
    return None
