"""Every limit and choice of what a user may ask for, defined once.

The request model (field ranges and `Literal` choices), the planner (its own checks, for callers
that skip the model), the writers (fps), the API (schema, image headers) and the CLI (flag
choices) all read these names, so a value that one layer accepts is never refused later by
another: a request that validates can be planned, sampled and written. Each limit is generous for
real use and small enough that no single request can exhaust the machine (memory, CPU time of
the planner, disk).
"""

from __future__ import annotations

# ---- video length and rate -------------------------------------------------------------
MIN_FPS = 1.0
"""Slowest frame rate; below it the writers cannot represent the rate exactly (and no one plays it)."""
MAX_FPS = 240.0
"""Fastest frame rate of a generated video (the output rate, interpolated frames included)."""
MAX_ENCODE_FPS = 1000
"""Fastest rate the writers accept when re-encoding saved frames (`framepack_cli.py encode`)."""
MAX_DURATION = 3600.0
"""Longest video, in seconds: an hour is already days of sampling."""
MAX_SECTIONS = 1000
"""Sections in one video (20 minutes at 30 fps with the default window; days of sampling).

Also what keeps planning fast: the plan, its table and its JSON grow with the section count."""
MAX_INTERPOLATION = 8
LATENT_WINDOW_RANGE = (1, 33)
STEPS_RANGE = (1, 200)
RESOLUTION_RANGE = (32, 960)
"""Bucket size in px; multiples of 16 (240-960 for the real models, smaller for the tiny one)."""
RESOLUTION_STEP = 16

# ---- choices ------------------------------------------------------------------------------
VARIANTS = ("original", "f1")
"""``original``: inverted anti-drifting, END generated first. ``f1``: vanilla forward."""
SAMPLERS = ("unipc", "euler")
BLANK_STARTS = ("black", "white", "noise")
"""Start frames for text-to-video when no start image is given."""
CONTAINERS = ("mp4", "mkv", "mov", "webm", "avi")
NO_VIDEO_CODEC = "none"
"""The codec name that writes no video (raw frames or images only)."""
DEFAULT_CODEC = "libx264"
IMAGE_FORMATS = ("png", "jpg", "webp")
INTERPOLATION_METHODS = ("flow", "blend", "rife")

# ---- sampling -----------------------------------------------------------------------------
MAX_SEED = 2**63 - 1
RANDOM_SEED = -1
"""The seed a user gives for "pick one"; resolved when the job is submitted, never sampled with."""
MAX_SHIFT = 100.0
MAX_CFG = 100.0
MAX_TEACACHE_THRESHOLD = 10.0
STEP_CACHES = ("none", "teacache", "magcache")
MAX_MAGCACHE_THRESHOLD = 10.0
MAGCACHE_SKIPS_RANGE = (1, 10)
NOISE_MODES = ("section", "reference")
PROMPT_TOKENS_RANGE = (8, 1024)
CRF_RANGE = (0, 63)

# ---- text ---------------------------------------------------------------------------------
MAX_PROMPT_CHARS = 8000
"""Main, negative and system prompt; the text encoder reads at most 1024 tokens of it anyway."""
MAX_SCHEDULE_CHARS = 100000
MAX_WHEN_CHARS = 200
"""A keyframe's WHEN text."""
MAX_SCHEDULE_LINE_CHARS = 1000
"""One section prompt line; longer text is cut by the text encoder's token limit anyway."""
MAX_WHEN_DIGITS = 12
"""Digits in one number of a WHEN (section 3, 2.5s): more is a typo, never a real section or time."""

# ---- images -------------------------------------------------------------------------------
MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Decoded size of one image (192 MB as RGB); larger files are refused from their header."""
MAX_REQUEST_IMAGE_PIXELS = 96 * 1024 * 1024
"""All images of one request together (start, end, keyframes): 288 MB as RGB while it waits."""
MAX_KEYFRAMES = 32
"""Keyframe images per request: each is decoded and encoded by the VAE and the vision encoder."""
MAX_WAITING_JOBS = 32
"""Jobs waiting in a queue; each holds its decoded images until it runs."""
MAX_BATCH_JOBS = 500
"""Jobs in one batch (a folder of images, a prompt list); a batch may queue this many beyond MAX_WAITING_JOBS."""
MAX_CAPTION_BYTES = 64 * 1024
"""One caption file or prompt list line; longer is not a prompt."""
MAX_PROMPT_LIST_BYTES = 64 * 1024 * 1024
"""A prompt list file (JSONL lines may carry settings)."""

# ---- outputs ------------------------------------------------------------------------------
MAX_CODEC_OPTIONS_CHARS = 2000
MAX_CODEC_NAME_CHARS = 64
"""A codec or pixel format name."""
MAX_FILENAME_CHARS = 120
MAX_LORAS = 16
MAX_LORA_PATH_CHARS = 4096
MAX_LORA_SCHEDULE_ENTRIES = 64
"""WEIGHT@WHEN entries of one LoRA's schedule (each needs a section of its own)."""
UPSCALE_RANGE = (1.0, 4.0)
"""Frame upscaling factor: 1 = off."""
UPSCALERS_BUILTIN = ("lanczos",)
MAX_MODEL_NAME_CHARS = 255


def image_limit_text() -> str:
    """The image limit as users read it in error messages."""
    return f"the limit is {MAX_IMAGE_SIDE} px per side and {MAX_IMAGE_PIXELS // (1024 * 1024)} megapixels"


def request_pixels_text() -> str:
    return f"the limit is {MAX_REQUEST_IMAGE_PIXELS // (1024 * 1024)} megapixels for all images of a request"


# ---- names of the host's own tools -------------------------------------------------------
HOST_MODEL_PREFIX = "sdnext:"
"""`upscaler` / `interpolation_model` values naming the host's own tools instead of a model file:
``sdnext:<upscaler name>`` (SD.Next's upscalers), ``sdnext:RIFE`` (SD.Next's RIFE). Only a host
that has them accepts them (`Host.host_upscaler` / `Host.host_interpolator`). Kept here, with no
heavy imports, so SD.Next's startup reads it without loading the request model."""
