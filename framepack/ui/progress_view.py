"""What the tab shows about jobs: the progress box, the result block, status lines, the live preview
and the jobs panel (running, queued, history). Plain HTML from job records; no Gradio here."""

from __future__ import annotations

import base64
import io
import sys
import time
from typing import Any, Mapping

from framepack.request.events import STAGES, Status
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

