"""`framepack_cli.py generate`: one video from the terminal, on the standalone host.

The flags are built from the request's fields (`GenerationRequest`, `OutputOptions`): their
type, default, choices and help come from the field, so the CLI accepts exactly what the tab and
the API accept. An error names the flag its field belongs to. The job runs through the same
`JobQueue` and `JobRunner` as every other face (the host's GPU lock, `prepare_request`, the
submission checks).

Ctrl-C: the first one stops the generation after the current step; with keep-incomplete on
(the default) the frames made so far are written as a playable video and raw frames, and the
exit code is 130; the job's checkpoint stays in its work folder (`framepack_cli.py resume` continues
it). A second Ctrl-C quits at once: the unfinished output files are deleted and nothing is
written; the checkpoint of the sections already finished is kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import typing
from pathlib import Path

REQUEST_FLAGS = {  # argument group -> request fields given as flags, in the order --help shows them
    "inputs": ("blank_start", "prompt", "negative_prompt", "system_prompt"),
    "video": ("variant", "duration", "fps", "interpolation", "resolution", "tiny_vae_decode"),
    "sampling": ("steps", "seed", "latent_window_size", "sampler", "shift", "cfg", "distilled_cfg", "cfg_rescale",
                 "cfg_zero_star", "teacache", "teacache_threshold", "cache", "magcache_threshold", "magcache_max_skips",
                 "magcache_retention", "noise", "start_strength", "end_strength", "vision_strength",
                 "max_prompt_tokens"),
    "speed": ("fp32_head", "compile"),
}
OUTPUT_FLAGS = ("filename", "codec", "container", "codec_options", "crf", "pix_fmt", "save_frames", "save_images",
                "image_format", "interpolation_method", "interpolation_model", "upscale", "upscaler", "keep_incomplete",
                "keep_checkpoints")
FLAG_NAMES = {  # fields whose flag is not their own name (kept from earlier versions of the CLI)
    "interpolation": "--interpolate", "latent_window_size": "--latent-window", "codec_options": "--options",
    "filename": "--name", "keyframes": "--keyframe", "loras": "--lora", "interpolation_model": "--rife-model",
}
VIDEO_SUFFIXES = tuple(f".{container}" for container in ("mp4", "mkv", "mov", "webm", "avi"))
"""What `--out FILE` may end with (the request's containers); anything else without an extension is a folder."""


def flag_for(field: str, default: object = None) -> str:
    """The flag of a request or output field; a boolean that defaults to on is turned off by --no-NAME."""
    name = FLAG_NAMES.get(field) or "--" + field.replace("_", "-")
    return "--no-" + name[2:] if default is True else name


def add_generate(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate a video from an image (and optional end image) and prompts",
        description="Generate a FramePack video on this machine (standalone host). "
                    "Use --model tiny for the random-weight smoke-test model (its output is noise). "
                    "An interrupted run (Ctrl-C, a crash, a kill) can be continued with `resume`.")
    add_job_arguments(parser)
    add_report_flags(parser)
    parser.set_defaults(func=run_generate)


def add_job_arguments(parser) -> None:
    """The arguments of one job, shared by generate and plan."""
    from framepack.request.model import GenerationRequest
    from framepack.request.output import OutputOptions

    source = parser.add_argument_group("inputs")
    source.add_argument("--image", help="start image file (omit with --blank-start for text-to-video)")
    source.add_argument("--end-image", help="last frame to aim at (original model only)")
    source.add_argument("--keyframe", action="append", default=[], metavar="WHEN=IMAGE",
                        help="extra image for a section or time, e.g. 3=key.png or 2.5s=key.png (repeatable)")
    source.add_argument("--section-prompts", metavar="TEXT|@FILE",
                        help="one '[WHEN:] text' line per section prompt, as text or @FILE to read a file")
    source.add_argument("--from", dest="from_file", metavar="VIDEO",
                        help="reuse every setting embedded in a video (or raw frames) this tool made; flags given "
                             "here win. Images are not embedded: give --image again. LoRAs are never taken from "
                             "a file")
    groups = {"inputs": source}
    for title, names in REQUEST_FLAGS.items():
        group = groups.get(title) or parser.add_argument_group(title)
        for name in names:
            _add_field(group, GenerationRequest, name)
    add_model_flags(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="outputs", metavar="FILE|DIR",
                        help="a video file (clip.mp4: exactly that name, its extension sets the container; raw "
                             "frames and images get the same name beside it) or a folder (an existing one, a name "
                             "ending in '/' or without an extension: fresh names NAME-SEED.mp4 inside it); "
                             "missing folders are created")
    output.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file (without it an existing file is refused)")
    for name in OUTPUT_FLAGS:
        _add_field(output, OutputOptions, name)
def add_model_flags(parser, loras: bool = True) -> None:
    """Which model runs and where: the same flags for every command that generates."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, help="'tiny', a local model folder, or omit for the hub models")
    model.add_argument("--cache-dir", default=None, help="Hugging Face cache folder")
    model.add_argument("--offline", action="store_true", help="never download")
    model.add_argument("--device", default=None, help="cuda, xpu, mps or cpu (default: best available)")
    if loras:
        model.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT[@WHEN],...]",
                           help="LoRA file (musubi/kohya, ComfyUI, diffusers/PEFT, HunyuanVideo names), weight "
                                "default 1.0; WEIGHT@WHEN weights sections, e.g. style.safetensors:0.8@1-3; repeatable")
    model.add_argument("--quantization", default="none",
                       help="none, quanto-int8, quanto-fp8, quanto-int4, nncf-int8 or nncf-int4")
    model.add_argument("--offload", default="auto", help="auto, none, model, sequential or group")
    model.add_argument("--attention", default="default", help="default, native, flash, sage or xformers")
    model.add_argument("--vae-tiling", default="auto",
                       help="auto (tile the VAE decode only when the plan says it would not fit), on or off")


def add_report_flags(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")


def standalone_host(args, out):
    """The standalone host for a command's model flags, writing to `out`."""
    from framepack.host.standalone import StandaloneHost

    return StandaloneHost(output_dir=out, videos=out, model=args.model, cache_dir=args.cache_dir,
                          offline=True if args.offline else None, device=args.device,
                          settings=runtime_settings(args))


def _add_field(group, model, name: str) -> None:
    """One flag from one model field: its type, default, choices and help."""
    info = model.model_fields[name]
    kind, choices = _flag_type(info.annotation)
    default = info.get_default(call_default_factory=True)
    text = info.description or name.replace("_", " ")
    if kind is bool:
        group.add_argument(flag_for(name, default), dest=name, action="store_false" if default else "store_true",
                           help=f"off: {text}" if default else text)
        return
    flag = flag_for(name)
    metavar = None if choices else flag[2:].upper().replace("-", "_")
    group.add_argument(flag, dest=name, type=kind, choices=choices, default=default, metavar=metavar, help=text)


def _flag_type(annotation) -> tuple[type, list | None]:
    """(argparse type, choices) of a field annotation: Literal -> its values, Optional[X] -> X."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0]), list(args)
    if args:  # Optional[X] / Union
        return _flag_type(args[0])
    return annotation, None


# ---------------------------------------------------------------------------------------------- the job

def build_job(args):
    """argparse namespace -> (GenerationRequest, OutputOptions); an error names the flag of each problem."""
    from framepack.errors import FramePackError
    from framepack.request.model import build_request
    from framepack.request.output import build_output

    from framepack.io.codecs import resolve_codec

    problems, request, options = [], None, None
    given = getattr(args, "given", set())
    request_names = [name for names in REQUEST_FLAGS.values() for name in names] + ["section_prompts"]
    embedded = _embedded(args, request_names)
    reused = {name for name in (*embedded.request, *embedded.output) if name not in given} if embedded else set()
    try:
        fields = {name: getattr(args, name) for names in REQUEST_FLAGS.values() for name in names}
        if embedded:
            fields.update({name: value for name, value in embedded.request.items() if name in reused})
        fields.update(image=_read_image(args.image, "--image"), end_image=_read_image(args.end_image, "--end-image"),
                      keyframes=[_keyframe(text) for text in args.keyframe], loras=args.lora)
        if args.section_prompts:
            fields["section_prompts"] = section_prompts(args.section_prompts)
        request = build_request(**fields)
    except FramePackError as error:
        problems.extend(error.problems())
    try:
        output = {name: getattr(args, name) for name in OUTPUT_FLAGS}
        if embedded:
            output.update({name: value for name, value in embedded.output.items() if name in reused})
        output.update(_container_of_out(args, output["container"], "container" in given))
        if isinstance(output["codec"], str) and output["codec"] != "none":
            output["codec"] = resolve_codec(output["codec"])
        options = build_output(save_video=output["codec"] != "none", **output)
    except FramePackError as error:
        problems.extend(error.problems())
    if problems:
        raise flag_errors(problems, reused, embedded.source if embedded else None)
    return request, options


def _embedded(args, request_names):
    """The settings of `--from FILE` (None without it); the start image must be given again."""
    from framepack.cli.reuse import missing_images, read_embedded
    from framepack.errors import InputError

    if not getattr(args, "from_file", None):
        return None
    embedded = read_embedded(args.from_file, request_names, OUTPUT_FLAGS)
    errors, notes = missing_images(embedded, args.image, args.end_image, args.keyframe)
    if errors:
        raise InputError("; ".join(errors))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return embedded


def _container_of_out(args, container: str, explicit: bool) -> dict:
    """`--out clip.mkv` sets the container; a different explicit --container is a contradiction."""
    from framepack.cli.args import names_a_folder
    from framepack.errors import InputError

    if names_a_folder(args.out) or Path(args.out).suffix.lower() not in VIDEO_SUFFIXES:
        return {}
    wanted = Path(args.out).suffix.lower()[1:]
    if explicit and container != wanted:
        raise InputError(f"--container {container} contradicts --out {args.out} (a .{wanted} file)")
    return {"container": wanted}


def section_prompts(value: str) -> str:
    """--section-prompts: the schedule itself, or @FILE (read up to the schedule's size limit)."""
    from framepack.errors import InputError
    from framepack.request.limits import MAX_SCHEDULE_CHARS

    if not value.startswith("@"):
        if "\n" not in value and ":" not in value and Path(value).is_file():
            raise InputError(f"--section-prompts: {value!r} is a file; write @{value} to read it")
        return value
    path = Path(value[1:]).expanduser()
    limit = MAX_SCHEDULE_CHARS * 4  # UTF-8 bytes of the longest schedule the request accepts
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise InputError(f"--section-prompts: cannot read {path}: {error.strerror or error}") from None
    if len(data) > limit:
        raise InputError(f"--section-prompts: {path} is larger than {limit} bytes; a schedule is at most "
                         f"{MAX_SCHEDULE_CHARS} characters")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"--section-prompts: {path} is not UTF-8 text") from None


def flag_errors(problems, reused=frozenset(), source: str | None = None):
    """One `InputError` whose message names the flag of each problem (from its field); a value that
    came from `--from FILE` is named as that file's embedded setting."""
    from framepack.errors import InputError

    return InputError("; ".join(_with_flag(problem, reused, source) for problem in problems))


def _with_flag(problem, reused=frozenset(), source: str | None = None) -> str:
    field = list(problem.field or ())
    if field[:1] == ["output"]:
        field = field[1:]
    if not field:
        return problem.message
    if str(field[0]) in reused and source is not None:
        return f"--from {source}: embedded setting {field[0]!r}: {problem.message}"
    flag = flag_for(str(field[0]))
    if len(field) > 1 and isinstance(field[1], int):
        flag += f" #{field[1] + 1}"
    return f"{flag}: {problem.message}"


def runtime_settings(args) -> dict:
    """--quantization/--offload/--attention as host settings, checked before any model loads."""
    from framepack.errors import InputError
    from framepack.models.offload import ATTENTION_BACKENDS, OFFLOAD_MODES
    from framepack.models.quantize import QUANT_METHODS

    from framepack.models.resource_choice import TILING_CHOICES

    for flag, value, choices in (("--quantization", args.quantization, QUANT_METHODS),
                                 ("--offload", args.offload, OFFLOAD_MODES),
                                 ("--attention", args.attention, ("default", *ATTENTION_BACKENDS)),
                                 ("--vae-tiling", args.vae_tiling, TILING_CHOICES)):
        if value not in choices:
            raise InputError(f"{flag} {value!r}: choose one of {', '.join(choices)}")
    return {"framepack_quantization": args.quantization, "framepack_offload": args.offload,
            "framepack_attention": args.attention, "framepack_vae_tiling": args.vae_tiling}


def _keyframe(text: str) -> dict:
    from framepack.errors import InputError

    when, separator, image = text.partition("=")
    if not separator or not when.strip() or not image.strip():
        raise InputError(f"--keyframe {text!r}: use WHEN=IMAGE, e.g. 3=key.png or 2.5s=key.png")
    return {"when": when.strip(), "image": _read_image(image.strip(), "--keyframe")}


def _read_image(path: str | None, flag: str) -> bytes | None:
    """The CLI is the one face that reads image files: its user names files on their own machine."""
    from framepack.errors import InputError

    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"{flag}: file not found: {file}")
    try:
        return file.read_bytes()
    except OSError as error:
        raise InputError(f"{flag}: cannot read {file}: {error.strerror or error}") from None


