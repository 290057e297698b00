"""Disk and time cost of job checkpoints, per section (issue 11).

    .venv/bin/python benchmarks/checkpoints.py [--quick]

1. Computed for the released models at the 640 bucket: the latent shapes follow from the
   HunyuanVideo VAE config (16 latent channels, 8x spatial and 4x temporal compression) and the
   FramePack defaults (latent window 9, a history of 1 + 2 + 16 latents); a section file holds the
   start latent and the history, stored as bfloat16 when the values are bfloat16 exactly (the
   latents of a bf16 transformer are) and float32 otherwise. Beside it, F1 jobs log the frames they
   have streamed out (uint8, so a resume can write them again); the original model's frames wait
   in its spill file, which the job writes with or without checkpoints.
2. Measured on this machine: writing a section file of that full size with the real writer
   (safetensors, temporary name, fsync, rename), best and median of several.
3. Measured on the tiny model: a real job at 32 px with checkpoints, its section files' size and
   the time spent saving them, against the job's time per section.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from framepack.engine.conditioning import pick_bucket  # noqa: E402
from framepack.engine.context import HISTORY_LENGTH  # noqa: E402

LATENT_CHANNELS, SPATIAL, TEMPORAL = 16, 8, 4
"""HunyuanVideo VAE (hunyuanvideo-community/HunyuanVideo, vae/config.json)."""
WINDOW = 9
"""FramePack's default latent window: 4 * 9 = 36 new frames a section (at 30 fps, 1.2 s)."""
MB = 1024 * 1024


def full_size_state(height: int, width: int, window: int = WINDOW, dtype=torch.bfloat16):
    """The latent context and assembler state of a full-size job after a section."""
    h, w = height // SPATIAL, width // SPATIAL
    history = max(HISTORY_LENGTH, 2 * window + 1)
    generator = torch.Generator().manual_seed(0)
    context = {"variant": "f1", "window": window, "anchor_strength": 1.0, "generated": 1 + window * 3,
               "start_latent": torch.randn(1, LATENT_CHANNELS, 1, h, w, generator=generator).to(dtype).float(),
               "history": torch.randn(1, LATENT_CHANNELS, history, h, w, generator=generator).to(dtype).float()}
    assembler = {"overlap": 4 * window - 3, "reverse": False, "emitted": 4 * window * 3, "pending": None, "spill": None}
    return context, assembler


def computed(height: int, width: int) -> dict:
    h, w = height // SPATIAL, width // SPATIAL
    history = max(HISTORY_LENGTH, 2 * WINDOW + 1)
    values = LATENT_CHANNELS * (1 + history) * h * w
    frames = TEMPORAL * WINDOW
    return {"bucket": f"{width}x{height}", "latents": f"[1, {LATENT_CHANNELS}, 1+{history}, {h}, {w}]",
            "bf16_mb": values * 2 / MB, "fp32_mb": values * 4 / MB,
            "log_mb": frames * height * width * 3 / MB, "frames": frames}


def measure_full_size(height: int, width: int, repeats: int) -> tuple[float, float, float]:
    """(best s, median s, file MB) of writing one full-size section file with the real writer."""
    from framepack.jobs.checkpoint import JobCheckpoints, JobSpec
    from framepack.request.model import build_request
    from framepack.request.output import OutputOptions

    import numpy as np

    context, assembler = full_size_state(height, width)
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as folder:
        checkpoints = JobCheckpoints(folder)
        request = build_request(image=np.zeros((height, width, 3), np.uint8), prompt="benchmark", seed=1)
        checkpoints.write_spec(JobSpec("bench", "generate", request, OutputOptions()))
        times = []
        for position in range(1, repeats + 1):
            start = time.perf_counter()
            path = checkpoints.save(position, context, assembler, 3 * WINDOW, 0, None)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size / MB
    return min(times), statistics.median(times), size


