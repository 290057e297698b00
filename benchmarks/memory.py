"""Peak RSS of one generation at several video lengths: our section loop against diffusers.

Our engine (`framepack.engine.loop`) streams finished frames to a sink and keeps only the
cross-fade overlap in RAM; diffusers' `HunyuanVideoFramepackPipeline` keeps the whole decoded
video as a float tensor and returns every frame. This script runs the same work through both on
a tiny random-weight model at 2, 8 and 32 sections (by default) and prints their peak resident
memory side by side.

Every measurement runs in a fresh subprocess (this file with `--worker ours|diffusers`), so one
run's peak cannot hide in another's. Each cell (pipeline x section count) runs `--repeats` times
(default 3): the table shows the median peak and the spread (min-max), and the 32/2 ratio is
given for the medians and for the worst pairing (largest long-run peak over smallest short-run
peak), so a number can be trusted only when the spread is small next to the effect. A worker loads the model, records its baseline RSS (psutil,
after imports and model load, before generating), generates once, and prints one JSON line with
`ru_maxrss` (its peak RSS over its whole life) taken at the end.

The model is `framepack.models.tiny` with one bench-only change: its VAE is rebuilt (seeded,
random weights) without mid-block attention, whose attention matrix over every latent pixel of
a section would otherwise dominate both time and memory at the resolutions used here. Both
pipelines load that same folder.

    .venv/bin/python benchmarks/memory.py                 # 2, 8, 32 sections at 224 px, 1 step
    .venv/bin/python benchmarks/memory.py --quick         # smoke test: 1 and 2 sections at 64 px
    .venv/bin/python benchmarks/memory.py --sections 2,8 --resolution 192 --steps 2
    .venv/bin/python benchmarks/memory.py --trace --sections 32 --repeats 1   # where the peak moves

`--trace` makes our worker record, after every section and after the final replay, its RSS, its
peak RSS so far and glibc's heap statistics (`mallinfo2`: bytes in use, free bytes the heap keeps,
mmapped bytes), and prints them: this separates the decode's transient working set, the spill
file's mapped pages during the reversed replay, and allocator fragmentation.

Workers start as `framepack_cli.py` does: `framepack.engine.heap.map_large_buffers()` fixes
glibc's mmap threshold at 1 MiB (both pipelines; `--glibc-defaults` keeps glibc's dynamic one).
They inherit the environment, so other glibc allocator settings apply to both as well, e.g.
`MALLOC_ARENA_MAX=1 .venv/bin/python benchmarks/memory.py`. The header shows any `MALLOC_*`
settings in force.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/memory.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}

DEFAULT_SECTIONS = (2, 8, 32)
DEFAULT_REPEATS = 3
DEFAULT_RESOLUTION = 224
DEFAULT_STEPS = 1
QUICK = dict(sections=(1, 2), resolution=64, steps=1, repeats=1)
WINDOW = 9  # latent_window_size, the default
FPS = 30
SEED = 1234
VAE_SEED = 4321
DISTILLED_CFG = 10.0  # our default distilled guidance; diffusers gets the same as guidance_scale
PROMPT = "a paper boat drifts down a stream"
MODEL_FORMAT = 1  # bump when the bench model changes: old folders are rebuilt
MB = 1024 * 1024


# ----------------------------------------------------------------------------- arithmetic


def frames_for(sections: int, window: int = WINDOW) -> int:
    """Frames both pipelines produce for `sections` sections (VAE: 4 frames per latent, plus 1)."""
    return 4 * window * sections + 1


def our_duration(sections: int, window: int = WINDOW, fps: float = FPS) -> float:
    """Seconds that make our planner, round(duration * fps / (4 * lws)), choose `sections`."""
    return sections * 4 * window / fps


def diffusers_num_frames(sections: int, window: int = WINDOW) -> int:
    """num_frames that makes diffusers, ceil(num_frames / (4 * lws - 3)), choose `sections`."""
    return sections * (4 * window - 3)


def diffusers_sections(num_frames: int, window: int = WINDOW) -> int:
    per_section = 4 * window - 3
    return max(1, math.ceil(num_frames / per_section))


def history_bytes(sections: int, height: int, width: int, window: int = WINDOW) -> int:
    """diffusers' float32 pixel history [1, 3, T, H, W] at the end of the run."""
    return 3 * frames_for(sections, window) * height * width * 4


