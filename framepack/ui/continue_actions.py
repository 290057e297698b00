"""What the tab's continuation and batch controls do (issues 11 and 15); no Gradio here.

- Resume (jobs panel): an interrupted or failed job with checkpoints continues through
  `JobQueue.resume`, the rules of POST /framepack/v1/jobs/{id}/resume.
- Re-roll: a job with checkpoints is generated again from section N with a new seed
  (`JobQueue.reroll`, as POST .../jobs/{id}/reroll).
- Continue this video: an uploaded clip, or a finished job's video, is continued with the tab's
  prompt, duration and sampling settings (`JobQueue.extend`, as POST .../extend); the clip
  decides the start image, fps and size.
- Batch: uploaded images (+ same-name .txt captions) or a prompt list (.txt, one prompt a line;
  .jsonl, one object of settings a line) become one batch through `framepack.jobs.batch`
  (`submit_batch`, the API's and CLI's path), every entry checked before any is queued.

Uploads are hostile: only files Gradio itself received are read (never a server path a client
names), each by its kind (suffix) within a size limit, every problem naming the control and the
file. Uploaded bytes reach the queue as bytes: an uploaded clip is written only into the job's
work folder inside the output folder.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from framepack.errors import FramePackError, InputError, InputErrors
from framepack.request.events import Status
from framepack.request.limits import MAX_BATCH_JOBS, MAX_CAPTION_BYTES, MAX_PROMPT_LIST_BYTES
from framepack.ui.values import LABELS, _esc, error_html, info_html, request_fields, validate

CONTROL_LABELS = {"video": "Video to continue", "job": "Job", "from_section": "Re-roll from section",
                  "items": "Batch files", "seed": "Seed"}
EXTEND_FROM_CLIP = ("image", "blank_start", "fps", "interpolation")
"""Tab values an extension never sends: `JobQueue.extend` takes them from the clip."""
CONTINUE_VARIANTS = (("Auto", "auto"), ("F1", "f1"), ("Original", "original"))
"""Auto: F1 continues the clip; the original model when an end image is given (it bridges to it)."""
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".gif", ".safetensors")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LIST_SUFFIXES = (".txt", ".jsonl")
MAX_CLIP_UPLOAD_BYTES = 512 * 1024 * 1024
"""Largest clip the tab reads into memory to hand to the queue (the API's body limit is 64 MB)."""
UPLOAD_COPY_NAME = "clip.input"
"""What `JobQueue.extend` calls the copy of uploaded bytes in the job's work folder."""
MAX_IMAGE_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_BATCH_FILES = 2 * MAX_BATCH_JOBS  # an image and its caption per job
MAX_BATCH_PIXELS = 512 * 1024 * 1024
"""Pixels a batch's images may declare together (about 1.5 GB decoded): the requests hold them until they run."""
MAX_UPLOAD_NAME_CHARS = 255


# ----------------------------------------------------------------------------- errors

def problem_text(error: FramePackError, field_labels: Mapping[str, str] | None = None) -> str:
    """Every problem of `error`, each after the label of its control (the tab's or these controls')."""
    labels = {**LABELS, **CONTROL_LABELS, **(field_labels or {})}
    parts = []
    for problem in error.problems():
        field = [part for part in (problem.field or ()) if part != "output" and not isinstance(part, int)]
        label = labels.get(field[0]) if field else None
        parts.append(f"{label}: {problem.message}" if label and not problem.message.startswith(label)
                     else problem.message)
    return "; ".join(parts)


# ----------------------------------------------------------------------------- uploads

class Upload:
    """One file Gradio received for a control: its name as uploaded and where Gradio keeps it."""

    def __init__(self, path: str | os.PathLike, name: str):
        self.path, self.name = Path(path), name

    def read(self, limit: int, what: str) -> bytes:
        try:
            size = self.path.stat().st_size
        except OSError:
            raise InputError(f"{what}: {self.name} is no longer on the server; upload it again") from None
        if size > limit:
            raise InputError(f"{what}: {self.name} is {_size(size)}; the limit is {_size(limit)}")
        with self.path.open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:  # grew meanwhile
            raise InputError(f"{what}: {self.name} is larger than {_size(limit)}")
        return data


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MB" if count >= 2**20 else f"{count} bytes"


def uploads(files: Any, upload_dir: str | os.PathLike | None, what: str) -> list[Upload]:
    """The files of a Gradio file control (one or a list) as `Upload`s; refuses a path outside Gradio's
    upload folder (a client can name any server file in Gradio 3's file payload) and odd names."""
    if files is None:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    root = Path(upload_dir).resolve() if upload_dir else None
    found = []
    for entry in items:
        path = Path(getattr(entry, "name", entry))
        original = str(getattr(entry, "orig_name", None) or path.name)
        name = original.replace("\\", "/").rsplit("/", 1)[-1]
        for candidate in (path, Path(original)) if ("/" in original or "\\" in original) else (path,):
            resolved = candidate.resolve()
            if root is not None and root != resolved and root not in resolved.parents:
                raise InputError(f"{what}: {name!r} is not a file uploaded to this page", ("upload",))
        if not name or len(name) > MAX_UPLOAD_NAME_CHARS or not name.isprintable() or name.startswith("."):
            raise InputError(f"{what}: {name[:60]!r} is not an acceptable file name (printable, at most "
                             f"{MAX_UPLOAD_NAME_CHARS} characters, not hidden)", ("upload",))
        found.append(Upload(path, name))
    return found


def _suffix(name: str) -> str:
    return Path(name).suffix.lower()


# ----------------------------------------------------------------------------- resume, re-roll

def resume_job(job_queue, job_id: str) -> str:
    """Resume an interrupted or failed job (the jobs panel's Resume): the status line to show."""
    if not job_id:
        return error_html("Resume: no job given")
    try:
        job = job_queue.resume(job_id)
    except FramePackError as error:  # unknown job, not resumable, damaged checkpoint, queue full
        return error_html(f"Resume: {error}")
    record = job.record
    return info_html(f"Job {job.id} resumed after {record.sections_done} of {record.sections} sections · "
                     f"seed {record.seed}")


def reroll_job(job_queue, job_id: str, from_section: Any, seed: Any = -1) -> str:
    """A new job from section `from_section` on with `seed` (-1 or empty: a new random one)."""
    job_id = (job_id or "").strip()
    if not job_id:
        return error_html("Re-roll: choose a job (its Re-roll button in the jobs panel fills the Job box)")
    section = _whole_number(from_section)
    if section is None or section < 1:
        return error_html(f"{CONTROL_LABELS['from_section']}: give a section number from 1")
    seed_value = _whole_number(seed) if seed not in (None, "") else -1
    if seed_value is None:
        return error_html("Seed: a whole number (-1: a new random seed)")
    try:
        job = job_queue.reroll(job_id, section, seed=None if seed_value == -1 else seed_value)
    except FramePackError as error:
        return error_html(f"Re-roll: {problem_text(error)}")
    reused = job.record.source.get("reused_sections") or "none"
    return info_html(f"Job {job.id} queued: job {job_id} again from section {section} · seed {job.record.seed} · "
                     f"reused sections: {reused}")


def _whole_number(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


# ----------------------------------------------------------------------------- continue a video

def extend_fields(values: Mapping[str, Any], variant: str = "auto") -> dict[str, Any]:
    """The tab's values as `JobQueue.extend` fields: what the clip decides left out, empties dropped."""
    fields = request_fields(values)
    for name in EXTEND_FROM_CLIP:
        fields.pop(name, None)
    fields = {name: value for name, value in fields.items() if value is not None}
    if not fields.get("keyframes"):
        fields.pop("keyframes", None)
    if variant in ("f1", "original"):
        fields["variant"] = variant
    else:  # auto: F1 continues the clip; with an end image the original model bridges to it
        fields.pop("variant", None)
    return fields


def extend_clip(host, job_queue, values: Mapping[str, Any], *, upload: Any = None, job_id: str | None = None,
                variant: str = "auto", upload_dir: str | os.PathLike | None = None) -> str:
    """Continue an uploaded clip, or finished job `job_id`'s video, with the tab's settings."""
    from framepack.jobs.checks import check_output
    from framepack.request.output import build_output
    from framepack.ui.values import output_fields

    what = CONTROL_LABELS["video"]
    try:
        options = build_output(**output_fields(values, host))
        check_output(options)
        fields = extend_fields(values, variant)
        if job_id:
            job = job_queue.extend(job_queue.clip_of(job_id), fields, options, source={"job": job_id})
        else:
            files = uploads(upload, upload_dir, what)
            if not files:
                raise InputError(f"{what}: upload a video (or raw frames .safetensors) first", ("video",))
            clip = files[0]
            if _suffix(clip.name) not in VIDEO_SUFFIXES:
                raise InputError(f"{what}: {clip.name} is not a video; upload {', '.join(VIDEO_SUFFIXES)}", ("video",))
            data = clip.read(MAX_CLIP_UPLOAD_BYTES, what)
            try:
                job = job_queue.extend(data, fields, options, source={"upload": clip.name})
            except FramePackError as error:  # the queue names its own copy of the upload: say the user's name
                for problem in error.problems():
                    problem.message = problem.message.replace(UPLOAD_COPY_NAME, clip.name)
                raise
    except FramePackError as error:
        return error_html(f"Continue: {problem_text(error)}")
    fitted = job.record.source.get("fitted")
    clip = f"job {job_id}" if job_id else files[0].name
    return info_html(f"Job {job.id} queued: continues {clip} · {job.record.plan} · seed {job.record.seed}"
                     + (f" · note: {fitted}" if fitted else ""))


# ----------------------------------------------------------------------------- batches

def batch_entries(files: Sequence[Upload], values: Mapping[str, Any], host) -> list:
    """`BatchEntry`s from uploaded files over the tab's values; an `InputErrors` names every bad file or line.

    Images (+ same-name .txt captions; no caption: the tab's prompt), or one prompt list: .txt one
    prompt a line (blank and # lines skipped), .jsonl one object of request fields a line whose
    "image" / "end_image" name uploaded images. A prompt list's jobs start from the one uploaded
    image, else from the tab's start image.
    """
    from framepack.jobs.batch import BatchEntry, check_size
    from framepack.request.images import declared_pixels, to_rgb_array

    what = CONTROL_LABELS["items"]
    if not files:
        raise InputError(f"{what}: upload images (with .txt captions) or a prompt list (.txt / .jsonl)", ("items",))
    if len(files) > MAX_BATCH_FILES:
        raise InputError(f"{what}: {len(files)} files; at most {MAX_BATCH_FILES}", ("items",))
    names = Counter(upload.name for upload in files)
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice:
        raise InputError(f"{what}: {', '.join(twice)} uploaded twice", ("items",))
    unknown = [u.name for u in files if _suffix(u.name) not in IMAGE_SUFFIXES + LIST_SUFFIXES]
    if unknown:
        raise InputError(f"{what}: {', '.join(unknown)}: not an image ({', '.join(IMAGE_SUFFIXES)}), caption or "
                         f"prompt list (.txt, .jsonl)", ("items",))
    images = {Path(u.name).stem: u for u in sorted(files, key=lambda u: u.name) if _suffix(u.name) in IMAGE_SUFFIXES}
    captions = {Path(u.name).stem: u for u in files if _suffix(u.name) == ".txt" and Path(u.name).stem in images}
    lists = [u for u in files if _suffix(u.name) in LIST_SUFFIXES and u not in captions.values()]
    if len(lists) > 1:
        raise InputError(f"{what}: {', '.join(u.name for u in lists)}: give one prompt list", ("items",))
    decoded: dict[str, Any] = {}
    budget = [MAX_BATCH_PIXELS]

    def image(upload: Upload) -> Any:
        if upload.name not in decoded:
            data = upload.read(MAX_IMAGE_UPLOAD_BYTES, what)
            budget[0] -= declared_pixels(data, f"{what}: {upload.name}")  # absurd sizes refused from the header
            if budget[0] < 0:
                raise InputError(f"{what}: the images are too large together (more than {MAX_BATCH_PIXELS // 2**20} "
                                 f"megapixels); queue them in smaller batches", ("items",))
            decoded[upload.name] = to_rgb_array(data, f"{what}: {upload.name}")
        return decoded[upload.name]

    problems: list[FramePackError] = []
    raw: list[tuple[str, dict[str, Any], str | None]] = []  # (label, values over the tab's, file stem)
    if lists:
        listed = lists[0]
        start = image(next(iter(images.values()))) if len(images) == 1 else values.get("image")
        for label, fields in _list_lines(listed, what):
            if len(raw) == MAX_BATCH_JOBS:
                check_size(len(raw) + 1, f"{what}: {listed.name}")  # refused before the rest is read
            entry = {"image": start, **fields}
            for key in ("image", "end_image"):
                if isinstance(fields.get(key), str):
                    named = {u.name: u for u in images.values()}.get(fields[key])
                    if named is None:
                        problems.append(InputError(f"{label}: {key} {fields[key]!r} is none of the uploaded images"))
                        entry[key] = None
                    else:
                        entry[key] = image(named)
            raw.append((label, entry, None))
    else:
        for stem, upload in images.items():
            entry = {"image": image(upload)}
            if stem in captions:
                entry["prompt"] = _caption(captions[stem], what)
            raw.append((upload.name, entry, stem))
    check_size(len(raw), what)
    entries = []
    for label, fields, stem in raw:
        item = {**values, **fields}
        if stem:
            item["filename"] = stem
        try:
            request, options = validate(_known(item), host)
            entries.append(BatchEntry(request, options, label))
        except FramePackError as error:
            problems.append(InputError(f"{label}: {error}"))
    if problems:
        raise InputErrors(problems)
    return entries


def _known(item: Mapping[str, Any]) -> dict[str, Any]:
    """A JSONL line may only name tab values / request fields the tab has (no server paths, no LoRA files)."""
    from framepack.ui.values import VALUE_NAMES

    unknown = sorted(set(item) - set(VALUE_NAMES))
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(map(str, unknown))}")
    return dict(item)


def _caption(upload: Upload, what: str) -> str:
    data = upload.read(MAX_CAPTION_BYTES, what)
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise InputError(f"{what}: {upload.name} is not UTF-8 text", ("items",)) from None


def _list_lines(upload: Upload, what: str) -> Iterable[tuple[str, dict[str, Any]]]:
    from framepack.jobs.batch import prompt_list

    data = upload.read(MAX_PROMPT_LIST_BYTES, what)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{what}: {upload.name} is not UTF-8 text", ("items",)) from None
    return prompt_list(text, upload.name, _suffix(upload.name) == ".jsonl", what)


def queue_batch(host, job_queue, files: Any, values: Mapping[str, Any], name: str = "",
                upload_dir: str | os.PathLike | None = None) -> str:
    """Check every entry, then queue them as one batch (`framepack.jobs.batch.submit_batch`)."""
    from framepack.jobs.batch import submit_batch

    try:
        received = uploads(files, upload_dir, CONTROL_LABELS["items"])
        entries = batch_entries(received, values, host)
        batch_id, jobs = submit_batch(job_queue, entries, (name or "").strip() or _default_name(received))
    except FramePackError as error:
        return error_html(f"Batch: {problem_text(error)}")
    return info_html(f"Batch {batch_id} queued: {len(jobs)} job(s) ({', '.join(job.id for job in jobs[:10])}"
                     f"{', ...' if len(jobs) > 10 else ''})")


def _default_name(files: Sequence[Upload]) -> str:
    return f"{files[0].name} and {len(files) - 1} more" if len(files) > 1 else files[0].name


def cancel_batch(job_queue, batch_id: str) -> str:
    from framepack.jobs.batch import cancel_batch as cancel

    if not batch_id:
        return error_html("Cancel batch: no batch given")
    try:
        jobs = cancel(job_queue, batch_id)
    except FramePackError as error:
        return error_html(f"Cancel batch: {error}")
    removed = sum(1 for job in jobs if job.status == Status.CANCELLED)
    stopping = sum(1 for job in jobs if job.status == Status.RUNNING)
    return info_html(f"Batch {batch_id} cancelled: {removed} job(s) removed from the queue, {stopping} stopping "
                     f"after the current step")


# ----------------------------------------------------------------------------- the jobs panel

def _button(action: str, target: str, label: str, title: str) -> str:
    return (f'<button type="button" class="fpk-job-button" data-fpk-job-action="{action}" '
            f'data-fpk-job="{_esc(target)}" title="{_esc(title)}">{_esc(label)}</button>')


def continue_buttons(job) -> list[str]:
    """Resume / Re-roll / Continue video buttons for a finished job in the jobs panel."""
    record = job.record
    status = Status(record.status)
    if not status.finished:
        return []
    buttons = []
    if record.resumable and record.checkpoint and status in (Status.INTERRUPTED, Status.FAILED):
        buttons.append(_button("resume", job.id, "Resume",
                               f"Continue from the last checkpoint (after {record.sections_done} of "
                               f"{record.sections} sections); the same frames as a run never stopped"))
    if record.checkpoint and status in (Status.COMPLETED, Status.INTERRUPTED, Status.FAILED):
        buttons.append(_button("reroll", job.id, "Re-roll…",
                               "Generate again from a section on with a new seed, reusing the sections before it"))
    made = record.outputs.get("video") or record.outputs.get("frames")
    if status in (Status.COMPLETED, Status.INTERRUPTED) and made:
        buttons.append(_button("extend", job.id, "Continue video",
                               "Continue this video with the tab's prompt, duration and settings"))
    return buttons


def _batch_name(job_queue, batch: str) -> str:
    store = getattr(job_queue, "store", None)
    try:
        info = store.batch(batch) if store is not None else None
    except FramePackError:  # an unreadable store must not break the panel
        info = None
    return str(info["name"]) if info else ""


def batches_html(jobs: Sequence, job_queue=None) -> str:
    """One line per batch that still has unfinished jobs: its name, counts and a Cancel batch button."""
    groups: dict[str, list] = {}
    for job in jobs:
        batch = getattr(job, "batch", None)
        if batch:
            groups.setdefault(batch, []).append(job)
    lines = []
    for batch, members in groups.items():
        if all(Status(job.status).finished for job in members):
            continue
        counts = Counter(Status(job.status).value for job in members)
        text = " · ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        name = _batch_name(job_queue, batch)
        name = f" “{_esc(name[:80])}”" if name else ""
        lines.append(f'<li class="fpk-batch" data-fpk-batch-id="{_esc(batch)}"><b>Batch {_esc(batch)}</b>{name} '
                     f'<span class="fpk-batch-counts">{_esc(text)}</span> '
                     + _button("cancel-batch", batch, "Cancel batch", "Remove its queued jobs and stop its running one")
                     + "</li>")
    return f'<ul class="fpk-batches">{"".join(lines)}</ul>' if lines else ""
