"""Standalone LoRA through diffusers' loader (`HunyuanVideoLoraLoaderMixin` on our pipeline).

Inside SD.Next, LoRAs come from the prompt (`<lora:name:w>`) through the host's networks and
reach this module as files in the request; standalone they come from `--lora FILE[:weight]`
(several allowed), parsed once into the request's `LoraSpec`s. `lora_formats` reads each file and converts whatever layout it was saved in
(kohya/musubi, ComfyUI, diffusers, PEFT, original HunyuanVideo names) to diffusers' layout,
checked against the transformer; diffusers/PEFT then inject the layers (`load_lora_weights`),
weight them (`set_adapters`) and remove them (`unload_lora_weights`). What is ours here:

- one adapter per file, named after the file *and* its size and modification time, so
  `apply_loras` can be called before every run with the wanted list: files already loaded are
  only re-weighted (no reload of the model or the LoRA), files no longer listed are deleted, a
  file changed on disk is loaded again;
- files are checked first (missing, not `.safetensors`, listed twice), every new file is read
  and converted before any is injected, and a failure leaves no new adapter behind; errors are
  an `InputError` / `ModelError` naming the file, never a PEFT traceback;
- LoRA works on a quanto-quantized transformer (PEFT wraps quanto's Linear subclass) but not on
  an NNCF-compressed one, which is refused. Quantize first, then apply LoRAs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from framepack.errors import InputError, ModelError
from framepack.models.lora_formats import ConvertedLora, read_lora
from framepack.request.model import LoraSpec

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors",)  # pickled .bin/.pt files can run code when loaded: not accepted


@dataclass(frozen=True)
class AppliedLora:
    name: str  # the adapter name inside the transformer
    path: Path
    weight: float


# ----------------------------------------------------------------------------- specs


def _as_spec(item: LoraSpec | tuple[Any, float]) -> LoraSpec:
    """A `LoraSpec`, or a `(path, weight)` pair made into one (typed data; text is parsed by `LoraSpec.parse`)."""
    if isinstance(item, LoraSpec):
        return item
    path, weight = item
    return LoraSpec(path=os.fspath(path), weight=float(weight))


# ----------------------------------------------------------------------------- checks


def check_lora_file(path: str | os.PathLike) -> Path:
    """The resolved path of an existing `.safetensors` file, else an `InputError`."""
    file = Path(os.path.expanduser(os.fspath(path))).resolve()
    if not file.exists():
        raise InputError(f"LoRA file not found: {path}")
    if not file.is_file():
        raise InputError(f"LoRA path is not a file: {path}")
    if file.suffix.lower() not in LORA_SUFFIXES:
        raise InputError(f"LoRA {file.name}: only .safetensors files are loaded (pickled files can run code)")
    return file


def peft_available() -> bool:
    """diffusers injects LoRA layers with PEFT; without it no LoRA can be loaded."""
    try:
        from diffusers.utils import USE_PEFT_BACKEND
    except ImportError:  # pragma: no cover - diffusers always has it
        return False
    return bool(USE_PEFT_BACKEND)


def _require_peft() -> None:
    if not peft_available():
        raise ModelError("LoRA needs the peft package (diffusers loads LoRAs through it); install peft")


def _check_quantization(pipe: Any) -> None:
    """NNCF finds its weight decompressors by module path; PEFT's wrappers move the layers, so
    an NNCF-compressed layer would run on raw int8 weights. quanto layers wrap fine."""
    from framepack.models.quantize import quantized_with

    if quantized_with(getattr(pipe, "transformer", None)) == "nncf":
        raise ModelError("LoRA cannot be applied to an NNCF-compressed transformer; "
                         "use quanto quantization (or none) together with LoRA")


def adapter_name(path: Path) -> str:
    """`<stem>_<hash of path, size, mtime>`: stable while the file is unchanged, a valid module key."""
    stat = path.stat()
    digest = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"[^0-9A-Za-z_]", "_", path.stem)[:40] or "lora"
    return f"{stem}_{digest}"


# ----------------------------------------------------------------------------- apply / unload


def loaded_adapters(pipe: Any) -> list[str]:
    """Names of the adapters loaded into the transformer (empty without peft)."""
    if not peft_available():
        return []
    try:
        return list(pipe.get_list_adapters().get("transformer", []))
    except (AttributeError, ValueError):
        return []


def _headline(exc: BaseException, limit: int = 400) -> str:
    """First line of an error, plus the next one when the first only announces a list (torch's
    "Error(s) in loading state_dict for X:" is followed by the useful "size mismatch ..." line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# diffusers/PEFT warnings that are expected here: several adapters on one model is the point, and
# PEFT notes that a LoRA for `proj_out` also names the single blocks' `proj_out` (it injects only
# what the state dict holds).
_EXPECTED_WARNINGS = ("Already found a `peft_config` attribute", "an inconsistency was discovered between the PEFT")


def _inject(pipe: Any, path: Path, name: str, lora: ConvertedLora) -> None:
    """Let diffusers/PEFT add the converted LoRA as adapter `name`."""
    try:
        with warnings.catch_warnings():
            for message in _EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=".*" + re.escape(message))
            pipe.load_lora_weights(lora.state_dict, adapter_name=name)
    except Exception as exc:  # noqa: BLE001 - PEFT/diffusers errors become one line naming the file
        raise ModelError(f"LoRA {path.name} does not fit the FramePack transformer: "
                         f"{type(exc).__name__}: {_headline(exc)}") from exc
    if name not in loaded_adapters(pipe):
        raise ModelError(f"LoRA {path.name}: none of its keys match the FramePack transformer "
                         "(is it a LoRA for another model?)")
    log.info("LoRA %s: %s, %d layers -> %d transformer layers", path.name, lora.format, lora.layers,
             lora.targets)


