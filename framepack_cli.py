#!/usr/bin/env python
"""FramePack CLI: generate videos, serve the standalone app, and inspect, re-encode, export and
interpolate saved frames.

    python framepack_cli.py generate --image in.png --prompt "a boat sails" --duration 5 --out outputs
    python framepack_cli.py resume outputs                 # continue an interrupted job
    python framepack_cli.py reroll outputs --from-section 3 --seed 7
    python framepack_cli.py extend clip.mp4 --duration 4 --prompt "the boat reaches the shore"
    python framepack_cli.py batch photos/ --prompt "gentle motion" --out outputs   # photos/cat.png + cat.txt
    python framepack_cli.py serve [--model tiny] [--port 7870] [--workers 2 | --cluster ray]

    python framepack_cli.py info clip.safetensors [--json]
    python framepack_cli.py encode clip.safetensors --out clip.mp4 [--codec libx264 --crf 16]
    python framepack_cli.py export clip.safetensors --out frames/ [--format png]
    python framepack_cli.py interpolate clip.safetensors --factor 1 --out clip_x2.safetensors

Inputs are raw frame files (`.safetensors`, including those the original extension wrote) or
videos. Exit codes: 0 ok, 2 bad input or usage (one clear line on stderr), 1 unexpected failure
(short message; the traceback only with --debug), 130 interrupted.

Heavy libraries (PyAV, OpenCV, numpy) are imported inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_BATCH = 16


# ------------------------------------------------------------------------------ helpers

def _common(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes (also accepted after the subcommand name)."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of unexpected errors")


def _progress(args, total: int | None, desc: str):
    """A tqdm bar on stderr; hidden with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True,
                disable=True if args.quiet else None, leave=False)


def _emit(args, result: dict, lines: list[str]) -> None:
    """Print a command's result: JSON with --json, else human lines."""
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        print("\n".join(lines))


