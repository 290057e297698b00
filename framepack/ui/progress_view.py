"""What the tab shows about jobs: the progress box, the result block, status lines, the live preview
and the jobs panel (running, queued, history). Plain HTML from job records; no Gradio here."""

from __future__ import annotations

import base64
import io
import sys
import time
from typing import Any, Mapping

from framepack.request.events import STAGES, Status
from framepack.ui.continue_actions import batches_html, continue_buttons
from framepack.ui.values import _esc, error_html, info_html

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


STAGE_TEXT = {
    "loading": "loading the model",
    "text": "encoding the prompt",
    "vision": "encoding the images (vision)",
    "vae_encode": "encoding the images (VAE)",
    "sample": "sampling",
    "vae_decode": "decoding frames (VAE)",
    "interpolate": "interpolating and encoding frames",
    "encode": "encoding the video",
}
POST_STAGES = ("vae_decode", "interpolate", "encode")
"""Work after the sampling of each section: its share of the ETA is measured, not guessed."""


def ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def queue_position(job_queue, job) -> int:
    """The job's place in line, counting the running job (1 = next to run when nothing runs)."""
    ahead_of = getattr(job_queue, "ahead_of", None)
    if callable(ahead_of):
        return ahead_of(job) + 1
    waiting = [j for j in job_queue.list() if j.status == Status.QUEUED]
    return next((n for n, j in enumerate(waiting, start=1) if j is job), 0)


def waiting_text(job_queue, job) -> str:
    position = queue_position(job_queue, job) if job_queue is not None else 0
    return f"Waiting, {ordinal(position)} in line" if position else "Waiting in the queue"


def estimate(record, now: float | None = None) -> tuple[float, float | None]:
    """(fraction of the whole job done, seconds left) from the sampling ETA plus the measured decode,
    interpolation and encoding time per section; (sampling fraction, None) until one section has
    been decoded (the time left is not known yet)."""
    now = time.time() if now is None else now
    if record.status == Status.COMPLETED:
        return 1.0, 0.0
    if not record.sections_done:
        return min(record.progress, 0.99), None
    sections = max(1, record.sections)
    per_section = sum(record.stage_seconds.get(name, 0.0) for name in POST_STAGES) / record.sections_done
    left_sections = sections - record.sections_done  # the section being worked on included
    sampling_left = record.eta if record.stage == "sample" and record.eta is not None else 0.0
    if record.stage == "sample" or record.stage is None:
        left = sampling_left + per_section * left_sections
    else:  # decoding or encoding a section: what is left of it, then the sections after it
        current = max(0.0, per_section - (now - (record.stage_since or now)))
        left = current + per_section * max(0, left_sections - 1)
        if left_sections > 1 and record.it_per_s:
            left += (left_sections - 1) * record.steps / record.it_per_s
    elapsed = now - (record.started or now)
    fraction = elapsed / (elapsed + left) if elapsed + left > 0 else 0.0
    return min(fraction, 0.99), left


def pause_text(job) -> str:
    control = job.control
    if not getattr(control, "paused", False):
        return ""
    waiting = getattr(control, "waiting", None)
    if waiting is None:  # a host's control without the flag: only sampling stands still
        waiting = job.record.stage == "sample"
    return " · PAUSED" if waiting else " · pausing at the next sampling step"


def progress_html(job, job_queue=None, stats: Mapping[str, int] | None = None) -> str:
    """The live progress box: bar, stage, section, step, it/s, ETA (decode and encoding included), memory."""
    now = time.time()
    record = job.record
    if record.status == Status.QUEUED:
        return _progress_box(0.0, waiting_text(job_queue, job), "")
    return _progress_box(*progress_text(job, now), memory_text(stats))


def progress_text(job, now: float | None = None) -> tuple[float, str]:
    """(fraction, one line): the stage the job is in and how far it is."""
    now = time.time() if now is None else now
    record = job.record
    elapsed = now - (record.started or now)
    stage = STAGE_TEXT.get(record.stage or "", "starting")
    fraction, left = estimate(record, now)
    if left is not None:
        eta = f"ETA {format_seconds(left)}"
    else:
        eta = "ETA: decode time not measured yet" if record.stage in POST_STAGES else "ETA after the first section"
    if record.steps:
        section = min(record.sections_done + 1, record.sections)  # the one being sampled, decoded or encoded
        text = (f"{stage[:1].upper()}{stage[1:]} · section {max(1, section)}/{record.sections}"
                f"{f' (#{record.section})' if record.section else ''} · step {record.step}/{record.steps} · "
                f"{record.it_per_s:.2f} it/s · {eta} · elapsed {format_seconds(elapsed)}{pause_text(job)}")
    else:
        text = f"Starting: {stage} · elapsed {format_seconds(elapsed)}{pause_text(job)}"
    return fraction, text


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