def bucket(resolution: int) -> tuple[int, int]:
    from framepack.engine.conditioning import pick_bucket

    return pick_bucket(resolution, resolution, resolution)


# ----------------------------------------------------------------------------- bench model


def build_bench_model(folder: Path) -> Path:
    """The tiny model with a seeded random VAE that has no mid-block attention (reused if present)."""
    marker = folder / "bench_memory.json"
    expected = {"format": MODEL_FORMAT, "vae_seed": VAE_SEED}
    try:
        if json.loads(marker.read_text(encoding="utf-8")) == expected:
            return folder
    except (OSError, ValueError):
        pass
    import torch
    from diffusers import AutoencoderKLHunyuanVideo

    from framepack.models.tiny import VAE_CONFIG, build_tiny_model

    if folder.exists():
        shutil.rmtree(folder)
    build_tiny_model(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(VAE_SEED)
        vae = AutoencoderKLHunyuanVideo(**{**VAE_CONFIG, "mid_block_add_attention": False})
    shutil.rmtree(folder / "vae")
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    marker.write_text(json.dumps(expected) + "\n", encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- workers


def _rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def heap_stats() -> dict[str, int] | None:
    """glibc's `mallinfo2()`: bytes in use, free bytes kept by the heap, mmapped bytes (None elsewhere)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return None
    return {"in_use": info.uordblks, "free_kept": info.fordblks, "mmapped": info.hblkhd}


def trace_point(label: str) -> dict:
    return {"at": label, "rss": _rss_now(), "peak_rss": _peak_rss(), "heap": heap_stats()}


def malloc_env() -> dict[str, str]:
    """glibc allocator settings in force (workers inherit the driver's environment)."""
    return {key: value for key, value in sorted(os.environ.items()) if key.startswith("MALLOC_")}


def _start_image(height: int, width: int):
    import numpy as np

    return np.random.default_rng(SEED).integers(0, 256, (height, width, 3), dtype=np.uint8)


def worker_ours(model_dir: Path, sections: int, resolution: int, steps: int, window: int,
                trace_enabled: bool = False) -> dict:
    from framepack.engine.pipeline import FramePackPipeline
    from framepack.request.model import build_request
    from framepack.models.loader import load_components
    from framepack.models.recipe import local_recipe

    started = time.perf_counter()
    pipe = FramePackPipeline.from_components(load_components(local_recipe(model_dir, "original")))
    height, width = bucket(resolution)
    request = build_request(
        image=_start_image(height, width), prompt=PROMPT, variant="original", duration=our_duration(sections, window),
        fps=FPS, resolution=resolution, steps=steps, latent_window_size=window, seed=SEED, sampler="euler",
        teacache=False, preview=False, distilled_cfg=DISTILLED_CFG,
    )
    planned = request.plan().num_sections
    assert planned == sections, f"our planner chose {planned} sections, wanted {sections}"
    load_seconds = time.perf_counter() - started

    # A consumer that keeps nothing (a real run hands the frames to a video encoder).
    seen = {"frames": 0, "checksum": 0, "shape": None}

    def sink(frames) -> None:
        import numpy as np

        seen["frames"] += len(frames)
        seen["checksum"] = zlib.adler32(np.ascontiguousarray(frames), seen["checksum"])
        seen["shape"] = list(frames.shape[1:])

    import gc

    gc.collect()
    baseline = _rss_now()
    started = time.perf_counter()
    trace: list[dict] = []

    from framepack.request.events import SectionDone, Stage

    sections_done = 0

    def on_event(event) -> None:  # a stage's point is taken as it starts: the peak so far covers what came before
        nonlocal sections_done
        if not trace_enabled:
            return
        if isinstance(event, Stage):
            trace.append(trace_point(f"{event.name} starts"))
        elif isinstance(event, SectionDone):
            sections_done += 1
            trace.append(trace_point(f"section {sections_done} done"))

    done = pipe.run(request, sink, on_event)  # runs under torch.no_grad itself
    seconds = time.perf_counter() - started
    if trace_enabled:
        trace.append(trace_point("after the final replay"))
    assert done.status == "completed" and done.frames == seen["frames"], (done.status, done.frames, seen)
    return {"frames": seen["frames"], "frame_shape": seen["shape"], "checksum": f"{seen['checksum']:08x}",
            "baseline_rss": baseline, "load_seconds": load_seconds, "seconds": seconds, "trace": trace,
            "timings": {name: round(value, 2) for name, value in done.timings.items()}}


def worker_diffusers(model_dir: Path, sections: int, resolution: int, steps: int, window: int,
                     trace_enabled: bool = False) -> dict:
    import torch
    from diffusers import HunyuanVideoFramepackPipeline
    from PIL import Image

    from framepack.engine.conditioning import template_crop_start, template_for
    from framepack.request.model import DEFAULT_SYSTEM_PROMPT

    started = time.perf_counter()
    pipe = HunyuanVideoFramepackPipeline.from_pretrained(model_dir)  # float32, as saved
    pipe.set_progress_bar_config(disable=True)
    height, width = bucket(resolution)
    num_frames = diffusers_num_frames(sections, window)
    assert diffusers_sections(num_frames, window) == sections
    template = {"template": template_for(DEFAULT_SYSTEM_PROMPT),
                "crop_start": template_crop_start(pipe.tokenizer, DEFAULT_SYSTEM_PROMPT)}
    image = Image.fromarray(_start_image(height, width))
    load_seconds = time.perf_counter() - started

    import gc

    gc.collect()
    baseline = _rss_now()
    started = time.perf_counter()
    result = pipe(  # __call__ is decorated with torch.no_grad
        image=image, prompt=PROMPT, height=height, width=width, num_frames=num_frames,
        latent_window_size=window, num_inference_steps=steps, guidance_scale=DISTILLED_CFG,
        generator=torch.Generator().manual_seed(SEED), output_type="np", prompt_template=template,
        max_sequence_length=256, sampling_type="inverted_anti_drifting",
    )
    seconds = time.perf_counter() - started
    video = result.frames[0]  # [T, H, W, 3] float32, what a user gets
    frames, shape, dtype = int(video.shape[0]), list(video.shape[1:]), str(video.dtype)
    del video, result  # dropped, as the caller would after handing it on
    return {"frames": frames, "frame_shape": shape, "output_dtype": dtype, "baseline_rss": baseline,
            "load_seconds": load_seconds, "seconds": seconds}


WORKERS = {"ours": worker_ours, "diffusers": worker_diffusers}


def run_worker(args) -> None:
    import torch

    from framepack.engine.heap import map_large_buffers

    # as framepack_cli.py, serve's workers and Ray actors start (both pipelines, so the comparison stays fair)
    mapped = False if args.glibc_defaults else map_large_buffers()
    torch.set_num_threads(args.threads)
    sections = args.sections[0]
    result = WORKERS[args.worker](Path(args.model_dir), sections, args.resolution, args.steps, args.window,
                                  trace_enabled=args.trace)
    result.update(impl=args.worker, sections=sections, resolution=args.resolution, steps=args.steps,
                  window=args.window, peak_rss=_peak_rss(), end_rss=_rss_now(), threads=torch.get_num_threads(),
                  malloc_env=malloc_env(), large_buffers_mapped=mapped)
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- driver


def spawn(impl: str, sections: int, args, model_dir: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--sections", str(sections),
               "--resolution", str(args.resolution), "--steps", str(args.steps), "--window", str(args.window),
               "--threads", str(args.threads), "--model-dir", str(model_dir)] + (["--trace"] if args.trace else []) \
        + (["--glibc-defaults"] if args.glibc_defaults else [])
    env = {**os.environ, **QUIET_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.worker_timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker {impl} --sections {sections} failed with exit status {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(f"worker {impl} --sections {sections} printed no JSON line")
    result = json.loads(lines[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def mb(value: float) -> str:
    return f"{value / MB:.0f}"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def cell_stats(runs: list[dict], key: str = "peak_rss") -> dict:
    values = [run[key] for run in runs]
    return {"median": median(values), "min": min(values), "max": max(values), "n": len(values)}


def spread(stats: dict) -> str:
    return f"{mb(stats['median'])} ({mb(stats['min'])}-{mb(stats['max'])})"


def report(results: dict[tuple[str, int], list[dict]], args, height: int, width: int) -> dict:
    sections = args.sections
    print(f"resolution {width}x{height}, steps {args.steps}, latent_window_size {args.window}, euler, teacache off, "
          f"{args.threads} torch threads, glibc settings {malloc_env() or 'default'}, "
          f"{'glibc default mmap threshold' if args.glibc_defaults else 'large buffers mapped (as the CLI)'}; "
          "one fresh process per run, "
          f"{args.repeats} runs per cell; MB = MiB; peak: median (min-max)")
    impls = [impl for impl in WORKERS if impl not in args.skip]
    header = ["sections", "frames", *(f"{impl} peak MB" for impl in impls), *(f"{impl} baseline" for impl in impls),
              "diffusers float history MB", *(f"{impl} s" for impl in impls)]
    rows, summary = [], {}
    for n in sections:
        cells = {impl: results[(impl, n)] for impl in impls}
        stats = {impl: cell_stats(cells[impl]) for impl in impls}
        summary[n] = stats
        rows.append([str(n), str(cells[impls[0]][0]["frames"]), *(spread(stats[impl]) for impl in impls),
                     *(mb(median([r["baseline_rss"] for r in cells[impl]])) for impl in impls),
                     mb(history_bytes(n, height, width, args.window)),
                     *(f"{median([r['seconds'] for r in cells[impl]]):.1f}" for impl in impls)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))
    longest, shortest = max(sections), min(sections)
    history = history_bytes(longest, height, width, args.window)
    baseline = max(median([r["baseline_rss"] for r in results[(impl, longest)]]) for impl in impls)
    growth = {impl: summary[longest][impl]["median"] - summary[shortest][impl]["median"] for impl in impls}
    print(f"median peak growth {shortest} -> {longest} sections: "
          + ", ".join(f"{impl} {growth[impl] / MB:+.0f} MB" for impl in impls)
          + f" (float history grows by {(history - history_bytes(shortest, height, width, args.window)) / MB:.0f} MB)")
    if "diffusers" in impls and history < baseline:
        print(f"WARNING: diffusers' float history at {longest} sections ({history / MB:.0f} MB) is smaller than the "
              f"baseline RSS ({baseline / MB:.0f} MB): raise --resolution or --sections for a meaningful comparison")
    ratios = {}
    for impl in impls:
        long, short = summary[longest][impl], summary[shortest][impl]
        ratios[impl] = {"median": long["median"] / short["median"], "best": long["min"] / short["max"],
                        "worst": long["max"] / short["min"]}
    print(f"peak RSS ratio {longest}/{shortest} sections (medians; best-worst pairing): "
          + ", ".join(f"{impl} {r['median']:.2f} ({r['best']:.2f}-{r['worst']:.2f})" for impl, r in ratios.items()))
    if args.trace:
        print_traces(results)
    return {"cells": {f"{impl}:{n}": summary[n][impl] for n in sections for impl in impls}, "ratios": ratios}


def print_traces(results: dict[tuple[str, int], list[dict]]) -> None:
    for (impl, n), runs in sorted(results.items()):
        for index, run in enumerate(runs):
            if not run.get("trace"):
                continue
            print(f"\ntrace: {impl}, {n} sections, run {index + 1} "
                  "(MB: rss, peak rss, heap in use / free kept / mmapped)")
            if run.get("timings"):
                print("  seconds per stage: " + ", ".join(f"{k} {v}" for k, v in run["timings"].items()))
            for point in run["trace"]:
                heap = point["heap"] or {}
                heap_mb = [mb(heap.get(key, 0)) for key in ("in_use", "free_kept", "mmapped")]
                print(f"  {point['at']:24s} {mb(point['rss']):>6s} {mb(point['peak_rss']):>6s}   "
                      f"{heap_mb[0]:>5s} / {heap_mb[1]:>5s} / {heap_mb[2]:>5s}")


def run_benchmark(args) -> None:
    started = time.perf_counter()
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", message=r".*local_dir_use_symlinks.*")
    if args.model_dir:
        model_dir = build_bench_model(Path(args.model_dir).expanduser().absolute())
        scratch = None
    else:
        scratch = Path(tempfile.mkdtemp(prefix="framepack-bench-memory-"))
        model_dir = build_bench_model(scratch / "tiny-bench")
    try:
        height, width = bucket(args.resolution)
        results: dict[tuple[str, int], list[dict]] = {}
        for repeat in range(args.repeats):  # interleaved, so slow drifts of the machine hit every cell alike
            for n in args.sections:
                for impl in WORKERS:
                    if impl in args.skip:
                        continue
                    result = spawn(impl, n, args, model_dir)
                    results.setdefault((impl, n), []).append(result)
                    print(f"  [run {repeat + 1}/{args.repeats} {impl:9s} {n:3d} sections] {result['frames']} frames, "
                          f"peak {mb(result['peak_rss'])} MB, baseline {mb(result['baseline_rss'])} MB, after "
                          f"{mb(result['end_rss'])} MB, generate {result['seconds']:.1f} s, process "
                          f"{result['wall_seconds']:.1f} s", flush=True)
        for (impl, n), runs in results.items():
            for run in runs:
                assert run["frames"] == frames_for(n, args.window), (
                    f"{impl} made {run['frames']} frames at {n} sections, expected {frames_for(n, args.window)}")
                assert run["frame_shape"] == [height, width, 3], (impl, run["frame_shape"])
        print()
        summary = report(results, args, height, width)
        if args.json:
            runs = [run for cell in results.values() for run in cell]
            Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n",
                                       encoding="utf-8")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    sys.stdout.flush()
    print(f"(total wall time {time.perf_counter() - started:.0f} s)", file=sys.stderr)


def section_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("section counts must be positive integers")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Peak RSS of one generation, our streaming section loop vs diffusers' "
                    "HunyuanVideoFramepackPipeline, on a tiny random-weight model. Each measurement "
                    "runs in a fresh subprocess.")
    parser.add_argument("--sections", type=section_list, default=None,
                        help=f"comma-separated section counts (default {','.join(map(str, DEFAULT_SECTIONS))})")
    parser.add_argument("--resolution", type=int, default=None,
                        help=f"bucket resolution in px, a multiple of 16 (default {DEFAULT_RESOLUTION}, square video)")
    parser.add_argument("--steps", type=int, default=None, help=f"sampling steps per section (default {DEFAULT_STEPS})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: sections {','.join(map(str, QUICK['sections']))}, {QUICK['resolution']} px, "
                             f"{QUICK['steps']} step (explicit flags still win)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"fresh-process runs per cell; the table shows median and min-max "
                             f"(default {DEFAULT_REPEATS})")
    parser.add_argument("--trace", action="store_true",
                        help="our worker records RSS and glibc heap statistics after every section and the replay")
    parser.add_argument("--skip", choices=sorted(WORKERS), action="append", default=[],
                        help="leave one pipeline out (e.g. --skip diffusers, for ours alone)")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="workers keep glibc's dynamic mmap threshold instead of fixing it as the CLI does")
    parser.add_argument("--window", type=int, default=WINDOW, help=f"latent_window_size (default {WINDOW})")
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                        help="torch threads per worker (default min(2, cores))")
    parser.add_argument("--model-dir", default=None,
                        help="keep the bench model here and reuse it (default: a temporary folder, removed after)")
    parser.add_argument("--json", default=None, help="also write every worker's result to this JSON file")
    parser.add_argument("--worker-timeout", type=float, default=900.0, help="seconds before a worker is killed")
    parser.add_argument("--worker", choices=sorted(WORKERS), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else dict(sections=DEFAULT_SECTIONS, resolution=DEFAULT_RESOLUTION,
                                              steps=DEFAULT_STEPS, repeats=DEFAULT_REPEATS)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.resolution % 16 or args.resolution < 32:
        parser.error("--resolution must be a multiple of 16, at least 32")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if len(args.skip) > 1:
        parser.error("--skip can leave out one pipeline, not both")
    if args.worker and (len(args.sections) != 1 or not args.model_dir):
        parser.error("--worker takes exactly one --sections value and --model-dir")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        warnings.filterwarnings("ignore")
        run_worker(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
