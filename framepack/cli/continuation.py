"""`framepack_cli.py resume`, `reroll` and `extend`: continue what was made before.

    framepack_cli.py resume PATH [--job ID] [--discard]
    framepack_cli.py reroll PATH --from-section N [--seed S] [--section-prompts FILE] [--job ID]
    framepack_cli.py extend INPUT --duration S [--prompt TEXT] [--section-prompts FILE] [--end-image IMG]

PATH is a job's work folder (`<output>/.framepack-work/<job id>/`, which an interrupted run
prints) or an output folder: the job in it, or with several, the one `--job` names (without it,
the jobs are listed and the exit code is 2). The same model flags as the interrupted run
(`--model`, `--device`, ...) must be given: the checkpoint holds the settings, not the weights.

`resume` continues from the last checkpoint and writes the whole video again (its frames are
identical to a run that was never interrupted); `--discard` deletes the checkpoint instead.
`reroll` makes a new video that reuses the sections generated before section N. `extend`
continues a video file, raw frames or a job's result for S more seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from framepack.cli.generate import (OUTPUT_FLAGS, REQUEST_FLAGS, _add_field, _read_image, add_model_flags,
                                    add_report_flags, flag_errors, run_job_here, section_prompts, standalone_host)

EXTEND_FLAGS = ("prompt", "negative_prompt", "system_prompt", *REQUEST_FLAGS["sampling"])


# ---------------------------------------------------------------------------------------------- parsers

def add_resume(subparsers) -> None:
    parser = subparsers.add_parser(
        "resume", help="continue an interrupted job from its last checkpoint",
        description="Continue a job that was stopped (Ctrl-C), killed or crashed, from its last finished "
                    "section. PATH is the job's work folder or its output folder. The video and raw frames are "
                    "written again from the first frame, identical to a run that was never interrupted. "
                    "Give the same model flags as the interrupted run.")
    parser.add_argument("path", metavar="PATH", help="a job's work folder, or an output folder holding one")
    parser.add_argument("--job", default=None, metavar="ID", help="which job, when the folder holds several")
    parser.add_argument("--discard", action="store_true",
                        help="delete the job's checkpoint instead of resuming it (frees its disk space)")
    add_model_flags(parser, loras=False)
    add_report_flags(parser)
    parser.set_defaults(func=run_resume)


def add_reroll(subparsers) -> None:
    parser = subparsers.add_parser(
        "reroll", help="a new video from section N on, reusing the sections before it",
        description="Generate a job again from section N with a new seed and/or prompt schedule; the sections the "
                    "model generated before N are reused from the job's checkpoints, unchanged (F1: sections "
                    "1..N-1; original model: N+1..last, which it generates first). The result is a new file. The "
                    "job must be interrupted, or completed with --keep-checkpoints.")
    parser.add_argument("path", metavar="PATH", help="a job's work folder, or an output folder holding one")
    parser.add_argument("--from-section", dest="from_section", type=int, required=True, metavar="N",
                        help="first section to generate again (numbered as in the plan, from 1)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the new sections (default: a new random seed, unless --section-prompts)")
    parser.add_argument("--section-prompts", metavar="TEXT|@FILE",
                        help="a new prompt schedule ('[WHEN:] text' lines), as text or @FILE to read a file")
    parser.add_argument("--job", default=None, metavar="ID", help="which job, when the folder holds several")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep the new job's checkpoints too")
    add_model_flags(parser, loras=False)
    add_report_flags(parser)
    parser.set_defaults(func=run_reroll)


def add_extend(subparsers) -> None:
    from framepack.request.model import GenerationRequest
    from framepack.request.output import OutputOptions

    parser = subparsers.add_parser(
        "extend", help="continue a video for S more seconds",
        description="Continue a clip: a video file, raw frames (.safetensors) or a finished job's work folder. "
                    "F1 (the default) continues from the clip's last frames; with --end-image the original "
                    "model bridges the clip's last frame to that image. The output holds the clip's frames, then "
                    "the new ones, at the clip's fps and size (a clip of another size is fitted to the nearest "
                    "bucket, and the command says so).")
    parser.add_argument("input", metavar="INPUT", help="video file, raw frames (.safetensors) or a job's work folder")
    parser.add_argument("--duration", type=float, required=True, metavar="S", help="seconds to add")
    parser.add_argument("--section-prompts", metavar="TEXT|@FILE",
                        help="one '[WHEN:] text' line per section prompt, as text or @FILE to read a file")
    parser.add_argument("--end-image", help="image to arrive at (original model)")
    parser.add_argument("--variant", choices=["f1", "original"], default=None,
                        help="f1 continues the clip (default); original bridges to --end-image (its default then)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="bucket to fit a clip whose size the model does not generate (default 640)")
    group = parser.add_argument_group("sampling")
    for name in EXTEND_FLAGS:
        _add_field(group, GenerationRequest, name)
    add_model_flags(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the input's folder)")
    for name in OUTPUT_FLAGS:
        _add_field(output, OutputOptions, name)
    add_report_flags(parser)
    parser.set_defaults(func=run_extend)


# ---------------------------------------------------------------------------------------------- commands

def run_resume(args) -> int:
    from framepack.jobs.queue import JobQueue

    folder = find_job(args.path, args.job, interrupted_only=not args.discard)
    queue = JobQueue(standalone_host(args, folder.parent.parent), recover=False)
    job = queue.adopt(folder)
    if args.discard:
        queue.discard(job.id)
        queue.shutdown()
        _report(args, {"id": job.id, "discarded": str(folder)}, f"discarded the checkpoint of job {job.id}: {folder}")
        return 0
    if not args.json:
        print(f"resuming job {job.id} after {job.record.sections_done} of {job.record.sections} sections: "
              f"{job.record.plan}", file=sys.stderr)
    return run_job_here(args, queue, lambda queue, listener: queue.resume(job.id, listener=listener))


def run_reroll(args) -> int:
    from framepack.errors import InputError
    from framepack.jobs.queue import JobQueue

    folder = find_job(args.path, args.job, interrupted_only=False)
    queue = JobQueue(standalone_host(args, folder.parent.parent), recover=False)
    source = queue.adopt(folder)
    prompts = section_prompts(args.section_prompts) if args.section_prompts else None
    options = None
    if args.keep_checkpoints:
        from framepack.request.output import build_output_from

        options = build_output_from({**source.options.model_dump(), "keep_checkpoints": True})

    def submit(queue, listener):
        try:
            job = queue.reroll(source.id, args.from_section, seed=args.seed, section_prompts=prompts,
                               options=options, listener=listener)
        except InputError as error:
            raise flag_errors(error.problems()) from None
        if not args.json:
            print(f"re-rolling job {source.id} from section {args.from_section} (seed {job.record.seed}); "
                  f"reused sections: {job.record.source['reused_sections'] or 'none'}", file=sys.stderr)
        return job

    return run_job_here(args, queue, submit)


def run_extend(args) -> int:
    from framepack.errors import FramePackError, InputError
    from framepack.jobs.queue import JobQueue
    from framepack.io.codecs import resolve_codec
    from framepack.request.output import build_output

    clip, out = _clip_and_folder(Path(args.input).expanduser(), args.out)
    fields = {name: getattr(args, name) for name in EXTEND_FLAGS}
    fields.update(duration=args.duration, variant=args.variant, resolution=args.resolution, loras=args.lora,
                  end_image=_read_image(args.end_image, "--end-image"))
    if args.section_prompts:
        fields["section_prompts"] = section_prompts(args.section_prompts)
    fields = {name: value for name, value in fields.items() if value is not None}
    try:
        output = {name: getattr(args, name) for name in OUTPUT_FLAGS}
        if isinstance(output["codec"], str) and output["codec"] != "none":
            output["codec"] = resolve_codec(output["codec"])  # h264, hevc, ...: the first encoder that works here
        options = build_output(save_video=output["codec"] != "none", **output)
    except FramePackError as error:
        raise flag_errors(error.problems()) from None
    queue = JobQueue(standalone_host(args, out), recover=False)

    def submit(queue, listener):
        try:
            job = queue.extend(clip, fields, options, listener=listener)
        except InputError as error:
            raise flag_errors(error.problems()) from None
        if not args.json:
            fitted = job.record.source.get("fitted")
            print(f"extend {clip.name}: {job.record.plan}" + (f"\nnote: {fitted}" if fitted else ""), file=sys.stderr)
        return job

    return run_job_here(args, queue, submit)


# ---------------------------------------------------------------------------------------------- finding jobs

def find_job(path: str, job_id: str | None, interrupted_only: bool) -> Path:
    """The work folder PATH names: itself, or the (one, or `--job`) job with checkpoints in an output folder."""
    from framepack.errors import InputError
    from framepack.io.workdir import WORK_DIR_NAME, check_name
    from framepack.jobs.checkpoint import SPEC_NAME, JobCheckpoints

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"{path}: no such folder")
    if folder.parent.name == WORK_DIR_NAME or (folder / SPEC_NAME).exists():
        if job_id is not None and folder.name != job_id:
            raise InputError(f"--job {job_id}: {folder} is the work folder of job {folder.name}")
        return folder.resolve()
    found, damaged = jobs_in(folder)
    jobs = []
    for candidate in found:
        record = JobCheckpoints(candidate).read_record()
        status = "interrupted" if record is None or not record.status.finished else record.status.value
        if interrupted_only and status == "completed":
            continue
        jobs.append((candidate, status, record))
    if job_id is not None:
        check_name(job_id)
        chosen = [candidate for candidate, _, _ in jobs if candidate.name == job_id]
        if not chosen:
            raise InputError(f"--job {job_id}: no such job with a checkpoint in {folder}")
        return chosen[0].resolve()
    what = "interrupted job" if interrupted_only else "job with checkpoints"
    if not jobs:
        problems = "".join(f"\n  {candidate.name}: {problem}" for candidate, problem in damaged)
        raise InputError(f"{folder} holds no {what} (work folders are in {folder / WORK_DIR_NAME})"
                         + (f"; these cannot be used:{problems}" if problems else ""))
    if len(jobs) > 1:
        lines = [f"  {candidate.name}  {status:<11}  {_sections(record)}  {record.plan if record else ''}"
                 for candidate, status, record in jobs]
        raise InputError(f"{folder} holds {len(jobs)} of them; choose one with --job ID:\n" + "\n".join(lines))
    return jobs[0][0].resolve()


def jobs_in(output: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The work folders in `output` that can be resumed or re-rolled, and the damaged ones with why.

    Only looks: a command that reads checkpoints never deletes one (the sweep at a job's start
    tidies unresumable leftovers)."""
    from framepack.io.workdir import WORK_DIR_NAME, live_owner
    from framepack.jobs.checkpoint import CheckpointError, JobCheckpoints

    try:
        children = sorted((output / WORK_DIR_NAME).iterdir())
    except OSError:
        return [], []
    found, damaged = [], []
    for child in children:
        if child.is_symlink() or not child.is_dir() or child.name.startswith(".") or live_owner(child) is not None:
            continue
        try:
            if JobCheckpoints(child).resumable():
                found.append(child)
            else:
                damaged.append((child, "it holds no checkpoint"))
        except CheckpointError as error:
            damaged.append((child, str(error)))
    return found, damaged