def apply_loras(pipe: Any, specs: Sequence[LoraSpec | tuple[Any, float]]) -> list[AppliedLora]:
    """Make exactly `specs` active on the transformer, with their weights; return what is active.

    `specs`: `LoraSpec`s (a request's `loras`) or `(path, weight)` pairs. Files already loaded are
    only re-weighted; adapters not listed are deleted; an empty list unloads all.
    """
    wanted: dict[str, AppliedLora] = {}
    for item in specs:
        spec = _as_spec(item)
        file = check_lora_file(spec.path)
        if not math.isfinite(spec.weight):
            raise InputError(f"LoRA {file.name}: weight must be a finite number")
        name = adapter_name(file)
        if name in wanted:
            raise InputError(f"LoRA {file.name} is listed twice; give it once with the weight you want")
        wanted[name] = AppliedLora(name, file, float(spec.weight))
    if not wanted:
        unload_loras(pipe)
        return []
    _require_peft()
    _check_quantization(pipe)
    loaded = loaded_adapters(pipe)
    # every new file is read and checked before anything changes, and an injection that fails
    # removes the new adapters again
    new = {name: read_lora(lora.path, pipe.transformer) for name, lora in wanted.items() if name not in loaded}
    stale = [name for name in loaded if name not in wanted]
    if stale:
        pipe.delete_adapters(stale)
    injected: list[str] = []
    try:
        for name, converted in new.items():
            _inject(pipe, wanted[name].path, name, converted)
            injected.append(name)
    except Exception:
        if injected:
            pipe.delete_adapters(injected)
        raise
    pipe.set_adapters(list(wanted), [lora.weight for lora in wanted.values()])
    log.info("LoRA: %s", ", ".join(f"{lora.path.name}:{lora.weight:g}" for lora in wanted.values()))
    return list(wanted.values())


class LoraSchedule:
    """Sets each section's LoRA weights at the section's start (the loop's `on_section_start`).

    The adapters stay loaded for the whole run: a section only re-weights them (PEFT's
    `set_adapters`, a scale per layer; no reload), and only when its weights differ from the
    previous section's. Weight 0 adds exactly nothing to a layer's output.
    """

    def __init__(self, pipe: Any, applied: Sequence[AppliedLora]):
        self.pipe = pipe
        self.names = [lora.name for lora in applied]
        self.current = tuple(lora.weight for lora in applied)

    def __call__(self, section: Any) -> None:
        weights = tuple(float(weight) for weight in section.lora_weights)
        if len(weights) != len(self.names):
            raise ValueError(f"section {section.number} has {len(weights)} LoRA weights for {len(self.names)} LoRAs")
        if weights != self.current:
            self.pipe.set_adapters(self.names, list(weights))
            self.current = weights
            log.debug("LoRA weights for section %d: %s", section.number, weights)


def section_schedule(pipe: Any, applied: Sequence[AppliedLora], plan: Any) -> LoraSchedule | None:
    """A `LoraSchedule` for the plan's per-section weights (None without LoRAs).

    `apply_loras` sets each LoRA's weight elsewhere; the schedule sets the sections' own weights,
    and costs nothing in a section whose weights are already set.
    """
    if not applied:
        return None
    return LoraSchedule(pipe, applied)


def unload_loras(pipe: Any) -> None:
    """Remove every LoRA layer from the transformer (its weights are exactly the original again)."""
    if loaded_adapters(pipe):
        pipe.unload_lora_weights()
