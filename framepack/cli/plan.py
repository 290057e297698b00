"""`framepack_cli.py plan`: what a `generate` command would need, without running it.

The same arguments as `generate` (the flags come from framepack.cli.generate); prints the video
plan (sections, frames) and the resource plan on this machine, or on the one `--vram`/`--ram`
describe, with the offload and VAE tiling `auto` would pick. Loads no model.
"""

from __future__ import annotations

import json
import sys

from framepack.cli.generate import add_job_arguments, build_job, runtime_settings


def add_plan(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", help="predict VRAM, RAM, disk and time of a generate command without running it",
        description="Plan a run: the same arguments as generate; prints the sections and frames, and the "
                    "resources the run needs on this machine (or on the one --vram/--ram describe), with "
                    "the offload and VAE tiling auto would pick. Exits 2, saying what would fit, when the "
                    "run would not fit. Loads no model.")
    add_job_arguments(parser)
    machine = parser.add_argument_group("machine to plan for (default: this one)")
    machine.add_argument("--vram", type=float, metavar="GB", help="GPU memory to plan for, in GiB (plans a CUDA GPU)")
    machine.add_argument("--ram", type=float, metavar="GB", help="RAM to plan for, in GiB")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (with a resources object)")
    parser.set_defaults(func=run_plan)


def run_plan(args) -> int:
    """Print the video plan and the resource plan; exit 2 (saying what would fit) when it does not fit."""
    from framepack.errors import InputError
    from framepack.host.standalone import StandaloneHost
    from framepack.jobs.resources import Machine, assess, request_workload, resources_dict, resources_line
    from framepack.models.component_sizes import recipe_configs

    request, options = build_job(args)
    host = StandaloneHost(output_dir=args.out, model=args.model, cache_dir=args.cache_dir,
                          offline=True if args.offline else None, device=args.device, settings=runtime_settings(args))
    for flag, value in (("--vram", args.vram), ("--ram", args.ram)):
        if value is not None and not 0 < value < 1e6:
            raise InputError(f"{flag} {value!r}: give the memory in GiB, more than 0")
    runtime = host.runtime()
    machine = Machine.local(host.device, offload=runtime.offload, quantization=runtime.quantization,
                            vae_tiling=runtime.vae_tiling, vram_gb=args.vram, ram_gb=args.ram,
                            configs=recipe_configs(host.recipe(request.variant), host.cache_dir))
    resource_plan, refusal = assess(machine, request_workload(request, options))
    video = request.plan()
    if args.json:
        print(json.dumps({"summary": video.summary(), "plan": video.to_dict(),
                          "resources": resources_dict(resource_plan, refusal),
                          "resource_plan": resource_plan.to_dict()}, indent=2, default=str))
    else:
        print(f"plan: {video.summary()}")
        print(f"resources: {resources_line(resource_plan)}")
        print(f"  {resource_plan.summary()}")
    if refusal is not None and machine.enforce:
        print(f"error: --resolution: {refusal}", file=sys.stderr)
        return 2
    return 0