def _sections(record) -> str:
    return f"{record.sections_done}/{record.sections} sections" if record else "?"


def _clip_and_folder(path: Path, out: str | None) -> tuple[Path, Path]:
    """The clip file of INPUT (a file, or a finished job's work folder: its raw frames, else its video)
    and the output folder (--out, else beside the input)."""
    from framepack.errors import InputError
    from framepack.jobs.checkpoint import JobCheckpoints

    if path.is_dir():
        record = JobCheckpoints(path).read_record()
        if record is None:
            raise InputError(f"{path} is a folder but not a job's work folder (no job.json)")
        clip = next((Path(record.outputs[kind]) for kind in ("frames", "video")
                     if record.outputs.get(kind) and Path(record.outputs[kind]).is_file()), None)
        if clip is None:
            raise InputError(f"job {record.id} has no saved video or raw frames to extend")
        return clip, _folder(out) if out else clip.parent
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path, _folder(out) if out else path.parent


def _folder(out: str) -> Path:
    """--out of extend: a folder (the file is named after the input's settings, never overwriting)."""
    from framepack.cli.args import names_a_folder
    from framepack.errors import InputError

    if not names_a_folder(out):
        raise InputError(f"--out: extend writes into a folder; {out!r} looks like a file name (end a folder "
                         f"name with '/')")
    return Path(out).expanduser()


def _report(args, data: dict, line: str) -> None:
    print(json.dumps(data, indent=2) if args.json else line)

