"""Print the resource planner's predictions for the full-size model as Markdown tables.

No model, no GPU: `framepack.models.resources` builds the shipped configs on the meta device. The
tables in benchmarks/RESULTS.md come from this script:

    .venv/bin/python benchmarks/plan_table.py                  # resolution x offload x weights
    .venv/bin/python benchmarks/plan_table.py --sections 8     # another run length

Each cell is the predicted peak VRAM with the VAE untiled / tiled, then the peak RAM, in GiB,
for the largest-area bucket at that resolution, window 9, 25 steps, one prompt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

RESOLUTIONS = (320, 480, 640, 800, 960)
WEIGHTS = (("bf16", "none"), ("int8 / fp8", "int8"), ("int4", "int4"))
BUDGETS_GB = (80, 48, 24, 16, 12, 8)


def gib(value: float) -> str:
    from framepack.models.resources import GiB

    return f"{value / GiB:.1f}"


def offload_table(sections: int) -> None:
    from framepack.models.component_costs import bucket_for
    from framepack.models.resources import OFFLOAD_ORDER, plan_resources

    for label, quantization in WEIGHTS:
        print(f"\n**{label} weights** (transformer and Llama; the other encoders and the VAE fp16). "
              "VRAM untiled / tiled, RAM (GiB):\n")
        print("| resolution (bucket) | " + " | ".join(OFFLOAD_ORDER) + " |")
        print("|---|" + "---:|" * len(OFFLOAD_ORDER))
        for resolution in RESOLUTIONS:
            height, width = bucket_for(resolution)
            cells = []
            for mode in OFFLOAD_ORDER:
                untiled = plan_resources(resolution=resolution, offload=mode, quantization=quantization,
                                         sections=sections)
                tiled = plan_resources(resolution=resolution, offload=mode, quantization=quantization,
                                       sections=sections, vae_tiling=True)
                cells.append(f"{gib(untiled.vram_peak_bytes)} / {gib(tiled.vram_peak_bytes)}, "
                             f"{gib(untiled.ram_peak_bytes)}")
            print(f"| {resolution} ({height}x{width}) | " + " | ".join(cells) + " |")


def choice_table(sections: int) -> None:
    from framepack.models.resource_choice import ResourceError, choose_resources
    from framepack.models.resources import GiB

    print("\n**`auto` at 640 px with 64 GiB of RAM** (bf16):\n")
    print("| VRAM budget | offload | VAE tiling | predicted peak VRAM | needed with margin | peak RAM |")
    print("|---:|---|---|---:|---:|---:|")
    for budget in BUDGETS_GB:
        try:
            plan = choose_resources(budget * GiB, 64 * GiB, resolution=640, sections=sections)
        except ResourceError as error:
            print(f"| {budget} GB | refused: {error.suggestions[0] if error.suggestions else str(error)} | | | | |")
            continue
        print(f"| {budget} GB | {plan.offload} | {'on' if plan.vae_tiling else 'off'} | "
              f"{gib(plan.vram_peak_bytes)} GiB | {gib(plan.vram_needed_bytes())} GiB | "
              f"{gib(plan.ram_peak_bytes)} GiB |")


def parts_table(sections: int) -> None:
    from framepack.models.resources import plan_resources

    plan = plan_resources(resolution=640, sections=sections)
    print("\n**What the 640 px plan is made of** (bf16, offload none):\n")
    print("| part | GiB |")
    print("|---|---:|")
    for role, size in plan.weight_bytes.items():
        print(f"| weights: {role} ({plan.parameters[role]:,} parameters) | {gib(size)} |")
    for stage, size in plan.working_set_bytes.items():
        print(f"| working set: {stage} | {gib(size)} |")
    tiled = plan_resources(resolution=640, sections=sections, vae_tiling=True)
    print(f"| working set: vae_decode, tiled | {gib(tiled.working_set_bytes['vae_decode'])} |")
    print(f"\ntokens per transformer call: {plan.tokens['image_tokens']:,} image + {plan.tokens['context_tokens']:,} "
          f"context; {plan.flops_per_step / 1e12:.0f} TFLOP per call")


def checkpoint_table() -> None:
    from framepack.models.resources import MiB, Workload, checkpoint_bytes, plan_resources

    print("\n**Checkpoints and spill per section at 640 px** (window 9):\n")
    print("| bucket | checkpoint per section | spill file per section | write time at 0.2 / 0.5 / 2 GB/s |")
    print("|---|---:|---:|---|")
    for height, width in ((416, 960), (608, 640)):
        size = checkpoint_bytes(Workload(height=height, width=width))
        spill = 4 * 9 * height * width * 3
        times = " / ".join(f"{(size + spill) / rate / 1e9:.2f} s" for rate in (0.2, 0.5, 2.0))
        print(f"| {height}x{width} | {size / MiB:.1f} MiB | {spill / MiB:.1f} MiB | {times} |")
    plan = plan_resources(resolution=640, sections=50, save_raw=True)
    print(f"\nA 60 s video at 30 fps (50 sections, 1801 frames, 416x960): raw frames {gib(plan.disk['raw'])} GiB, "
          f"spill {gib(plan.disk['spill'])} GiB (temporary), video ~{plan.disk['video'] / MiB:.0f} MiB (estimate).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="The planner's predictions for the full-size model, as Markdown.")
    parser.add_argument("--sections", type=int, default=2, help="run length in sections (default 2)")
    args = parser.parse_args(argv)
    offload_table(args.sections)
    choice_table(args.sections)
    parts_table(args.sections)
    checkpoint_table()


if __name__ == "__main__":
    main()
