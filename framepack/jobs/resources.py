"""A job's resource plan: the request and output options, on the host's machine, through the planner.

`framepack.models.resources` predicts from plain numbers; this module says which numbers a
request means (bucket, sections, prompts, raw frames...) and which machine it runs on (a
`Machine`: device kind, the VRAM/RAM budget, and the offload, quantization and VAE tiling
settings). Hosts describe their machine (`Host.resource_machine()`); `framepack_cli.py plan
--vram/--ram` describes another one. A run predicted not to fit is refused at submission with
what would fit, located at the request's `resolution` (the one thing a request can lower).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from framepack.errors import InputError
from framepack.models.resource_choice import ResourceError, choose_resources
from framepack.models.resources import GiB, ResourcePlan, plan_resources

RESOURCE_KEYS = ("vram_peak_bytes", "ram_peak_bytes", "disk_bytes", "seconds", "offload", "vae_tiling")
"""What `plan --json`, `POST /plan` and the job record report of a plan."""

RESOURCE_FIELD = ("resolution",)
"""Where a refusal is located: the request field that can always make a run smaller."""


@dataclass(frozen=True)
class Machine:
    """Where a job will run and how it may use memory.

    `vram_bytes` / `ram_bytes`: the budget (None = unknown, not limited). `offload` is `auto` or
    a forced mode (none, model, group, sequential); `vae_tiling` is auto, on or off; `enforce`:
    refuse a run predicted not to fit (off where the host's own offload decides, as in SD.Next,
    and on a CPU, which only slows down when RAM runs short).
    """

    device: str = "cuda"
    vram_bytes: int | None = None
    ram_bytes: int | None = None
    offload: str = "auto"
    quantization: str = "none"
    vae_tiling: str = "auto"
    device_name: str | None = None
    enforce: bool = True
    configs: Mapping[str, Mapping[str, Any]] | None = None
    """Component configs of the model that will run (role -> config.json); None: the shipped ones."""

    @classmethod
    def local(cls, device: Any, *, offload: str = "auto", quantization: str = "none", vae_tiling: str = "auto",
              vram_gb: float | None = None, ram_gb: float | None = None,
              configs: Mapping[str, Mapping[str, Any]] | None = None) -> "Machine":
        """This computer's `device`, its free memory as the budget (or `vram_gb` / `ram_gb` given)."""
        import torch

        from framepack.models.offload import ACCELERATORS, available_ram_bytes

        kind = torch.device(device).type
        accelerator = kind in ACCELERATORS
        if not accelerator and vram_gb is not None:  # planning for another machine's GPU
            kind, accelerator = "cuda", True
        vram = _gigabytes(vram_gb) if vram_gb is not None else (
            _own_accelerator_bytes(device) if accelerator else None)
        ram = _gigabytes(ram_gb) if ram_gb is not None else available_ram_bytes()
        name = _device_name(device) if accelerator and vram_gb is None else None
        return cls(device=kind if accelerator else "cpu", vram_bytes=vram, ram_bytes=ram,
                   offload="auto" if offload == "host" else offload, quantization=quantization,
                   vae_tiling=vae_tiling, device_name=name, enforce=accelerator, configs=configs or None)


def _gigabytes(value: float) -> int:
    if not value > 0:
        raise InputError(f"a memory budget must be a positive number of GB, got {value!r}")
    return int(value * GiB)


def _own_accelerator_bytes(device: Any) -> int | None:
    """Free memory plus what this process's allocator already holds (its models count in the plan)."""
    import torch

    from framepack.models.offload import free_accelerator_bytes

    free = free_accelerator_bytes(device)
    if free is None:
        return None
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        free += int(torch.cuda.memory_reserved(device))
    return free


def _device_name(device: Any) -> str | None:
    import torch

    try:
        if torch.device(device).type == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_name(device)
    except Exception:  # noqa: BLE001 - the name only picks a speed entry
        return None
    return None


def workload_inputs(values: Mapping[str, Any], sections: int, distinct_prompts: int, *,
                    image_size: tuple[int, int] | None = None, save_raw: bool = False) -> dict[str, Any]:
    """`plan_resources` inputs for request field `values` (variant, resolution, latent_window_size,
    steps, cfg, teacache, teacache_threshold, max_prompt_tokens, interpolation). Without an image
    the largest bucket at the resolution is planned: the worst case for any image."""
    from framepack.engine.conditioning import pick_bucket

    inputs = {name: values[name] for name in ("variant", "resolution", "latent_window_size", "steps", "cfg",
                                              "teacache", "teacache_threshold", "max_prompt_tokens",
                                              "interpolation") if name in values}
    if image_size is not None:
        inputs["height"], inputs["width"] = pick_bucket(image_size[0], image_size[1], int(values["resolution"]))
    return {**inputs, "sections": sections, "distinct_prompts": max(1, distinct_prompts), "save_raw": save_raw}


