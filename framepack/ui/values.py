"""The tab's values: the controls' names, choices and defaults, and how they become a request.

Choices and ranges come from `framepack.request.limits` (never copied here); the defaults are the
request model's, then the host's, then the host's `ui_defaults` option. `validate(values, host)`
builds the shared request model plus `OutputOptions`, each problem labelled with the name of its
control (from the error's field). `values_from_settings` turns settings embedded in a video, a
job's record or a preset back into control values (Load settings).
"""

from __future__ import annotations

import html
import logging
from typing import Any, Mapping, Sequence

from framepack.errors import FramePackError, InputError
from framepack.request import limits
from framepack.request.model import DEFAULT_SYSTEM_PROMPT
from framepack.ui.media_values import (MEDIA_DEFAULTS, MEDIA_LABELS, OUTPUT_MEDIA_NAMES, default_rife,
                                       output_media_fields, request_media_fields)

log = logging.getLogger("framepack")

# ----------------------------------------------------------------------------- vocabulary

QUICK_PROMPTS = (
    "The girl dances gracefully, with clear movements, full of charm.",
    "A character doing some simple body movements.",
    "The subject turns toward the camera and smiles warmly.",
    "The camera slowly pushes in while leaves drift through the air.",
    "Waves roll onto the shore at sunset, the camera slowly pulls back.",
)


BLANK_STARTS = limits.BLANK_STARTS
VARIANT_LABELS = {"original": "Original: anti-drifting, end image", "f1": "F1: forward"}
VARIANTS = tuple((VARIANT_LABELS.get(name, name), name) for name in limits.VARIANTS)
SAMPLERS = limits.SAMPLERS
CONTAINERS = limits.CONTAINERS
IMAGE_FORMATS = limits.IMAGE_FORMATS
INTERPOLATION_METHODS = limits.INTERPOLATION_METHODS

# the tab's sliders: real models' buckets (the tiny model's smaller sizes only through ui_defaults / the API);
# the duration slider covers the usual lengths (the CLI and API keep up to limits.MAX_DURATION)
RESOLUTION_RANGE = (240, limits.RESOLUTION_RANGE[1], limits.RESOLUTION_STEP)
DURATION_RANGE = (0.1, 60.0, 0.1)
STEPS_RANGE = limits.STEPS_RANGE
LATENT_WINDOW_RANGE = limits.LATENT_WINDOW_RANGE
FPS_RANGE = (limits.MIN_FPS, limits.MAX_FPS)
CRF_RANGE = limits.CRF_RANGE
MAX_INTERPOLATION = limits.MAX_INTERPOLATION
MAX_CFG = limits.MAX_CFG
MAX_SHIFT = limits.MAX_SHIFT
CFG_SLIDER_MAX = min(32.0, limits.MAX_CFG)
"""CFG sliders stop at 32 (more is never useful); the API and CLI accept up to limits.MAX_CFG."""

SECTION_PROMPTS_HELP = (
    "One entry per line, `[WHEN:] text`; the text is added to the main prompt for those sections. "
    "WHEN: `3` = section 3 · `2-4` = sections 2 to 4 · `1.5s` = the section showing second 1.5 · "
    "`1s-3s` = every section overlapping that span · no WHEN = spread in order over the sections "
    "no timed line claims. `#` starts a comment. The plan below shows what each section gets."
)
LORA_NOTE = (
    "**LoRA**: pick files from the LoRA folder (setting `framepack_lora_dir`) with a weight each, or a weight "
    "per section (`0.8@1-3`), under *LoRA, upscaling, Tiny VAE*; inside SD.Next `<lora:name:weight>` in the "
    "prompt works too (SD.Next's own LoRA list)."
)

# The values the tab sends to Generate, in the order of its input components. `keyframes` is a
# list of {"image": array, "when": str}; everything else is what the control itself returns.
VALUE_NAMES = (
    "image", "blank_start", "end_image", "keyframes", "start_strength", "end_strength", "vision_strength",
    "prompt", "negative_prompt", "section_prompts", "variant", "resolution", "duration", "fps", "interpolation",
    "codec", "container", "codec_options", "crf", "save_video", "save_frames", "save_images", "image_format",
    "interpolation_method", "filename",
    "seed", "latent_window_size", "steps", "shift", "cfg", "distilled_cfg", "cfg_rescale", "sampler",
    "teacache", "teacache_threshold", "cfg_zero_star", "preview", "system_prompt",
    *MEDIA_DEFAULTS,  # LoRA picker, upscaling, RIFE model, Tiny VAE (framepack.ui.media_values)
)
PLAN_NAMES = ("duration", "fps", "interpolation", "latent_window_size", "variant", "prompt", "section_prompts",
              "keyframes")