def measure_tiny(model_dir: Path, sections: int) -> dict:
    """A real job on the tiny model with checkpoints: section file size and save time per section."""
    import numpy as np

    from framepack.engine.pipeline import FramePackPipeline
    from framepack.io.workdir import WorkFolder
    from framepack.jobs import checkpoint as checkpoint_module
    from framepack.jobs.checkpoint import JobCheckpoints, JobSpec
    from framepack.jobs.output import run_job
    from framepack.models.loader import load_components
    from framepack.models.recipe import local_recipe
    from framepack.request.events import SectionDone
    from framepack.request.model import build_request
    from framepack.request.output import OutputOptions

    pipe = FramePackPipeline.from_components(load_components(local_recipe(model_dir, "f1")))
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    request = build_request(image=image, prompt="benchmark", resolution=64, steps=2, latent_window_size=9,
                            duration=sections * 1.2, seed=3, variant="f1", teacache=False, preview=False)
    saves: list[float] = []
    original_save = JobCheckpoints.save

    def timed_save(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original_save(self, *args, **kwargs)
        finally:
            saves.append(time.perf_counter() - start)

    section_times: list[float] = []
    last = [time.perf_counter()]

    def on_event(event) -> None:
        if isinstance(event, SectionDone):
            now = time.perf_counter()
            section_times.append(now - last[0])
            last[0] = now

    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as out:
        options = OutputOptions(codec="none", save_frames=True, keep_checkpoints=True)
        work = WorkFolder(out, "tiny")
        checkpoints = JobCheckpoints(work.path)
        JobCheckpoints.save = timed_save
        try:
            run_job(pipe, request, options, out, work=work, checkpoints=checkpoints,
                    spec=JobSpec("tiny", "generate", request, options), on_event=on_event)
        finally:
            JobCheckpoints.save = original_save
        sizes = [path.stat().st_size for path in (work.path / checkpoint_module.SECTIONS_DIR).iterdir()]
        log = work.path / "frames.log"
        log_mb = log.stat().st_size / MB if log.exists() else 0.0
        work.close()
    return {"sections": len(section_times), "section_kb": statistics.median(sizes) / 1024,
            "save_ms": statistics.median(saves) * 1000, "section_s": statistics.median(section_times),
            "log_mb": log_mb, "size": "64x64"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a shorter tiny run")
    parser.add_argument("--model", default=None, help="tiny model folder (default: built in a temporary folder)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7

    print("1. computed for the released models (latent window 9, history 19 latents + the start latent)")
    print("| bucket | latents per section file | bf16 MB | float32 MB | F1 frame log MB per section (36 frames) |")
    print("|---|---|---:|---:|---:|")
    square = pick_bucket(640, 640, 640)
    for height, width in (square, (416, 960)):  # the squarest and the widest buckets
        row = computed(height, width)
        print(f"| {row['bucket']} | {row['latents']} | {row['bf16_mb']:.2f} | {row['fp32_mb']:.2f} | "
              f"{row['log_mb']:.1f} |")

    best, median, size = measure_full_size(*square, repeats)
    width, height = square[1], square[0]
    print(f"\n2. measured: one full-size section file ({width}x{height}, bf16): {size:.2f} MB, "
          f"write + fsync + rename best {best * 1000:.0f} ms, median {median * 1000:.0f} ms ({repeats} writes)")

    from framepack.models.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        model = Path(args.model) if args.model else build_tiny_model(Path(folder) / "tiny")
        tiny = measure_tiny(model, 2 if args.quick else 4)
    print(f"\n3. measured on the tiny model ({tiny['size']}, F1, latent window 9, 2 steps, {tiny['sections']} sections): "
          f"section file {tiny['section_kb']:.0f} KB, save {tiny['save_ms']:.1f} ms median, "
          f"{tiny['section_s']:.2f} s per section -> checkpoint time "
          f"{100 * tiny['save_ms'] / 1000 / tiny['section_s']:.2f}% of a section; frame log "
          f"{tiny['log_mb']:.2f} MB in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