def request_workload(request, options=None) -> dict[str, Any]:
    """`workload_inputs` of a `GenerationRequest` (and its `OutputOptions`)."""
    plan = request.plan()
    values = {name: getattr(request, name) for name in ("variant", "resolution", "latent_window_size", "steps",
                                                         "cfg", "teacache", "teacache_threshold",
                                                         "max_prompt_tokens", "interpolation")}
    image = request.image if request.image is not None else request.end_image
    size = None if image is None else (int(image.shape[0]), int(image.shape[1]))
    return workload_inputs(values, plan.num_sections, distinct_prompts(plan), image_size=size,
                           save_raw=bool(options is not None and options.save_frames))


def distinct_prompts(plan) -> int:
    """How many different prompts the sections use (each is encoded once)."""
    return len({section.section_text for section in plan.sections}) or 1


def assess(machine: Machine, workload: Mapping[str, Any]) -> tuple[ResourcePlan, str | None]:
    """(plan, refusal) for `workload` on `machine`: the fastest offload and tiling that fit and no
    refusal; or, when nothing fits, the most frugal plan with the settings given and the reason
    with what would fit."""
    inputs = {**workload, "device": machine.device, "quantization": machine.quantization,
              "device_name": machine.device_name, "configs": machine.configs}
    try:
        return choose_resources(machine.vram_bytes, machine.ram_bytes, offload=machine.offload,
                                vae_tiling=machine.vae_tiling, **inputs), None
    except ResourceError as error:
        frugal = choose_resources(None, None, offload=_most_frugal(machine), vae_tiling=_tiled(machine), **inputs)
        return frugal, str(error)


def plan_on(machine: Machine, workload: Mapping[str, Any]) -> ResourcePlan:
    """The plan for `workload` on `machine`. Raises an `InputError` at `resolution` with what would
    fit when `machine.enforce` and nothing fits; otherwise (a CPU, SD.Next's own offload) the most
    frugal plan is returned."""
    plan, refusal = assess(machine, workload)
    if refusal is not None and machine.enforce:
        raise InputError(refusal, RESOURCE_FIELD)
    return plan


def _most_frugal(machine: Machine) -> str:
    if machine.device == "cpu":
        return "none"
    return "sequential" if machine.offload == "auto" else machine.offload


def _tiled(machine: Machine) -> str:
    return "on" if machine.vae_tiling == "auto" else machine.vae_tiling


def resources_dict(plan: ResourcePlan, refusal: str | None = None) -> dict[str, Any]:
    """The `resources` object of `plan --json`, `POST /plan` and a job's state: the six predicted
    values, whether the run fits (`fits`) and, when it does not, why and what would (`refusal`)."""
    data = {key: getattr(plan, key) for key in RESOURCE_KEYS}
    data["seconds"] = None if plan.seconds is None else round(float(plan.seconds), 1)
    data.update(fits=refusal is None, refusal=refusal, device=plan.device, quantization=plan.quantization,
                height=plan.height, width=plan.width)
    return data


def resources_line(plan: ResourcePlan) -> str:
    """One line for the tab and the CLI: predicted VRAM, RAM, disk (and time when known)."""
    vram = "" if plan.device == "cpu" else f"VRAM {plan.vram_peak_bytes / GiB:.1f} GiB, "
    time = "" if plan.seconds is None else f", about {plan.seconds / 60:.0f} min"
    tiling = ", VAE tiled" if plan.vae_tiling else ""
    offload = "" if plan.device == "cpu" else f" (offload {plan.offload}{tiling})"
    return (f"{vram}RAM {plan.ram_peak_bytes / GiB:.1f} GiB, disk {plan.disk_bytes / GiB:.2f} GiB"
            f"{time}{offload}")


def plan_job(machine: Machine | None, request, options=None) -> ResourcePlan | None:
    """`plan_on` for a request; None when the host describes no machine."""
    if machine is None:
        return None
    return plan_on(machine, request_workload(request, options))


__all__ = ["Machine", "RESOURCE_KEYS", "assess", "plan_job", "plan_on", "request_workload", "resources_dict",
           "resources_line", "workload_inputs", "plan_resources"]
