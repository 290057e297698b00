"""Choose how a run uses memory: the fastest offload and VAE tiling that fit a VRAM/RAM budget.

`plan_resources` predicts one configuration; `choose_resources` picks, for a VRAM/RAM budget, the
fastest offload that fits (none > model > group > sequential) and turns VAE tiling on only when
the untiled decode would not fit; when nothing fits it raises `ResourceError` naming what would
(another offload, tiling, fp8/int8/int4, a lower resolution).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from framepack.errors import InputError
from framepack.models.resources import OFFLOAD_ORDER, GiB, ResourcePlan, plan_resources, quantization_scheme

TILING_CHOICES = ("auto", "on", "off")


class ResourceError(InputError):
    """The run does not fit the budget; `suggestions` lists settings that would."""

    def __init__(self, message: str, suggestions: Iterable[str] = ()):
        super().__init__(message)
        self.suggestions = tuple(suggestions)


def choose_resources(vram_budget_bytes: int | None, ram_budget_bytes: int | None, *, offload: str = "auto",
                     vae_tiling: str = "auto", **inputs) -> ResourcePlan:
    """The fastest configuration that fits the budgets (None = unlimited).

    `offload` auto tries none > model > group > sequential; `vae_tiling` auto keeps the decode
    untiled unless it would not fit. Forced values are planned as given. Raises `ResourceError`
    with what would fit when nothing does.
    """
    offload = str(offload or "auto").strip().lower()
    tiling = str(vae_tiling or "auto").strip().lower()
    if offload not in ("auto", *OFFLOAD_ORDER):
        raise InputError(f"unknown offload mode {offload!r}; choose one of: auto, {', '.join(OFFLOAD_ORDER)}")
    if tiling not in TILING_CHOICES:
        raise InputError(f"unknown vae_tiling {vae_tiling!r}; choose one of: {', '.join(TILING_CHOICES)}")
    plan, tried = _search(vram_budget_bytes, ram_budget_bytes, inputs, offload, tiling)
    if plan is not None:
        return plan
    closest = _closest(tried, vram_budget_bytes)
    suggestions = _what_would_fit(vram_budget_bytes, ram_budget_bytes, inputs, offload, tiling)
    raise ResourceError(_refusal(closest, vram_budget_bytes, ram_budget_bytes, suggestions), suggestions)


def _closest(tried: list[ResourcePlan], vram: int | None) -> ResourcePlan:
    """The plan to explain a refusal with: the first that fits the VRAM (so RAM is the problem),
    else the one that needs the least VRAM."""
    for plan in tried:
        if plan.fits(vram, None):
            return plan
    return min(tried, key=lambda p: (p.vram_needed_bytes(), p.ram_needed_bytes()))


def _search(vram: int | None, ram: int | None, inputs: Mapping[str, Any], offload: str = "auto",
            tiling: str = "auto") -> tuple[ResourcePlan | None, list[ResourcePlan]]:
    """First plan that fits, trying offload modes fastest first and untiled before tiled."""
    modes = OFFLOAD_ORDER if offload == "auto" else (offload,)
    if inputs.get("device", "cuda") == "cpu":
        modes = ("none",)
    tilings = {"auto": (False, True), "on": (True,), "off": (False,)}[tiling]
    tried = []
    for mode in modes:
        for tiled in tilings:
            plan = plan_resources(**{**inputs, "offload": mode, "vae_tiling": tiled})
            if plan.fits(vram, ram):
                return plan, tried
            tried.append(plan)
    return None, tried


def _refusal(plan: ResourcePlan, vram: int | None, ram: int | None, suggestions: list[str]) -> str:
    short = []
    if vram is not None and plan.vram_needed_bytes() > vram:
        short.append(f"{plan.vram_needed_bytes() / GiB:.1f} GiB of VRAM (budget {vram / GiB:.1f} GiB)")
    if ram is not None and plan.ram_needed_bytes() > ram:
        short.append(f"{plan.ram_needed_bytes() / GiB:.1f} GiB of RAM (budget {ram / GiB:.1f} GiB)")
    weights = plan.dtype if plan.quantization == "none" else plan.quantization
    head = (f"this run does not fit: at {plan.height}x{plan.width} with {weights} weights it needs "
            f"{' and '.join(short)} even with offload {plan.offload!r} and VAE tiling {_on(plan.vae_tiling)}")
    if not suggestions:
        return head + "; nothing smaller fits either: free memory or use a machine with more"
    return head + "; what would fit: " + "; ".join(suggestions)


def _what_would_fit(vram: int | None, ram: int | None, inputs: Mapping[str, Any], offload: str,
                    tiling: str) -> list[str]:
    """Alternatives that fit, cheapest change first: other offload/tiling, quantization, resolution."""
    found: list[str] = []
    if offload != "auto" or tiling != "auto":
        plan, _ = _search(vram, ram, inputs)
        if plan is not None:
            found.append(f"offload {plan.offload!r} with VAE tiling {_on(plan.vae_tiling)}")
    current = quantization_scheme(inputs.get("quantization", "none"))
    eight_bit = "int8" if inputs.get("device") == "mps" else "int8 or fp8"  # same size; MPS has no fp8
    for quant, label in (("int8", eight_bit), ("int4", "int4")):
        if quant == current or (quant == "int8" and current == "fp8"):
            continue
        plan, _ = _search(vram, ram, {**inputs, "quantization": quant})
        if plan is not None:
            found.append(f"{label} weights (offload {plan.offload!r}, VAE tiling {_on(plan.vae_tiling)})")
            break
    resolution = int(inputs.get("resolution", 640))
    for lower in range(resolution - 64, 239, -64):
        plan, _ = _search(vram, ram, _at_resolution(inputs, resolution, lower))
        if plan is not None:
            found.append(f"resolution {lower} (offload {plan.offload!r}, VAE tiling {_on(plan.vae_tiling)})")
            break
    return found


def _at_resolution(inputs: Mapping[str, Any], resolution: int, lower: int) -> dict[str, Any]:
    """`inputs` at a lower resolution; a given height and width (an image's bucket) scale with it
    on the 16 px grid, as the engine scales its buckets."""
    changed = {**inputs, "resolution": lower}
    if inputs.get("height") is not None and inputs.get("width") is not None:
        for key in ("height", "width"):
            changed[key] = max(16, round(int(inputs[key]) * lower / resolution / 16) * 16)
    return changed


def _on(flag: bool) -> str:
    return "on" if flag else "off"