# ----------------------------------------------------------------------------- the jobs panel

HISTORY_SHOWN = 30
SUMMARY_KEYS = (("variant", "{}"), ("resolution", "{} px"), ("duration", "{} s"), ("fps", "{} fps"),
                ("steps", "{} steps"), ("cfg", "CFG {}"))


def settings_summary(settings: Mapping[str, Any]) -> str:
    parts = [fmt.format(settings[key]) for key, fmt in SUMMARY_KEYS if settings.get(key) not in (None, "")]
    prompt = str(settings.get("prompt") or "")
    if prompt:
        parts.append(f"“{prompt[:60]}{'…' if len(prompt) > 60 else ''}”")
    return " · ".join(parts)


def _job_button(action: str, job_id: str, label: str, title: str) -> str:
    return (f'<button type="button" class="fpk-job-button" data-fpk-job-action="{action}" '
            f'data-fpk-job="{_esc(job_id)}" title="{_esc(title)}">{_esc(label)}</button>')


def _file_link(kind: str, path: str) -> str:
    return f'<a class="fpk-job-file" href="file={_esc(path)}" target="_blank" title="{_esc(path)}">{_esc(kind)}: ' \
           f'{_esc(path.replace(chr(92), "/").rsplit("/", 1)[-1])}</a>'


def job_row(job, job_queue) -> str:
    record = job.record
    status = Status(record.status)
    if status == Status.QUEUED:
        state = waiting_text(job_queue, job)
    elif status == Status.RUNNING:
        state = progress_text(job)[1]
    else:
        state = str(status)
        if record.error:
            state += f": {record.error}"
    buttons = []
    if not status.finished:
        buttons.append(_job_button("stop", job.id, "Stop" if status == Status.RUNNING else "Remove",
                                   "Stop this job after its current step" if status == Status.RUNNING
                                   else "Remove this job from the queue"))
    buttons += continue_buttons(job)  # Resume, Re-roll, Continue video (framepack.ui.continue_actions)
    buttons.append(_job_button("load", job.id, "Load settings", "Put this job's settings into every control"))
    files = " ".join(_file_link(kind, path) for kind, path in record.outputs.items())
    seed = f" · seed {record.seed}" if record.seed is not None else ""
    item = (record.source or {}).get("item") if getattr(job, "batch", None) else None
    item = f' <span class="fpk-job-item">{_esc(item)}</span>' if item else ""
    return (f'<li class="fpk-job fpk-job-{status.value}" data-fpk-job-id="{_esc(job.id)}">'
            f'<div class="fpk-job-head"><b>{_esc(job.id)}</b>{item} <span class="fpk-job-state">{_esc(state)}</span>'
            f'</div>'
            f'<div class="fpk-job-settings">{_esc(record.plan)}{_esc(seed)} · {_esc(settings_summary(record.settings))}'
            f'</div>{f"<div class=fpk-job-files>{files}</div>" if files else ""}'
            f'<div class="fpk-job-buttons">{"".join(buttons)}</div></li>')


def jobs_html(job_queue) -> str:
    """Running and queued jobs (in run order), then the finished ones, newest first."""
    jobs = job_queue.list()
    active = [job for job in jobs if not Status(job.status).finished]
    active.sort(key=lambda job: (job.status != Status.RUNNING, queue_position(job_queue, job)))
    finished = sorted((job for job in jobs if Status(job.status).finished),
                      key=lambda job: job.record.finished or job.record.created, reverse=True)[:HISTORY_SHOWN]
    parts = ['<div class="fpk-jobs">']
    parts.append('<div class="fpk-jobs-title">Running and queued</div>')
    parts.append(batches_html(jobs, job_queue))
    parts.append(f'<ul class="fpk-jobs-active">{"".join(job_row(job, job_queue) for job in active)}</ul>'
                 if active else '<div class="fpk-jobs-empty">No job running</div>')
    parts.append('<div class="fpk-jobs-title">History (newest first)</div>')
    parts.append(f'<ul class="fpk-jobs-history">{"".join(job_row(job, job_queue) for job in finished)}</ul>'
                 if finished else '<div class="fpk-jobs-empty">No finished job yet</div>')
    parts.append("</div>")
    return "".join(parts)