OUTPUT_NAMES = ("codec", "container", "codec_options", "crf", "save_video", "save_frames", "save_images",
                "image_format", "interpolation_method", "filename", *OUTPUT_MEDIA_NAMES)

BASE_DEFAULTS: dict[str, Any] = {
    "image": None, "blank_start": "black", "end_image": None, "keyframes": [],
    "start_strength": 1.0, "end_strength": 1.0, "vision_strength": 0.5,
    "prompt": "", "negative_prompt": "", "section_prompts": "",
    "variant": "original", "resolution": 640, "duration": 5.0, "fps": 30, "interpolation": 0,
    "codec": "libx264", "container": "mp4", "codec_options": "", "crf": 16, "save_video": True,
    "save_frames": False, "save_images": False, "image_format": "png", "interpolation_method": "flow",
    "filename": "framepack",
    "seed": -1, "latent_window_size": 9, "steps": 25, "shift": 0.0, "cfg": 1.0, "distilled_cfg": 10.0,
    "cfg_rescale": 0.0, "sampler": "unipc", "teacache": True, "teacache_threshold": 0.15, "cfg_zero_star": False,
    "preview": True, "system_prompt": DEFAULT_SYSTEM_PROMPT, **MEDIA_DEFAULTS,
}

LABELS = {  # request / output field -> the label on the tab, for error messages
    "image": "Start image", "end_image": "End image", "keyframes": "Keyframes", "blank_start": "Blank start",
    "start_strength": "Start strength", "end_strength": "End strength", "vision_strength": "Vision strength",
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "section_prompts": "Section prompts",
    "system_prompt": "System prompt", "variant": "Model variant", "duration": "Duration", "fps": "FPS",
    "interpolation": "Interpolation frames", "resolution": "Resolution", "steps": "Steps", "seed": "Seed",
    "latent_window_size": "Latent window", "sampler": "Sampler", "shift": "Shift", "distilled_cfg": "Distilled CFG",
    "cfg": "CFG", "cfg_rescale": "CFG rescale", "teacache_threshold": "TeaCache threshold",
    "codec": "Codec", "container": "Container", "codec_options": "Codec options", "crf": "Quality (CRF)",
    "image_format": "Image format", "filename": "File name", "interpolation_method": "Interpolation method",
    **MEDIA_LABELS,
}

# host settings the Model accordion writes (the same keys SD.Next keeps under Settings -> FramePack)
QUANT_KEY, OFFLOAD_KEY, ATTENTION_KEY, RECIPE_KEY = (
    "framepack_quantization", "framepack_offload", "framepack_attention", "framepack_model_recipe")



