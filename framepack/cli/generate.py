"""`framepack_cli.py generate`: one video from the terminal, on the standalone host.

Flags map one to one onto `GenerationRequest` and `OutputOptions`, so the CLI validates
exactly like the tab and the API.

Ctrl-C: the first one stops the generation after the current step; with keep-incomplete on
(the default) the frames made so far are written as a playable video and raw frames, and the
exit code is 130. A second Ctrl-C quits at once: the job's work folder (its unfinished files)
is deleted and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

ENGINE_FLAGS = {  # flag dest -> request field, for flags whose value is passed through as is
    "prompt": "prompt", "negative_prompt": "negative_prompt", "system_prompt": "system_prompt",
    "variant": "variant", "duration": "duration", "fps": "fps", "interpolate": "interpolation",
    "resolution": "resolution", "steps": "steps", "seed": "seed", "latent_window": "latent_window_size",
    "sampler": "sampler", "shift": "shift", "cfg": "cfg", "distilled_cfg": "distilled_cfg",
    "cfg_rescale": "cfg_rescale", "cfg_zero_star": "cfg_zero_star", "teacache_threshold": "teacache_threshold",
    "start_strength": "start_strength", "end_strength": "end_strength", "vision_strength": "vision_strength",
    "blank_start": "blank_start",
}
OUTPUT_FLAGS = {
    "codec": "codec", "container": "container", "options": "codec_options", "crf": "crf", "pix_fmt": "pix_fmt",
    "save_frames": "save_frames", "save_images": "save_images", "image_format": "image_format",
    "interpolation_method": "interpolation_method", "name": "filename",
}


def add_generate(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate a video from an image (and optional end image) and prompts",
        description="Generate a FramePack video on this machine (standalone host). "
                    "Use --model tiny for the random-weight smoke-test model (its output is noise).")
    source = parser.add_argument_group("inputs")
    source.add_argument("--image", help="start image (omit with --blank-start for text-to-video)")
    source.add_argument("--end-image", help="last frame to aim at (original model only)")
    source.add_argument("--keyframe", action="append", default=[], metavar="WHEN=IMAGE",
                        help="extra image for a section or time, e.g. 3=key.png or 2.5s=key.png (repeatable)")
    source.add_argument("--blank-start", choices=["black", "white", "noise"],
                        help="text-to-video start frame when no --image is given")
    source.add_argument("--prompt", default="", help="main prompt")
    source.add_argument("--negative-prompt", default="", help="negative prompt (used when --cfg > 1)")
    source.add_argument("--section-prompts", metavar="FILE", help="file with one '[WHEN:] text' line per section prompt")
    source.add_argument("--system-prompt", default=argparse.SUPPRESS, help="Llama system prompt (default: optimized)")
    video = parser.add_argument_group("video")
    video.add_argument("--variant", choices=["original", "f1"], default="original",
                       help="original (inverted anti-drifting, supports an end image) or f1 (forward)")
    video.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    video.add_argument("--fps", type=float, default=30.0, help="frames per second of the video (default 30)")
    video.add_argument("--interpolate", type=int, default=0, metavar="K", help="interpolated frames between generated ones")
    video.add_argument("--resolution", type=int, default=640, help="bucket size, multiple of 16 (default 640)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=25)
    sampling.add_argument("--seed", type=int, default=-1, help="-1 picks a random seed (reported back)")
    sampling.add_argument("--latent-window", type=int, default=9, help="latent window size (default 9)")
    sampling.add_argument("--sampler", choices=["unipc", "euler"], default="unipc")
    sampling.add_argument("--shift", type=float, default=None, help="sigma shift (default: dynamic)")
    sampling.add_argument("--cfg", type=float, default=1.0, help="real CFG scale (1 = off)")
    sampling.add_argument("--distilled-cfg", type=float, default=10.0, help="distilled guidance (default 10)")
    sampling.add_argument("--cfg-rescale", type=float, default=0.0)
    sampling.add_argument("--cfg-zero-star", action="store_true", help="CFG-Zero* (optimized scale, zero-init)")
    sampling.add_argument("--no-teacache", action="store_true", help="disable TeaCache")
    sampling.add_argument("--teacache-threshold", type=float, default=0.15)
    sampling.add_argument("--start-strength", type=float, default=1.0)
    sampling.add_argument("--end-strength", type=float, default=1.0)
    sampling.add_argument("--vision-strength", type=float, default=0.5)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, help="'tiny', a local model folder, or omit for the hub models")
    model.add_argument("--cache-dir", default=None, help="Hugging Face cache folder")
    model.add_argument("--offline", action="store_true", help="never download")
    model.add_argument("--device", default=None, help="cuda, xpu, mps or cpu (default: best available)")
    model.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                       help="LoRA file (diffusers/HunyuanVideo formats), weight default 1.0; repeatable")
    model.add_argument("--quantization", default="none",
                       help="none, quanto-int8, quanto-fp8, quanto-int4, nncf-int8 or nncf-int4")
    model.add_argument("--offload", default="auto", help="auto, none, model, sequential or group")
    model.add_argument("--attention", default="default", help="default, native, flash, sage or xformers")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="outputs", help="output folder (default ./outputs)")
    output.add_argument("--name", default="framepack", help="file name stem")
    output.add_argument("--codec", default="libx264", help="video codec, 'none' for no video")
    output.add_argument("--container", default="mp4", choices=["mp4", "mkv", "mov", "webm", "avi"])
    output.add_argument("--options", default="", help="codec options key=value,...")
    output.add_argument("--crf", type=int, default=16)
    output.add_argument("--pix-fmt", default=None)
    output.add_argument("--save-frames", action="store_true", help="also save raw frames (.safetensors)")
    output.add_argument("--save-images", action="store_true", help="also save numbered frame images")
    output.add_argument("--image-format", choices=["png", "jpg", "webp"], default="png")
    output.add_argument("--interpolation-method", choices=["flow", "blend"], default="flow")
    output.add_argument("--no-keep-incomplete", action="store_true", help="write nothing if stopped")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")
    parser.set_defaults(func=run_generate)


def build_job(args):
    """argparse namespace -> (GenerationRequest, OutputOptions); all validation happens here."""
    from framepack.errors import FramePackError, InputErrors
    from framepack.request.model import build_request
    from framepack.request.output import build_output

    fields = {field: getattr(args, flag) for flag, field in ENGINE_FLAGS.items() if hasattr(args, flag)}
    fields.update(image=_read_image(args.image, "--image"), end_image=_read_image(args.end_image, "--end-image"),
                  teacache=not args.no_teacache, keyframes=[_keyframe(text) for text in args.keyframe],
                  loras=args.lora)
    if args.section_prompts:
        fields["section_prompts"] = _read_text(args.section_prompts, "--section-prompts")
    problems, request, options = [], None, None
    try:
        request = build_request(**fields)
    except FramePackError as error:
        problems.append(error)
    try:
        options = build_output(save_video=args.codec != "none", keep_incomplete=not args.no_keep_incomplete,
                               **{field: getattr(args, flag) for flag, field in OUTPUT_FLAGS.items()})
    except FramePackError as error:
        problems.append(error)
    if problems:
        raise InputErrors(problems)
    return request, options


def runtime_settings(args) -> dict:
    """--quantization/--offload/--attention as host settings, checked before any model loads."""
    from framepack.errors import InputError
    from framepack.models.offload import ATTENTION_BACKENDS, OFFLOAD_MODES
    from framepack.models.quantize import QUANT_METHODS

    for flag, value, choices in (("--quantization", args.quantization, QUANT_METHODS),
                                 ("--offload", args.offload, OFFLOAD_MODES),
                                 ("--attention", args.attention, ("default", *ATTENTION_BACKENDS))):
        if value not in choices:
            raise InputError(f"{flag} {value!r}: choose one of {', '.join(choices)}")
    return {"framepack_quantization": args.quantization, "framepack_offload": args.offload,
            "framepack_attention": args.attention}


def _keyframe(text: str) -> dict:
    from framepack.errors import InputError

    when, separator, image = text.partition("=")
    if not separator or not when.strip() or not image.strip():
        raise InputError(f"--keyframe {text!r}: use WHEN=IMAGE, e.g. 3=key.png or 2.5s=key.png")
    return {"when": when.strip(), "image": _read_image(image.strip(), "--keyframe")}


def _read_text(path: str, flag: str) -> str:
    from framepack.errors import InputError

    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{flag}: cannot read {path}: {error.strerror or error}") from None


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
    from framepack.host.standalone import StandaloneHost
    from framepack.jobs.checks import check_job

    request, options = build_job(args)
    check_job(request, options)
    request = request.resolve_seed()
    host = StandaloneHost(output_dir=args.out, model=args.model, cache_dir=args.cache_dir,
                          offline=True if args.offline else None, device=args.device,
                          settings=runtime_settings(args))
    plan = request.plan()
    if not args.json:
        print(f"plan: {plan.summary()}", file=sys.stderr)
    pipe = host.pipeline(request.variant)
    result = _run_with_progress(args, pipe, request, options, Path(args.out), plan)
    summary = {
        "status": result.done.status, "video": result.video, "frames": result.frames, "images": result.images,
        "frame_count": result.done.frames, "seed": result.done.seed, "seconds": round(result.done.seconds, 2),
        "plan": plan.summary(), "timings": {k: round(v, 3) for k, v in result.done.timings.items()},
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for kind in ("video", "frames", "images"):
            if summary[kind]:
                print(f"{kind}: {summary[kind]}")
        print(f"{result.done.status}: {result.done.frames} frames, seed {result.done.seed}, {result.done.seconds:.1f} s")
    return 0 if result.done.status == "completed" else 130


def _run_with_progress(args, pipe, request, options, folder: Path, plan):
    """Run on a worker thread so Ctrl-C can ask for a clean stop instead of killing the writers.

    The main thread only waits on an Event (an interrupted Thread.join can mark a live thread
    as finished in Python 3.11) while our SIGINT handler turns Ctrl-C into a stop request.
    """
    from tqdm import tqdm

    from framepack.engine.control import GenerationControl
    from framepack.request.events import Progress, SectionDone
    from framepack.io.workdir import WorkFolder, remove_abandoned
    from framepack.jobs.output import run_job

    control = GenerationControl()
    total = plan.num_sections * request.steps
    quiet = getattr(args, "quiet", False)
    bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True,
               disable=True if quiet or args.json else None)
    lines = not quiet and bar.disable  # no bar on a pipe or with --json: one stderr line per finished section
    outcome: dict = {}
    finished = threading.Event()

    def on_event(event) -> None:
        if isinstance(event, Progress):
            bar.n = event.position * event.steps + event.step
            bar.set_description(f"section {event.position + 1}/{event.section_count}")
            bar.refresh()
        elif isinstance(event, SectionDone) and lines:
            print(f"section {event.position + 1}/{event.section_count} done", file=sys.stderr, flush=True)

    folder.mkdir(parents=True, exist_ok=True)
    remove_abandoned(folder)
    work = WorkFolder(folder)

    def work_thread() -> None:
        try:
            outcome["result"] = run_job(pipe, request, options, folder, control=control, on_event=on_event,
                                        work=work)
        except BaseException as error:  # re-raised on the main thread
            outcome["error"] = error
        finally:
            finished.set()

    interrupts = _Interrupts(control, work)
    worker = threading.Thread(target=work_thread, name="framepack-cli", daemon=True)
    with interrupts:
        worker.start()
        while not finished.wait(0.2):
            pass
    bar.close()
    work.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class _Interrupts:
    """SIGINT while generating: the first asks for a stop, the second deletes the work and quits."""

    def __init__(self, control, work):
        self.control, self.work = control, work
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
            self.control.stop()
            return
        self.work.close()  # the spill and partial files; nothing was published yet
        print("interrupted again: quit without saving", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)  # the worker is inside torch: only the process can end it, and at once
