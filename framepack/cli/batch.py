"""`framepack_cli.py batch`: many videos from a folder of images or a prompt list.

    framepack_cli.py batch photos/ --prompt "gentle motion" --out outputs      # photos/cat.png + cat.txt ...
    framepack_cli.py batch prompts.txt --image start.png --out outputs          # one job per line
    framepack_cli.py batch jobs.jsonl --image start.png --out outputs           # one object of settings per line

A folder: every image (png, jpg, jpeg, webp, bmp), sorted by name; its prompt is the same-name
`.txt` file beside it (cat.png -> cat.txt), else `--prompt`. A prompt list: one prompt per line
(blank lines and lines starting with # are skipped), each job with `--image`. JSONL: one JSON
object per line with request fields (prompt, seed, duration, section_prompts, ...; "image" and
"end_image" are file paths, relative to the list's folder) over the flags. Every entry is checked
before anything runs; an error names the file or line. The jobs are kept in the output folder's
job store: a batch stopped with Ctrl-C (or a crash) leaves its remaining jobs queued there, and
`framepack_cli.py serve` on that folder (or the next `batch` run there) runs them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FILE_FIELDS = ("image", "end_image")


def add_batch(subparsers) -> None:
    from framepack.cli.generate import OUTPUT_FLAGS, REQUEST_FLAGS, _add_field, add_model_flags, add_report_flags
    from framepack.request.model import GenerationRequest
    from framepack.request.output import OutputOptions

    parser = subparsers.add_parser(
        "batch", help="generate one video per image of a folder (captions from .txt files) or per prompt line",
        description="Queue one job per image of a folder (its prompt from a same-name .txt caption, else --prompt) "
                    "or per line of a prompt list (.txt: one prompt per line; .jsonl: one JSON object of settings "
                    "per line), run them in order and report each. The flags are every job's defaults.")
    parser.add_argument("input", help="a folder of images (+ .txt captions), a prompt list (.txt) or JSONL (.jsonl)")
    parser.add_argument("--image", help="start image of every job of a prompt list")
    parser.add_argument("--end-image", help="last frame of every job (original model only)")
    parser.add_argument("--name", dest="batch_name", default="", help="the batch's name (default: the input's)")
    groups = {}
    for title, names in REQUEST_FLAGS.items():
        group = groups.setdefault(title, parser.add_argument_group(title))
        for name in names:
            _add_field(group, GenerationRequest, name)
    add_model_flags(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="outputs", help="output folder (default ./outputs)")
    for name in OUTPUT_FLAGS:
        if name != "filename":
            _add_field(output, OutputOptions, name)
    add_report_flags(parser)
    parser.set_defaults(func=run_batch, filename=None)


# ----------------------------------------------------------------------------------------- entries

def read_entries(args) -> list:
    """The batch's entries from the input folder or list; InputErrors naming each bad file or line."""
    from framepack.errors import InputError

    source = Path(args.input).expanduser()
    if source.is_dir():
        return _from_folder(args, source)
    if not source.is_file():
        raise InputError(f"{args.input}: no such folder or file")
    if source.suffix.lower() == ".jsonl":
        return _from_jsonl(args, source)
    return _from_prompt_list(args, source)


def _from_folder(args, folder: Path) -> list:
    from framepack.errors import InputError

    images = sorted(path for path in folder.iterdir()
                    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith("."))
    if not images:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    _check_count(len(images), str(folder))
    entries = []
    for image in images:
        caption = image.with_suffix(".txt")
        fields = {"image": _read_file(image, image.name)}
        if caption.is_file():
            fields["prompt"] = _read_caption(caption)
        entries.append((image.name, fields, image.stem))
    return _build(args, entries)


def _from_prompt_list(args, path: Path) -> list:
    from framepack.jobs.batch import prompt_list

    prompts = list(prompt_list(_read_text(path), path.name, jsonl=False))
    _check_count(len(prompts), str(path))
    return _build(args, [(label, fields, None) for label, fields in prompts])


def _from_jsonl(args, path: Path) -> list:
    from framepack.jobs.batch import prompt_list

    entries = []
    for label, fields in prompt_list(_read_text(path), path.name, jsonl=True):
        for name in FILE_FIELDS:
            if isinstance(fields.get(name), str):
                file = (path.parent / fields[name]).expanduser()
                fields[name] = _read_file(file, f"{label}: {name}")
        entries.append((label, fields, None))
    _check_count(len(entries), str(path))
    return _build(args, entries)