def _import_choices(module: str, name: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
    """Choices owned by another module, with a literal fallback when it is missing or older."""
    try:
        value = getattr(__import__(module, fromlist=[name]), name)
        return tuple(str(item) for item in value)
    except (ImportError, AttributeError):  # pragma: no cover - only while a module is absent
        return fallback


def quantization_choices() -> tuple[str, ...]:
    return _import_choices("framepack.models.quantize", "QUANT_METHODS",
                           ("none", "quanto-int8", "quanto-fp8", "quanto-int4", "nncf-int8", "nncf-int4"))


def offload_choices(host) -> tuple[str, ...]:
    """SD.Next adds 'host' (its own Model offload mode, balanced included) to our modes."""
    if getattr(host, "name", "") == "sdnext":
        from framepack.request.settings import OFFLOAD_CHOICES

        return OFFLOAD_CHOICES
    return _import_choices("framepack.models.offload", "OFFLOAD_MODES",
                           ("auto", "none", "model", "sequential", "group"))


def attention_choices() -> tuple[str, ...]:
    backends = _import_choices("framepack.models.offload", "ATTENTION_BACKENDS",
                               ("native", "flash", "sage", "xformers"))
    return ("default", *[b for b in backends if b != "default"])


def with_current(choices: Sequence[str], current: Any) -> list[str]:
    """A dropdown's choices, keeping a stored value that is not (or no longer) among them."""
    items = list(choices)
    if current not in (None, "") and current not in items:
        items.insert(0, str(current))
    return items


# ----------------------------------------------------------------------------- defaults

def _host_call(host, name: str) -> dict[str, Any]:
    method = getattr(host, name, None)
    if not callable(method):
        return {}
    try:
        return dict(method() or {})
    except Exception as error:  # a host setting that cannot be read must not break the tab
        log.warning("FramePack tab: %s() failed: %s", name, error)
        return {}


def default_values(host) -> dict[str, Any]:
    """Initial control values: built-in defaults < host request/output defaults < `ui_defaults`.

    `ui_defaults` (host option, a dict of VALUE_NAMES keys) lets a standalone host start the tab
    with other values, e.g. the tiny model's fast settings in the browser tests; unknown keys are
    ignored with a warning.
    """
    values = {**BASE_DEFAULTS, "interpolation_model": default_rife(host)}
    for source in (_host_call(host, "request_defaults"), _host_call(host, "output_defaults")):
        values.update({k: v for k, v in source.items() if k in values and v is not None})
    overrides = host.option("ui_defaults", None) if hasattr(host, "option") else None
    if isinstance(overrides, Mapping):
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            log.warning("FramePack tab: ui_defaults has unknown keys %s (known: %s)", unknown, ", ".join(values))
        values.update({k: v for k, v in overrides.items() if k in values})
    values["keyframes"] = list(values["keyframes"] or [])
    values["loras"] = list(values["loras"] or [])
    return values


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def error_html(message: str) -> str:
    return f'<div class="fpk-error" role="alert">{_esc(message)}</div>'


def info_html(message: str) -> str:
    return f'<div class="fpk-info">{_esc(message)}</div>'


def _number(value: Any) -> Any:
    """Gradio numbers arrive as int/float, an emptied box as None; text is left for the planner to refuse."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _whole(value: Any) -> Any:
    value = _number(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value



# ----------------------------------------------------------------------------- validation

def labelled(problem: FramePackError) -> str:
    """A problem as the tab shows it: the label of its control (from `problem.field`), then the message."""
    field = [part for part in (problem.field or ()) if part != "output" and not isinstance(part, int)]
    label = LABELS.get(field[0]) if field else None
    return f"{label}: {problem.message}" if label else problem.message


def request_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """Tab values -> `GenerationRequest` fields (no image -> the chosen blank start: text-to-video)."""
    image = values.get("image")
    shift = _number(values.get("shift"))
    seed = _number(values.get("seed"))
    fields = {
        "image": image,
        "blank_start": None if image is not None else (values.get("blank_start") or "black"),
        "end_image": values.get("end_image"),
        "keyframes": [{"image": k["image"], "when": k["when"]} for k in values.get("keyframes") or []],
        "shift": None if shift in (None, "") or (isinstance(shift, (int, float)) and shift <= 0) else shift,
        "seed": -1 if seed in (None, "") else _whole(seed),
    }
    for name in ("start_strength", "end_strength", "vision_strength", "duration", "fps", "cfg", "distilled_cfg",
                 "cfg_rescale", "teacache_threshold"):
        fields[name] = _number(values.get(name))
    for name in ("interpolation", "resolution", "steps", "latent_window_size"):
        fields[name] = _whole(values.get(name))
    for name in ("prompt", "negative_prompt", "section_prompts"):
        fields[name] = values.get(name) or ""
    fields["system_prompt"] = values.get("system_prompt") or DEFAULT_SYSTEM_PROMPT
    for name in ("variant", "sampler", "teacache", "cfg_zero_star", "preview"):
        fields[name] = values.get(name)
    return fields


def output_fields(values: Mapping[str, Any], host) -> dict[str, Any]:
    fields = {name: values.get(name) for name in OUTPUT_NAMES}
    fields["crf"] = _whole(fields["crf"])
    fields["codec_options"] = fields["codec_options"] or ""
    fields["filename"] = (fields["filename"] or "framepack").strip() or "framepack"
    fields["keep_incomplete"] = bool(host.keep_incomplete())
    fields.update(output_media_fields(values, host))  # model names -> the model folder's files
    return fields


def validate(values: Mapping[str, Any], host):
    """(GenerationRequest, OutputOptions) or InputError naming every problem with the tab's labels."""
    from framepack.jobs.checks import check_output
    from framepack.request.model import build_request
    from framepack.request.output import build_output

    problems, request, options = [], None, None
    try:
        request = build_request(**request_fields(values), **request_media_fields(values, host))
    except FramePackError as error:
        problems.extend(error.problems())
    try:
        options = build_output(**output_fields(values, host))
        check_output(options)
    except FramePackError as error:
        problems.extend(error.problems())
    if problems:
        raise InputError("; ".join(labelled(problem) for problem in problems))
    return request, options



def negative_prompt_visible(cfg: Any) -> bool:
    """The negative prompt is read only with real CFG (> 1)."""
    value = _number(cfg)
    return isinstance(value, (int, float)) and value > 1