def run_generate(args) -> int:
    from framepack.errors import InputError
    from framepack.jobs.queue import JobQueue

    from framepack.cli.args import output_target

    request, options = build_job(args)
    target = output_target(args.out, VIDEO_SUFFIXES, args.overwrite)
    if target.name is not None and options.save_frames and not args.overwrite:
        frames = target.folder / f"{target.stem}.safetensors"  # the raw frames go beside the video, same name
        if frames.exists():
            raise InputError(f"--out: {str(frames)!r} already exists; pass --overwrite to replace it")
    target.prepare()
    host = standalone_host(args, target.folder)
    if not args.json:
        print(f"plan: {plan_line(request)}", file=sys.stderr)

    def submit(queue, listener):
        try:
            return queue.submit(request, options, listener=listener, name=target.stem, overwrite=args.overwrite)
        except InputError as error:
            raise flag_errors(error.problems()) from None

    return run_job_here(args, JobQueue(host, recover=False), submit)


def run_job_here(args, queue, submit) -> int:
    """Submit one job to `queue`, show its progress, handle Ctrl-C, print its outcome; the exit code.

    `submit(queue, listener)` returns the job. Exit 0 when it completed, 130 when it was stopped
    (its checkpoint kept: `resume` continues it); a failure raises its error.
    """
    from framepack.request.events import Status

    jobs_log = logging.getLogger("framepack.jobs")
    level = jobs_log.level
    if not getattr(args, "debug", False):  # this command reports the job's outcome itself
        jobs_log.setLevel(logging.CRITICAL)
    progress = _Progress(args)
    try:
        job = submit(queue, progress)
        progress.expect(job)
        with _Interrupts(queue, job):
            while not job.wait(0.2):  # an Event wait, not Thread.join: Ctrl-C reaches our handler at once
                pass
    finally:
        progress.close()
        queue.shutdown()
        jobs_log.setLevel(level)
    if job.status == Status.FAILED:
        raise job.exception
    record = job.record
    summary = {
        "id": record.id, "status": record.status.value, "video": record.video, "frames": record.frames,
        "images": record.images, "frame_count": record.frame_count, "seed": record.seed,
        "seconds": round(progress.seconds, 2), "plan": record.plan, "kind": record.kind, "source": record.source,
        "resumable": record.resumable, "checkpoint": record.checkpoint,
        "timings": {k: round(v, 3) for k, v in record.timings.items()},
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for kind in ("video", "frames", "images"):
            if summary[kind]:
                print(f"{kind}: {summary[kind]}")
        print(f"{record.status}: {record.frame_count} frames, seed {record.seed}, {progress.seconds:.1f} s")
        if record.resumable:
            print(f"resume it with: framepack_cli.py resume {record.checkpoint}")
    return 0 if record.status == Status.COMPLETED else 130


def plan_line(request) -> str:
    """The plan's summary, plus what was asked when the video comes out shorter or longer."""
    plan = request.plan()
    line = plan.summary()
    if abs(plan.duration - request.duration) >= 0.005:
        line += (f"; {plan.duration:.2f} s, asked {request.duration:g} s: "
                 f"a video is a whole number of sections")
    return line


class _Progress:
    """The job's listener: a progress bar on a terminal, else one stderr line per finished section."""

    def __init__(self, args):
        from tqdm import tqdm

        quiet = getattr(args, "quiet", False)
        self.bar = tqdm(total=None, unit="step", file=sys.stderr, dynamic_ncols=True,
                        disable=True if quiet or args.json else None)
        self.lines = not quiet and self.bar.disable
        self.seconds = 0.0

    def expect(self, job) -> None:
        """The job's steps: sections x steps per section."""
        if job.request is not None:
            self.bar.total = job.record.sections * job.request.steps
            self.bar.refresh()

    def __call__(self, event) -> None:
        from framepack.request.events import Done, Progress, SectionDone

        if isinstance(event, Progress):
            self.bar.n = event.position * event.steps + event.step
            self.bar.set_description(f"section {event.position + 1}/{event.section_count}")
            self.bar.refresh()
        elif isinstance(event, SectionDone) and self.lines:
            print(f"section {event.position + 1}/{event.section_count} done", file=sys.stderr, flush=True)
        elif isinstance(event, Done):
            self.seconds = event.seconds

    def close(self) -> None:
        self.bar.close()


class _Interrupts:
    """SIGINT while generating: the first asks for a stop, the second deletes the work and quits."""

    def __init__(self, queue, job):
        self.queue, self.job = queue, job
        self.count = 0
        self.previous = None

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            print("\nstopping after the current step (Ctrl-C again to quit at once, saving nothing)...",
                  file=sys.stderr, flush=True)
            self.queue.cancel(self.job.id)
            return
        work = self.job.work
        published = work is not None and work.released  # the stop's write finished before this Ctrl-C
        kept = work is not None and (work.path / "sections").is_dir()
        if kept and not published:
            work.remove_partials()  # the partial outputs go; the checkpoint stays, to resume from
        elif work is not None and not published:
            work.close()  # the spill and partial files; nothing was published yet
        outcome = "the outputs were already saved" if published else "quit without saving"
        print(f"interrupted again: {outcome}" + (f"; resume with: framepack_cli.py resume {work.path}"
                                                 if kept else ""), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)  # the worker is inside torch: only the process can end it, and at once