def _whole_number(minimum: int):
    """An argparse type: a whole number of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int, _count = _whole_number(1), _whole_number(0)


def _output_file(out: str, source: Path, suffixes, overwrite: bool) -> Path:
    """Resolve --out by the shared rule (framepack.cli.args): a file, or a fresh name in a folder."""
    from framepack.cli.args import output_target
    return output_target(out, suffixes, overwrite).path(source.stem, suffixes[0])


def _work_folder(out_folder: Path):
    """The work folder for unfinished output in `out_folder` (unresumable ones of killed runs go first)."""
    from framepack.io.workdir import WorkFolder
    from framepack.jobs.checkpoint import sweep_output_folder
    sweep_output_folder(out_folder)
    return WorkFolder(out_folder)


def _require_frames(source, path: str, action: str) -> None:
    """Refuse an input without frames before any output (or output folder) is created."""
    from framepack.errors import InputError
    if len(source) == 0:
        raise InputError(f"{path!r} holds no frames; there is nothing to {action}")


def _frames_with_interpolation(source, k: int, method: str, batch: int, rife_model: str | None = None,
                               upscaler=None):
    """Batches from the source (upscaled first when asked), k interpolated frames between each pair."""
    batches = source.iter_batches(batch)
    if upscaler is not None:
        batches = (upscaler(batch) for batch in batches)
    if not k:
        return batches
    from framepack.io.interpolate import interpolate, load_rife
    model = load_rife(rife_model) if method == "rife" else None
    return interpolate(batches, k, method, model=model)


def _add_media_flags(parser, upscale: bool) -> None:
    """--method (flow, blend, rife) and --rife-model; --upscale and --upscaler where frames are encoded."""
    parser.add_argument("--method", default="flow", choices=["flow", "blend", "rife"],
                        help="interpolation method (default: optical flow; rife needs --rife-model)")
    parser.add_argument("--rife-model", default=None, metavar="FILE",
                        help="RIFE 4.2x IFNet weights (.safetensors) for --method rife")
    if upscale:
        parser.add_argument("--upscale", type=float, default=1.0, metavar="FACTOR",
                            help="scale frames by FACTOR (1-4) before encoding (default 1: off)")
        parser.add_argument("--upscaler", default="lanczos", metavar="lanczos|MODEL_FILE",
                            help="lanczos, or an ESRGAN-family .safetensors model (loaded with spandrel)")


def _media_checks(args) -> None:
    from framepack.errors import InputError
    if args.method == "rife" and not args.rife_model:
        raise InputError("--method rife needs --rife-model FILE (RIFE weights, .safetensors)")
    if not 1.0 <= getattr(args, "upscale", 1.0) <= 4.0:
        raise InputError(f"--upscale must be between 1 and 4, got {args.upscale:g}")


def _upscaler(args):
    if getattr(args, "upscale", 1.0) == 1.0:
        return None
    from framepack.io.upscale import make_upscaler
    return make_upscaler(args.upscaler, args.upscale)


def _length(item) -> int:
    return item.shape[0] if getattr(item, "ndim", 3) == 4 else 1


# ------------------------------------------------------------------------------ info

def add_info(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="show frames, size, fps, codec and embedded settings of a file",
        description="Describe a raw frames file (.safetensors) or a video: frame count, size, "
                    "fps, codec, pixel format and the generation settings embedded in it.")
    parser.add_argument("file", help="raw frames (.safetensors) or video file")
    _common(parser)
    parser.set_defaults(func=run_info)


def run_info(args) -> int:
    from framepack.io.reader import open_frames
    with open_frames(args.file) as source:
        info = source.describe()
    if _is_still_image(info):
        return _info_image(args, info)
    lines = [f"file:      {info['path']}"]
    if info["kind"] == "raw":
        lines.append("kind:      raw frames (safetensors)")
    else:
        lines.append(f"kind:      video ({info['container']}, {info['codec']}, {info['pix_fmt']})")
    lines += [f"frames:    {info['frames']}",
              f"size:      {info['width']}x{info['height']}",
              f"fps:       {info['fps']}",
              f"duration:  {info['duration']:.3f} s"]
    if info["kind"] == "raw":
        lines.append(f"generated: {info['generated_fps']} fps, "
                     f"{info['interpolation']} interpolated frame(s) per gap")
    settings = info.get("settings") or {}
    lines.append("settings:  " + (json.dumps(settings, indent=2, ensure_ascii=False)
                                  if settings else "(none embedded)"))
    if info["frames"] == 0:
        info["problem"] = "the file holds no frames"
        lines.insert(3, "           (the file holds no frames: nothing to encode, export or interpolate)")
    _emit(args, _numbers(info), lines)
    if info["frames"] == 0:
        print(f"error: {args.file!r} holds no frames", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _is_still_image(info: dict) -> bool:
    """FFmpeg opens a PNG/JPEG/WebP as a one-frame "video" (image2 or an *_pipe demuxer)."""
    container = str(info.get("container") or "")
    return info["kind"] == "video" and info["frames"] <= 1 and (container == "image2" or container.endswith("_pipe"))


def _info_image(args, info: dict) -> int:
    image = {"path": info["path"], "kind": "image", "format": info["codec"], "pix_fmt": info["pix_fmt"],
             "width": info["width"], "height": info["height"], "settings": info.get("settings") or {}}
    _emit(args, image, [f"file:      {image['path']}",
                        f"kind:      image ({image['format']}, {image['pix_fmt']})",
                        f"size:      {image['width']}x{image['height']}"])
    return EXIT_OK


def _numbers(info: dict) -> dict:
    """Frame rates as JSON numbers (30, 29.97); a rate that is not whole keeps its exact fraction too."""
    from fractions import Fraction
    result = dict(info)
    for key in ("fps", "generated_fps"):
        if result.get(key) in (None, ""):
            continue
        rate = Fraction(str(result[key]))
        result[key] = int(rate) if rate.denominator == 1 else round(float(rate), 6)
        if rate.denominator != 1:
            result[f"{key}_fraction"] = f"{rate.numerator}/{rate.denominator}"
    return result


# ------------------------------------------------------------------------------ export

def add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write every frame as a numbered image",
        description="Export frames as frame_000001.png ... into a new folder inside --out "
                    "(named after the input; never mixed with an earlier export).")
    parser.add_argument("file", help="raw frames (.safetensors) or video file")
    parser.add_argument("--out", required=True, metavar="DIR", help="parent folder for the images")
    parser.add_argument("--format", default="png", choices=["png", "jpg", "webp"],
                        help="image format (default: png, lossless)")
    parser.add_argument("--quality", type=int, default=95, help="jpg/webp quality 1-100")
    parser.add_argument("--batch", type=_positive_int, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    _common(parser)
    parser.set_defaults(func=run_export)


def run_export(args) -> int:
    from framepack.io.images import FrameImageWriter
    from framepack.io.reader import open_frames
    with open_frames(args.file) as source:
        _require_frames(source, args.file, "export")
        with _work_folder(Path(args.out)) as work:
            images = FrameImageWriter(args.out, f"{Path(args.file).stem}_frames", args.format,
                                      args.quality, work=work)
            with images, _progress(args, len(source), "export") as bar:
                for batch in source.iter_batches(args.batch):
                    images.write(batch)
                    bar.update(len(batch))
    result = {"folder": str(images.folder), "frames": images.frames_written,
              "format": args.format}
    _emit(args, result, [f"exported {images.frames_written} frames to {images.folder}"])
    return EXIT_OK


# ------------------------------------------------------------------------------ encode

def add_encode(subparsers) -> None:
    parser = subparsers.add_parser(
        "encode", help="encode frames into a video file",
        description="Encode raw frames (or re-encode a video). The container comes from the "
                    "--out extension (.mp4 .mkv .mov .webm .avi); fps defaults to the file's "
                    "own, times (K+1) with --interpolate K so the duration stays the same.")
    parser.add_argument("file", help="raw frames (.safetensors) or video file")
    parser.add_argument("--out", required=True, metavar="VIDEO",
                        help="output video file, or a folder to get a fresh name in it")
    parser.add_argument("--codec", default=None,
                        help="video encoder, or a format name h264 / hevc / av1 / vp9 (the first of its "
                             "encoders that works here); default libx264; `--codec help` lists them")
    parser.add_argument("--options", default=None, metavar="K=V,...",
                        help="encoder options, e.g. 'preset=slow,tune=film' (also 'crf:16')")
    parser.add_argument("--fps", default=None, help="output frame rate, e.g. 30 or 30000/1001")
    parser.add_argument("--crf", type=float, default=None,
                        help="constant quality (lower is better; 16-23 typical)")
    parser.add_argument("--pix-fmt", default=None, dest="pix_fmt",
                        help="pixel format (default: yuv420p where the codec allows)")
    parser.add_argument("--interpolate", type=_count, default=0, metavar="K",
                        help="insert K interpolated frames between each pair")
    _add_media_flags(parser, upscale=True)
    parser.add_argument("--backend", default="av", choices=["av", "cv2"],
                        help="encoder library: av (PyAV, default) or cv2 (OpenCV, mp4v only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--batch", type=_positive_int, default=DEFAULT_BATCH,
                        help="frames read per step (memory use)")
    _common(parser)
    parser.set_defaults(func=run_encode)


def _list_codecs() -> int:
    from framepack.io.codecs import CODEC_FAMILIES, encoder_names, is_hardware
    for name in encoder_names():
        print(f"{name}{'  (hardware)' if is_hardware(name) else ''}")
    print(f"(or a format name, mapped to the first of its encoders that works: {', '.join(CODEC_FAMILIES)})")
    return EXIT_OK


def _make_video_writer(args, out: Path, fps, settings: dict, work=None):
    from framepack.errors import InputError
    from framepack.io.writer import Cv2VideoWriter, VideoWriter
    if args.backend == "cv2":
        extra = [name for name, value in (("--codec", args.codec), ("--options", args.options),
                                          ("--crf", args.crf), ("--pix-fmt", args.pix_fmt))
                 if value is not None and not (name == "--codec" and value == "mp4v")]
        if extra:
            raise InputError(f"the cv2 backend always writes mp4v and does not take "
                             f"{', '.join(extra)}; use --backend av for those")
        return Cv2VideoWriter(out, fps, overwrite=args.overwrite, work=work)
    from framepack.io.codecs import resolve_codec
    return VideoWriter(out, fps, codec=resolve_codec(args.codec or "libx264"), options=args.options,
                       pix_fmt=args.pix_fmt, metadata=settings, crf=args.crf,
                       overwrite=args.overwrite, work=work)


def run_encode(args) -> int:
    if args.codec == "help":
        return _list_codecs()
    from framepack.io.fps import format_fps, parse_fps
    from framepack.io.interpolate import check_factor, output_count
    from framepack.io.reader import open_frames
    k = check_factor(args.interpolate, args.method)
    _media_checks(args)
    upscaler = _upscaler(args)  # loaded before any frame is read
    with open_frames(args.file) as source:
        _require_frames(source, args.file, "encode")
        fps = parse_fps(args.fps, "--fps") if args.fps else (source.fps or 30) * (k + 1)
        from framepack.io.codecs import CONTAINERS
        out = _output_file(args.out, Path(args.file), tuple(CONTAINERS), args.overwrite)
        interpolation = (source.interpolation + 1) * (k + 1) - 1
        settings = {**(source.settings or {}), "fps": format_fps(fps),
                    "interpolation": interpolation}
        with _work_folder(out.parent) as work:
            writer = _make_video_writer(args, out, fps, settings, work)
            frames = _frames_with_interpolation(source, k, args.method, args.batch, args.rife_model, upscaler)
            with writer, _progress(args, output_count(len(source), k), "encode") as bar:
                for item in frames:
                    writer.write(item)
                    bar.update(_length(item))
    result = writer.describe()
    _emit(args, result, [f"wrote {result['frames']} frames ({result['width']}x{result['height']}, "
                         f"{result['codec']}, {result['fps']} fps) to {result['path']}"])
    return EXIT_OK


# ------------------------------------------------------------------------------ interpolate

def add_interpolate(subparsers) -> None:
    parser = subparsers.add_parser(
        "interpolate", help="add interpolated frames and save raw frames",
        description="Insert K frames between each pair of frames (optical flow or blend) and "
                    "save the result as raw frames; fps becomes fps*(K+1), duration unchanged.")
    parser.add_argument("file", help="raw frames (.safetensors) or video file")
    parser.add_argument("--factor", type=_count, required=True, metavar="K",
                        help="frames to insert between each pair (1 doubles the frame rate)")
    parser.add_argument("--out", required=True, metavar="OUT.safetensors",
                        help="output raw frames file, or a folder to get a fresh name in it")
    _add_media_flags(parser, upscale=False)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--batch", type=_positive_int, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    _common(parser)
    parser.set_defaults(func=run_interpolate)


def run_interpolate(args) -> int:
    from framepack.errors import InputError
    from framepack.io.interpolate import check_factor, output_count
    from framepack.io.raw import RawFramesWriter
    from framepack.io.reader import open_frames
    k = check_factor(args.factor, args.method)
    _media_checks(args)
    with open_frames(args.file) as source:
        _require_frames(source, args.file, "interpolate")
        out = _output_file(args.out, Path(args.file), (".safetensors",), args.overwrite)
        metadata = {"fps": source.fps * (k + 1), "generated_fps": source.generated_fps,
                    "interpolation": (source.interpolation + 1) * (k + 1) - 1,
                    "settings": source.settings or {}}
        with _work_folder(out.parent) as work:
            raw = RawFramesWriter(out, source.height, source.width, metadata,
                                  overwrite=args.overwrite, work=work)
            frames = _frames_with_interpolation(source, k, args.method, args.batch, args.rife_model)
            with raw, _progress(args, output_count(len(source), k), "interpolate") as bar:
                for item in frames:
                    raw.write(item)
                    bar.update(_length(item))
    result = {"path": str(raw.path), "frames": raw.frames_written, "fps": str(raw.fps),
              "interpolation": metadata["interpolation"], "method": args.method}
    _emit(args, result, [f"wrote {raw.frames_written} frames ({raw.fps} fps) to {raw.path}"])
    return EXIT_OK


# ------------------------------------------------------------------------------ parser / main

from framepack.cli.continuation import add_extend, add_reroll, add_resume  # noqa: E402  (argparse only)
from framepack.cli.batch import add_batch  # noqa: E402  (argparse only)
from framepack.cli.generate import add_generate  # noqa: E402  (argparse only; heavy imports run later)
from framepack.cli.plan import add_plan  # noqa: E402  (argparse only; the planner loads in run_plan)
from framepack.cli.serve import add_serve  # noqa: E402  (argparse only; uvicorn and the app load in run_serve)

SUBCOMMANDS = [add_generate, add_plan, add_batch, add_resume, add_reroll, add_extend, add_info, add_export, add_encode, add_interpolate]
SUBCOMMANDS.append(add_serve)
"""Registration functions, one per subcommand: each takes the argparse subparsers object, adds
its parser and sets `func`. `generate` and `serve` are added here by appending their own
`add_generate` / `add_serve` (for example from framepack.cli modules) to this list."""


def build_parser() -> argparse.ArgumentParser:
    from framepack.cli.args import CliParser
    parser = CliParser(
        prog="framepack_cli.py",
        description="FramePack CLI: generate videos, serve the standalone app, and inspect, encode, "
                    "export and interpolate saved frames.",
        epilog="Run `framepack_cli.py COMMAND --help` for the options of each command.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback of unexpected errors")
    parser.add_argument("--quiet", action="store_true", default=False, help="no progress bars")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def _version() -> str:
    from framepack import __version__
    return f"framepack {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and map errors to exit codes (2: the user's input, 1: our bug)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 with argparse's message
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    from framepack.errors import FramePackError
    try:
        return args.func(args) or EXIT_OK
    except FramePackError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return EXIT_OK
    except Exception as e:  # a bug: say so briefly, full detail only on request
        if args.debug:
            import traceback
            traceback.print_exc()
        print(f"unexpected error: {type(e).__name__}: {e}"
              f"{'' if args.debug else ' (run with --debug for details)'}", file=sys.stderr)
        return EXIT_FAILURE


def start_process() -> None:
    """Process-wide settings a command line owns (inside SD.Next they are the host's): a steady heap."""
    from framepack.engine.heap import map_large_buffers

    map_large_buffers()


if __name__ == "__main__":
    start_process()
    sys.exit(main())
