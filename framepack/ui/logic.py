"""What the FramePack tab does, as plain Python: no Gradio here, so every rule is testable.

The tab (`framepack.ui.tab`) only lays out components and wires events to these functions:

- `default_values(host)`: the initial value of every control (host settings, then the host's
  ``ui_defaults`` option: a dict of control name -> value, e.g. small sizes for browser tests);
- `plan_html(...)`: the live plan line and section table, or the schedule error in red;
- `validate(values, host)`: the shared request model (`build_request`) plus `OutputOptions`,
  each problem labelled with the name of its control (from the error's field);
- `generate_stream(host, queue, values, task_id, stream)`: submit to the `JobQueue` (which opens
  the host's progress task and closes it when the job ends), then follow the job until it ends,
  yielding `Update`s: with `stream`, the progress text and preview while it runs (the standalone
  page); without, only the start, a "Stopping" line and the end, because inside SD.Next every
  Gradio update costs the browser about a second of work (its page has thousands of components):
  there the page's script draws the progress and live preview from SD.Next's own progress API
  instead (javascript/framepack.js). Closing the page only stops the following: the job itself
  runs on in the queue;
- Stop / Skip / Pause (by job id, or by the page's progress task id when the page has not yet
  received the job id), keyframes, codecs, model load / unload / recipe / settings helpers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from framepack.errors import FramePackError, InputError
from framepack.request.events import STAGES, Status
from framepack.request.model import DEFAULT_SYSTEM_PROMPT

log = logging.getLogger("framepack")

# ----------------------------------------------------------------------------- vocabulary

QUICK_PROMPTS = (
    "The girl dances gracefully, with clear movements, full of charm.",
    "A character doing some simple body movements.",
    "The subject turns toward the camera and smiles warmly.",
    "The camera slowly pushes in while leaves drift through the air.",
    "Waves roll onto the shore at sunset, the camera slowly pulls back.",
)

BLANK_STARTS = ("black", "white", "noise")
VARIANTS = (("Original: anti-drifting, end image", "original"), ("F1: forward", "f1"))
SAMPLERS = ("unipc", "euler")
CONTAINERS = ("mp4", "mkv", "mov", "webm", "avi")
IMAGE_FORMATS = ("png", "jpg", "webp")
INTERPOLATION_METHODS = ("flow", "blend")

RESOLUTION_RANGE = (240, 960, 16)  # the tab; the tiny model's smaller sizes only through the API
DURATION_RANGE = (0.1, 120.0, 0.1)

SECTION_PROMPTS_HELP = (
    "One entry per line, `[WHEN:] text`; the text is added to the main prompt for those sections. "
    "WHEN: `3` = section 3 · `2-4` = sections 2 to 4 · `1.5s` = the section showing second 1.5 · "
    "`1s-3s` = every section overlapping that span · no WHEN = spread in order over the sections "
    "no timed line claims. `#` starts a comment. The plan below shows what each section gets."
)
LORA_NOTE = (
    "**LoRA**: inside SD.Next write `<lora:name:weight>` in the prompt (the host's networks load it); "
    "standalone, LoRA files are applied by the CLI / API (`--lora FILE:WEIGHT`), not from this tab."
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
)
PLAN_NAMES = ("duration", "fps", "interpolation", "latent_window_size", "variant", "prompt", "section_prompts",
              "keyframes")
OUTPUT_NAMES = ("codec", "container", "codec_options", "crf", "save_video", "save_frames", "save_images",
                "image_format", "interpolation_method", "filename")

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
    "preview": True, "system_prompt": DEFAULT_SYSTEM_PROMPT,
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
        return _import_choices("framepack.host.sdnext", "OFFLOAD_CHOICES",
                               ("host", "none", "model", "sequential", "group"))
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
    values = dict(BASE_DEFAULTS)
    for source in (_host_call(host, "request_defaults"), _host_call(host, "output_defaults")):
        values.update({k: v for k, v in source.items() if k in values and v is not None})
    overrides = host.option("ui_defaults", None) if hasattr(host, "option") else None
    if isinstance(overrides, Mapping):
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            log.warning("FramePack tab: ui_defaults has unknown keys %s (known: %s)", unknown, ", ".join(values))
        values.update({k: v for k, v in overrides.items() if k in values})
    values["keyframes"] = list(values["keyframes"] or [])
    return values


# ----------------------------------------------------------------------------- formatting

def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def error_html(message: str) -> str:
    return f'<div class="fpk-error" role="alert">{_esc(message)}</div>'


def info_html(message: str) -> str:
    return f'<div class="fpk-info">{_esc(message)}</div>'


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_bytes(count: float | None) -> str:
    if not count:
        return "0 MB"
    return f"{count / 2**30:.2f} GB" if count >= 2**30 else f"{count / 2**20:.0f} MB"


def memory_stats() -> dict[str, int]:
    """RSS now and at its peak (process), and the accelerator's peak allocation when torch uses one."""
    stats: dict[str, int] = {}
    try:
        import psutil

        stats["ram"] = int(psutil.Process().memory_info().rss)
    except Exception:  # pragma: no cover - psutil is a dependency; stay quiet if it breaks
        pass
    try:
        import resource

        stats["ram_peak"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except Exception:  # pragma: no cover - Windows
        pass
    torch = sys.modules.get("torch")  # never import torch just to report memory
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                stats["gpu_peak"] = int(torch.cuda.max_memory_allocated())
        except Exception:  # pragma: no cover - driver trouble must not break the progress line
            pass
    return stats


def memory_text(stats: Mapping[str, int] | None = None) -> str:
    stats = memory_stats() if stats is None else stats
    parts = []
    if "ram" in stats:
        parts.append(f"RAM {format_bytes(stats['ram'])}")
    if "ram_peak" in stats:
        parts.append(f"peak {format_bytes(stats['ram_peak'])}")
    if "gpu_peak" in stats:
        parts.append(f"GPU peak {format_bytes(stats['gpu_peak'])}")
    return " · ".join(parts)


# ----------------------------------------------------------------------------- the plan

@dataclass
class PlanView:
    """What the plan box shows: one line and a row per section, or an error."""

    summary: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


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


def keyframe_whens(keyframes: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return [str(item.get("when", "")) for item in (keyframes or [])]


def plan_view(duration: Any, fps: Any, interpolation: Any, latent_window_size: Any, variant: Any, prompt: Any,
              section_prompts: Any, keyframes: Sequence[Mapping[str, Any]] | None = None) -> PlanView:
    """The planner's answer for these settings; errors (bad numbers, schedule syntax) as text."""
    from framepack.request.planner import plan_video

    try:
        plan = plan_video(duration=_number(duration), fps=_number(fps), interpolation=_whole(interpolation),
                          latent_window_size=_whole(latent_window_size), variant=variant or "original",
                          prompt=prompt or "", section_prompts=section_prompts or "",
                          keyframes=keyframe_whens(keyframes))
    except FramePackError as error:
        return PlanView(error=str(error))
    summary = plan.summary()
    asked = _number(duration)
    if isinstance(asked, (int, float)) and abs(plan.duration - asked) >= 0.005:
        summary += f" (asked {asked:.2f} s)"
    if plan.variant == "original" and plan.num_sections > 1:
        summary += "; sampled end first"
    return PlanView(summary=summary, rows=plan.table())


def plan_html(duration: Any, fps: Any, interpolation: Any, latent_window_size: Any, variant: Any, prompt: Any,
              section_prompts: Any, keyframes: Sequence[Mapping[str, Any]] | None = None) -> str:
    view = plan_view(duration, fps, interpolation, latent_window_size, variant, prompt, section_prompts, keyframes)
    return render_plan(view)


def host_plan_html(host, duration: Any, fps: Any, interpolation: Any, latent_window_size: Any, variant: Any,
                   prompt: Any, section_prompts: Any, keyframes: Sequence[Mapping[str, Any]] | None = None,
                   resolution: Any = None) -> str:
    """`plan_html` with the resources the run needs on the host's machine appended to the plan line
    (predicted VRAM, RAM, disk; or that it does not fit and what would)."""
    view = plan_view(duration, fps, interpolation, latent_window_size, variant, prompt, section_prompts, keyframes)
    if view.error is None:
        view.summary += resources_text(host, view, _whole(resolution), _whole(latent_window_size), variant)
    return render_plan(view)


def resources_text(host, view: PlanView, resolution: Any, window: Any, variant: Any) -> str:
    """' · VRAM .., RAM .., disk ..' for the plan line; empty when the host describes no machine or
    the values cannot be planned yet (the plan line shows their errors)."""
    from framepack.jobs.resources import assess, resources_line, workload_inputs

    describe = getattr(host, "resource_machine", None)
    if describe is None or not isinstance(resolution, int) or not isinstance(window, int):
        return ""
    try:
        variant = str(variant or "original")
        workload = workload_inputs({"variant": variant, "resolution": resolution, "latent_window_size": window},
                                   len(view.rows), len({row["section_text"] for row in view.rows}) or 1)
        plan, refusal = assess(describe(variant), workload)
    except Exception:  # noqa: BLE001 - the resources only decorate the plan line; the run checks again
        log.debug("no resource plan for the plan line", exc_info=True)
        return ""
    if refusal is not None:
        return f" · needs {resources_line(plan)}: {refusal}"
    return f" · {resources_line(plan)}"


def render_plan(view: PlanView) -> str:
    if view.error:
        return (f'<div class="fpk-plan fpk-plan-bad"><div class="fpk-plan-error" role="alert">{_esc(view.error)}'
                '</div></div>')
    rows = []
    for row in view.rows:
        text = row["section_text"]
        shown = row["prompt"] or "(empty prompt)"
        if text and shown.endswith(text):  # the section's own text in bold after the main prompt
            shown = f"{_esc(shown[: len(shown) - len(text)])}<b>{_esc(text)}</b>"
        else:
            shown = _esc(shown)
        keyframe = "" if row["keyframe"] is None else f"#{row['keyframe']}"
        rows.append(
            f"<tr><td>{row['number']}</td><td>{_esc(row['time'])}</td><td>{_esc(row['frames'])}</td>"
            f"<td>{row['order']}</td><td class=\"fpk-plan-prompt\" title=\"{_esc(row['prompt'])}\">{shown}</td>"
            f"<td>{keyframe}</td></tr>")
    table = (
        '<div class="fpk-plan-scroll"><table class="fpk-plan-table"><thead><tr>'
        '<th>section</th><th>time</th><th>frames</th>'
        '<th title="sampling order">order</th><th>prompt</th><th>keyframe</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>")
    return f'<div class="fpk-plan"><div class="fpk-plan-line">{_esc(view.summary)}</div>{table}</div>'


def mode_html(image: Any, end_image: Any, blank_start: Any, variant: Any,
              keyframes: Sequence[Any] | None = None) -> str:
    """One line under the images: which kind of generation the inputs make (or why they cannot)."""
    if end_image is not None and variant == "f1":
        return error_html("An end image needs the Original variant: F1 generates forward and cannot aim at a "
                          "last frame. Choose Original or remove the end image.")
    if image is None:
        text = (f"Text-to-video from a {blank_start or 'black'} start frame (no start image). "
                "Weaker than image-to-video: the models were trained to animate a real image.")
    elif end_image is not None:
        text = "First + last frame to video (FLF2V)."
    else:
        text = "Image-to-video (I2V)."
    if keyframes:
        text += f" {len(keyframes)} keyframe{'s' if len(keyframes) != 1 else ''}."
    return f'<div class="fpk-mode">{_esc(text)}</div>'


# ----------------------------------------------------------------------------- keyframes

def add_keyframe(keyframes: Sequence[Mapping[str, Any]] | None, image: Any, when: Any) -> tuple[list, str | None]:
    """Append a keyframe after checking its WHEN syntax; returns (keyframes, error or None).

    Whether the WHEN exists in the video (section 7 of 3) is the plan's business: it depends on
    the duration, which may still change.
    """
    from framepack.request.planner import parse_when

    items = list(keyframes or [])
    if image is None:
        return items, "Keyframes: choose an image first"
    text = str(when or "").strip().rstrip(":").strip()
    if not text:
        return items, "Keyframes: write WHEN the image applies: a section (3), range (2-4) or time (1.5s)"
    try:
        parse_when(text, f"keyframe {len(items) + 1}")
    except FramePackError as error:
        return items, str(error)
    items.append({"image": image, "when": text})
    return items, None


def keyframe_gallery(keyframes: Sequence[Mapping[str, Any]] | None) -> list[tuple[Any, str]]:
    return [(item["image"], f"#{n} at {item['when']}") for n, item in enumerate(keyframes or [], start=1)]


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
    return fields


def validate(values: Mapping[str, Any], host):
    """(GenerationRequest, OutputOptions) or InputError naming every problem with the tab's labels."""
    from framepack.jobs.checks import check_output
    from framepack.request.model import build_request
    from framepack.request.output import build_output

    problems, request, options = [], None, None
    try:
        request = build_request(**request_fields(values))
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


# ----------------------------------------------------------------------------- generation

KEEP = object()  # an Update field left as KEEP leaves that output unchanged


@dataclass
class Update:
    """One refresh of the tab's outputs while a generation runs."""

    status: Any = KEEP  # HTML line: errors (red), job state
    progress: Any = KEEP  # HTML: progress bar and text, timings at the end
    preview: Any = KEEP  # np.uint8 image or None
    video: Any = KEEP  # path (str) or None
    job_id: Any = KEEP
    seed: Any = KEEP
    pause_label: Any = KEEP  # "Pause" again when a job starts or ends
    finished: bool = False


def _queue_position(job_queue, job) -> int:
    ahead_of = getattr(job_queue, "ahead_of", None)
    if callable(ahead_of):
        return ahead_of(job) + 1
    waiting = [j for j in job_queue.list() if j.status == Status.QUEUED]
    return next((n for n, j in enumerate(waiting, start=1) if j is job), 0)


def progress_html(job, job_queue=None, stats: Mapping[str, int] | None = None) -> str:
    """The live progress box: bar, section, step, it/s, ETA, elapsed, memory."""
    now = time.time()
    record = job.record
    if record.status == Status.QUEUED:
        position = _queue_position(job_queue, job) if job_queue is not None else 0
        text = f"Waiting in the queue (position {position})" if position else "Waiting in the queue"
        return _progress_box(0.0, text, "")
    elapsed = now - (record.started or now)
    if record.steps:
        paused = " · PAUSED" if getattr(job.control, "paused", False) else ""
        text = (f"Section {min(record.sections_done + 1, record.sections)}/{record.sections}"
                f"{f' (#{record.section})' if record.section else ''} · step {record.step}/{record.steps} · "
                f"{record.it_per_s:.2f} it/s · ETA {format_seconds(record.eta)} · "
                f"elapsed {format_seconds(elapsed)}{paused}")
    elif record.stage == "loading":
        text = f"Starting: loading the model · elapsed {format_seconds(elapsed)}"
    else:
        text = f"Starting: loading the model and encoding the inputs · elapsed {format_seconds(elapsed)}"
    return _progress_box(record.progress, text, memory_text(stats))


def _progress_box(fraction: float, text: str, memory: str) -> str:
    percent = max(0.0, min(100.0, fraction * 100))
    memory_line = f'<div class="fpk-progress-memory">{_esc(memory)}</div>' if memory else ""
    return (f'<div class="fpk-progress"><div class="fpk-bar"><div class="fpk-bar-fill" style="width:{percent:.1f}%">'
            f'</div></div><div class="fpk-progress-text">{percent:.0f}% · {_esc(text)}</div>{memory_line}</div>')


def final_html(job, stats: Mapping[str, int] | None = None) -> str:
    """The box after the job: outcome, frames, seconds, seed, per-stage timings, files, memory."""
    record = job.record
    seconds = (record.finished or time.time()) - (record.started or record.created)
    lines = []
    if record.status == Status.COMPLETED:
        lines.append(f"Done in {format_seconds(seconds)}: {record.frame_count} frames · seed {record.seed}")
    elif record.status == Status.INTERRUPTED:
        frames = f"{record.frame_count} frames made; " if record.frame_count is not None else ""
        lines.append(f"Stopped after {format_seconds(seconds)}: {frames}"
                     + ("partial outputs kept" if record.outputs else "nothing kept") + f" · seed {record.seed}")
    elif record.status == Status.CANCELLED:
        lines.append("Removed from the queue before it started; nothing was made")
    else:
        lines.append(f"Failed after {format_seconds(seconds)}: {record.error}")
    if record.timings:
        names = sorted(record.timings, key=lambda k: (STAGES.index(k) if k in STAGES else len(STAGES), k))
        lines.append("Timings: " + " · ".join(f"{name} {record.timings[name]:.2f} s" for name in names))
    files = [("video", record.video), ("raw frames", record.frames), ("images", record.images)]
    shown = [f"{kind}: {path}" for kind, path in files if path is not None]
    if shown:
        lines.append("Saved " + " · ".join(shown))
    memory = memory_text(stats)
    if memory:
        lines.append(memory)
    css = {Status.COMPLETED: "fpk-final-done", Status.INTERRUPTED: "fpk-final-stopped",
           Status.CANCELLED: "fpk-final-stopped"}.get(record.status, "fpk-final-failed")
    body = "".join(f"<div>{_esc(line)}</div>" for line in lines)
    return f'<div class="fpk-progress fpk-final {css}">{body}</div>'


def status_line(job, task_id: str | None = None) -> str:
    """The status line once the job has ended; `data-fpk-final` tells the page's script it is over."""
    record = job.record
    if record.status == Status.COMPLETED:
        line = info_html(f"Job {job.id} completed · seed {record.seed}")
    elif record.status in (Status.INTERRUPTED, Status.CANCELLED):
        line = info_html(f"Job {job.id} {record.status} · seed {record.seed}")
    elif record.status == Status.FAILED:
        line = error_html(f"Generation failed: {record.error}")
    else:
        return info_html(f"Job {job.id} {record.status} · seed {record.seed}")
    return _final_marker(line, task_id)


def _final_marker(line: str, task_id: str | None) -> str:
    return f'<div data-fpk-final="{_esc(task_id or "")}">{line}</div>'


def stopping_line(job) -> str:
    return info_html(f"Stopping job {job.id} after the current step…")


def _stop_requested(job) -> bool:
    """Stop asked for (our Stop, the API, or the host's own Stop / interrupt) and the job not over yet."""
    try:
        return bool(job.control.should_stop())
    except Exception:  # noqa: BLE001 - a host's state that cannot be read is not a stop
        return False


def preview_html(image: Any = None) -> str:
    """The live preview box: the latest preview strip as an inline JPEG, or a placeholder.

    The page's script (SD.Next) swaps the <img> source in place from SD.Next's progress API.
    """
    if image is None:
        return ('<div class="fpk-live fpk-live-empty"><img class="fpk-live-image" alt="" hidden>'
                '<span>The live preview appears here during a generation</span></div>')
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, format="JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<div class="fpk-live"><img class="fpk-live-image" alt="Live preview" '
            f'src="data:image/jpeg;base64,{data}"></div>')


def generate_stream(host, job_queue, values: Mapping[str, Any], task_id: str | None = None,
                    poll: float = 0.3, heartbeat: float = 2.0, stream: bool = True) -> Iterator[Update]:
    """Validate, submit, then follow the job until it ends; nothing is queued on a bad input.

    With `stream`, yields an `Update` when the job changes (at most every `poll` seconds) and at
    least every `heartbeat` seconds (elapsed time, memory). Without, it yields only the start,
    "Stopping" once when a stop is asked for, and the end. Stopping the iteration (page closed)
    leaves the job running in the queue.
    """
    try:
        request, options = validate(values, host)
    except InputError as error:
        yield Update(status=_final_marker(error_html(str(error)), task_id), finished=True)
        return
    if PAGE_TASKS.stopped_before_start(task_id):
        yield Update(status=_final_marker(info_html("Stopped before the job was submitted"), task_id), finished=True)
        return
    try:  # the queue opens the host's progress task now and closes it when the job ends
        job = job_queue.submit(request, options, task_id=task_id or None)
    except FramePackError as error:
        problems = error.problems()
        yield Update(status=_final_marker(error_html("; ".join(labelled(problem) for problem in problems)), task_id),
                     finished=True)
        return
    PAGE_TASKS.bind(task_id, job, job_queue)  # a Stop that came in meanwhile cancels it now
    seed = job.record.seed
    yield Update(status=info_html(f"Job {job.id} submitted · seed {seed} · {job.record.plan}"),
                 progress=progress_html(job, job_queue), preview=None, video=None, job_id=job.id, seed=seed,
                 pause_label="Pause")
    seen, preview, last, stopping = job.record.updates, None, time.monotonic(), False
    while not job.wait(poll):
        update = Update()
        if not stopping and _stop_requested(job):
            stopping, update.status = True, stopping_line(job)
        now = time.monotonic()
        if stream and (job.record.updates != seen or now - last >= heartbeat):
            seen, last = job.record.updates, now
            update.progress = progress_html(job, job_queue)
            if job.preview is not None and job.preview is not preview:
                preview = update.preview = job.preview
        if update != Update():
            yield update
    video = job.record.video
    yield Update(status=status_line(job, task_id), progress=final_html(job),
                 preview=job.preview if job.preview is not None else KEEP, video=video, job_id="", pause_label="Pause",
                 finished=True)


# ----------------------------------------------------------------------------- Stop / Skip / Pause

class PageTasks:
    """Which job each page's Generate click (its progress task id) started, for Stop.

    The page sends its task id with Generate and with Stop, so Stop finds the job even before
    the page has received the job id (a busy page can lag by seconds). A Stop that arrives
    before the job exists is remembered: the job is cancelled the moment it is submitted, or
    never submitted. Bounded: only the latest `size` tasks are kept.
    """

    def __init__(self, size: int = 256) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, str] = OrderedDict()  # task id -> job id
        self._early_stops: OrderedDict[str, float] = OrderedDict()  # task ids stopped before their job existed
        self._size = size

    def _remember(self, table: OrderedDict, key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._size:
            table.popitem(last=False)

    def bind(self, task_id: str | None, job, job_queue) -> None:
        if not task_id:
            return
        with self._lock:
            self._remember(self._jobs, task_id, job.id)
            stop = self._early_stops.pop(task_id, None) is not None
        if stop:
            job_queue.cancel(job.id)

    def stopped_before_start(self, task_id: str | None) -> bool:
        if not task_id:
            return False
        with self._lock:
            return self._early_stops.pop(task_id, None) is not None

    def job_id(self, task_id: str | None) -> str | None:
        with self._lock:
            return self._jobs.get(task_id) if task_id else None

    def stop_before_start(self, task_id: str) -> None:
        with self._lock:
            self._remember(self._early_stops, task_id, time.time())


PAGE_TASKS = PageTasks()


def _running_job(job_queue, job_id: str | None):
    job = job_queue.get(job_id) if job_id else None
    if job is None or Status(job.status).finished:
        return None
    return job


def _page_job(job_queue, job_id: str | None, task_id: str | None):
    """The page's unfinished job: by job id, else by the page's task id."""
    return _running_job(job_queue, job_id) or _running_job(job_queue, PAGE_TASKS.job_id(task_id))


def _queue_running(job_queue):
    return next((job for job in job_queue.list() if job.status == "running"), None)


def stop_job(job_queue, job_id: str | None, task_id: str | None = None, wait: float = 1.0) -> str:
    """Stop the job this page started, or, when the page has none going, the running one.

    Waits up to `wait` seconds for the job to end, so the line it returns is the final one
    when the job stops at once (the Generate stream ends with the same line).
    """
    job = _page_job(job_queue, job_id, task_id)
    if job is None and task_id and PAGE_TASKS.job_id(task_id) is None and not job_id:
        PAGE_TASKS.stop_before_start(task_id)  # Generate was clicked but its job does not exist yet
        return info_html("Stopping: the job this page started is cancelled as soon as it is submitted")
    if job is None:
        job = _queue_running(job_queue)
    if job is None:
        return info_html("Nothing to stop")
    was_queued = job.status == Status.QUEUED
    job_queue.cancel(job.id)
    if was_queued:
        return info_html(f"Job {job.id} removed from the queue")
    if wait > 0 and job.wait(wait):
        return status_line(job, task_id if PAGE_TASKS.job_id(task_id) == job.id else None)
    return stopping_line(job)


def skip_section(job_queue, job_id: str | None, task_id: str | None = None) -> str:
    job = _page_job(job_queue, job_id, task_id)
    if job is None or job.status != Status.RUNNING:
        return info_html("Nothing to skip")
    job.control.skip()
    return info_html(f"Skipping the rest of the current section of job {job.id}")


def toggle_pause(job_queue, job_id: str | None, task_id: str | None = None) -> tuple[str, str]:
    """(button label, status line): Pause <-> Resume."""
    job = _page_job(job_queue, job_id, task_id)
    if job is None:
        return "Pause", info_html("Nothing to pause")
    if job.control.paused:
        job.control.resume()
        return "Pause", info_html(f"Job {job.id} resumed")
    job.control.pause()
    return "Resume", info_html(f"Job {job.id} paused between steps")


# ----------------------------------------------------------------------------- codecs

def codec_choices(current: str | None = None, refresh: bool = False) -> tuple[list[str], str, str]:
    """(encoders that really open here, the value to select, a note)."""
    from framepack.io import codecs

    found = codecs.available_encoders(refresh=refresh)
    value = current if current in found else ("libx264" if "libx264" in found else found[0])
    hardware = [c for c in found if codecs.is_hardware(c)]
    note = f"{len(found) - 1} working encoders" + (f" ({', '.join(hardware)} hardware)" if hardware else "")
    if current and current not in found:
        note += f"; {current} does not work here, switched to {value}"
    return found, value, note


# ----------------------------------------------------------------------------- model

def _busy(job_queue) -> bool:
    return any(not Status(job.status).finished for job in job_queue.list())


def model_status_html(host) -> str:
    try:
        loaded = host.loaded_variant()
    except Exception as error:  # noqa: BLE001 - shown, never raised into the page
        return error_html(f"Model status unavailable: {error}")
    settings = [f"{label} {host.option(key, '-') or '-'}" for label, key in
                (("quantization", QUANT_KEY), ("offload", OFFLOAD_KEY), ("attention", ATTENTION_KEY))]
    device = getattr(host, "device", None)
    head = f"Loaded: {loaded}" if loaded else "No model loaded (loads on the first Generate)"
    extra = " · ".join(settings + ([f"device {device}"] if device else []))
    return f'<div class="fpk-model-status">{_esc(head)}<br><span>{_esc(extra)}</span></div>'


def load_model(host, job_queue, variant: str) -> str:
    if _busy(job_queue):
        return error_html("A generation is queued or running; the model is loaded for it. Try again when it ends.")
    started = time.perf_counter()
    try:
        with host.gpu_lock():
            host.pipeline(variant)
    except FramePackError as error:
        return error_html(str(error))
    return info_html(f"{variant} model ready in {time.perf_counter() - started:.1f} s")


def unload_model(host, job_queue) -> str:
    if _busy(job_queue):
        return error_html("A generation is queued or running; unload when it ends.")
    host.unload()
    return info_html("Model unloaded")


def settings_writable(host) -> bool:
    return callable(getattr(host, "set_option", None)) or isinstance(getattr(host, "settings", None), dict)


def store_setting(host, key: str, value: Any) -> bool:
    """Write a host setting: `host.set_option` when the host has one, else its `settings` dict."""
    setter = getattr(host, "set_option", None)
    if callable(setter):
        setter(key, value)
        return True
    settings = getattr(host, "settings", None)
    if isinstance(settings, dict):
        settings[key] = value
        return True
    return False


def change_setting(host, key: str, value: Any, label: str) -> str:
    if store_setting(host, key, value):
        return info_html(f"{label}: {value} (used from the next model load)")
    return error_html(f"{label} is a host setting here: change it in Settings -> FramePack")


def _recipe_for(host, variant: str):
    recipe = getattr(host, "recipe", None)
    if callable(recipe):
        return recipe(variant)
    from framepack.models.recipe import default_recipe

    return default_recipe(variant)


def recipe_json(host, variant: str) -> str:
    """The effective component recipe as editable JSON: role -> hub id[/subfolder] or folder."""
    try:
        return recipe_json_from(_recipe_for(host, variant))
    except FramePackError as error:
        return json.dumps({"error": str(error)}, indent=2)


def apply_recipe(host, variant: str, text: str) -> tuple[str, str]:
    """Validate edited JSON and store it as the host's recipe setting; returns (json, message).

    The transformer entry is stored for this variant only (`transformer_<variant>`), so editing
    the Original recipe never changes F1's transformer.
    """
    from framepack.errors import ModelError
    from framepack.models.recipe import ROLES, ComponentSource, Recipe

    try:
        data = json.loads(text or "")
    except ValueError as error:
        return text, error_html(f"Recipe: not valid JSON ({error})")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return text, error_html("Recipe: expected a JSON object of role -> source text")
    try:
        unknown = sorted(set(data) - set(ROLES))
        if unknown:
            raise ModelError(f"unknown role(s) {', '.join(unknown)}; known roles: {', '.join(ROLES)}")
        current = _recipe_for(host, variant)
        intended = Recipe(variant, {**current.components,
                                    **{role: ComponentSource.parse(value, role) for role, value in data.items()}})
    except FramePackError as error:
        return text, error_html(f"Recipe: {error}")
    stored = {(f"transformer_{variant}" if role == "transformer" else role): value for role, value in data.items()}
    merged = _merge_recipe_setting(host.option(RECIPE_KEY, ""), stored)
    if not store_setting(host, RECIPE_KEY, merged):
        return text, error_html("Recipe: this host keeps the recipe in Settings -> FramePack -> Model recipe")
    effective = recipe_json(host, variant)
    if effective != recipe_json_from(intended):
        return effective, error_html("Recipe stored, but this host does not read the recipe setting "
                                     "(its model comes from the command line)")
    return effective, info_html("Recipe stored; it is used from the next model load")


def recipe_json_from(recipe) -> str:
    return json.dumps({role: source.describe() for role, source in recipe.components.items()}, indent=2)


def _merge_recipe_setting(previous: Any, entries: Mapping[str, str]) -> str:
    """Add entries to the stored JSON recipe setting (a non-JSON stored setting is replaced)."""
    data: dict[str, str] = {}
    if isinstance(previous, str) and previous.strip().startswith("{"):
        try:
            loaded = json.loads(previous)
            if isinstance(loaded, dict):
                data = {str(k): str(v) for k, v in loaded.items()}
        except ValueError:
            pass
    data.update(entries)
    return json.dumps(data)


def reset_recipe(host, variant: str) -> tuple[str, str]:
    if not store_setting(host, RECIPE_KEY, ""):
        return recipe_json(host, variant), error_html("Recipe: this host keeps the recipe in Settings -> FramePack")
    return recipe_json(host, variant), info_html("Recipe reset to the defaults")