def _build(args, entries: list) -> list:
    """(label, fields over the flags, file stem) -> BatchEntry; every problem of every entry at once."""
    from framepack.cli.generate import OUTPUT_FLAGS, REQUEST_FLAGS, _read_image, flag_errors
    from framepack.errors import FramePackError, InputError
    from framepack.jobs.batch import BatchEntry
    from framepack.request.model import build_request
    from framepack.request.output import build_output

    base = {name: getattr(args, name) for names in REQUEST_FLAGS.values() for name in names}
    base.update(image=_read_image(args.image, "--image"), end_image=_read_image(args.end_image, "--end-image"),
                loras=args.lora)
    output = {name: getattr(args, name) for name in OUTPUT_FLAGS if name != "filename"}
    if output.get("codec") not in (None, "none"):
        from framepack.io.codecs import resolve_codec

        try:
            output["codec"] = resolve_codec(output["codec"])  # h264, hevc, ...: the first encoder that works here
        except FramePackError as error:
            raise flag_errors(error.problems()) from None
    built, problems = [], []
    for label, fields, stem in entries:
        try:
            request = build_request(**{**base, **fields})
            options = build_output(save_video=args.codec != "none", filename=stem or "framepack", **output)
            built.append(BatchEntry(request, options, label))
        except FramePackError as error:
            problems.append(f"{label}: {flag_errors(error.problems())}")
    if problems:
        raise InputError("; ".join(problems))
    return built


def _check_count(count: int, what: str) -> None:
    from framepack.jobs.batch import check_size

    check_size(count, what)


def _read_text(path: Path) -> str:
    from framepack.errors import InputError
    from framepack.request.limits import MAX_PROMPT_LIST_BYTES

    if path.stat().st_size > MAX_PROMPT_LIST_BYTES:
        raise InputError(f"{path}: larger than {MAX_PROMPT_LIST_BYTES // (1024 * 1024)} MB; split it")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it as UTF-8 text: {getattr(error, 'strerror', None) or error}") from None


def _read_caption(path: Path) -> str:
    from framepack.errors import InputError
    from framepack.request.limits import MAX_CAPTION_BYTES

    data = _read_file(path, path.name)
    if len(data) > MAX_CAPTION_BYTES:
        raise InputError(f"{path.name}: a caption of {len(data)} bytes; the limit is {MAX_CAPTION_BYTES}")
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise InputError(f"{path.name}: not UTF-8 text") from None


def _read_file(path: Path, label: str) -> bytes:
    from framepack.errors import InputError

    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{label}: cannot read {path}: {error.strerror or error}") from None


# ------------------------------------------------------------------------------------------- run

def run_batch(args) -> int:
    from framepack.cli.generate import standalone_host
    from framepack.jobs.batch import batch_state, submit_batch
    from framepack.jobs.queue import JobQueue
    from framepack.jobs.store import JobStore
    from framepack.request.events import Status

    entries = read_entries(args)
    host = standalone_host(args, args.out)
    queue = JobQueue(host, store=JobStore.in_folder(host.video_dir()))
    interrupted = False
    try:
        batch_id, jobs = submit_batch(queue, entries, args.batch_name or Path(args.input).name)
        print(f"batch {batch_id}: {len(jobs)} job(s), outputs in {host.video_dir()}", file=sys.stderr, flush=True)
        try:
            for number, job in enumerate(jobs, start=1):
                while not job.wait(0.2):
                    pass
                target = job.record.video or job.record.frames or job.record.error or ""
                print(f"[{number}/{len(jobs)}] {job.status}: {job.record.source.get('item', job.id)} {target}",
                      file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            interrupted = True
        state = batch_state(queue, batch_id)
    finally:
        queue.shutdown()
    summary = {"id": batch_id, "name": state["name"], "counts": state["counts"],
               "jobs": [{"id": job.id, "item": job.record.source.get("item"), "status": job.status.value,
                         "video": job.record.video, "frames": job.record.frames, "error": job.record.error}
                        for job in state["jobs"]]}
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        counts = ", ".join(f"{count} {status}" for status, count in state["counts"].items() if count)
        print(f"batch {batch_id}: {counts}")
    if interrupted:
        left = state["counts"]["queued"]
        print(f"interrupted; {left} job(s) stay queued in {queue.store.path} (run batch or serve on this folder "
              f"to finish them)", file=sys.stderr)
        return 130
    return 0 if all(job.status == Status.COMPLETED for job in state["jobs"]) else 1
