"""SD.Next's `<lora:name[:weight]>` prompt tags -> `LoraSpec`s of the request.

The host supplies the syntax (`extra_networks.parse_prompt`) and the LoRA list
(`lora.lora_load.gather_networks`: the LoRA folder, sub-folders, aliases); diffusers' loader does
the loading, in the job, through `request.loras`. `modules.*` is imported inside functions only.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Mapping

from framepack.errors import InputError

log = logging.getLogger("framepack")


def prepare_request(request):
    """The request the engine runs: SD.Next's extra-network tags taken out of the text.

    `<lora:name[:weight]>` tags, as users write them in SD.Next (the Networks tab inserts
    them), are removed from the prompt, the negative prompt and the section prompts, and the
    names are looked up in SD.Next's LoRA list. The files found are added to `request.loras`,
    which the job applies with diffusers' LoRA loader right before sampling: adapters already
    loaded are only re-weighted, adapters no longer asked for are removed, so a run without
    tags is back to the plain model, and the model is never reloaded for a LoRA change.

    A LoRA applies to the whole video (also when its tag sits in one section's prompt).
    Weight: `<lora:name>` = SD.Next's "Default strength", `<lora:name:0.8>`, or `unet=0.8`;
    weight 0 skips the LoRA (as SD.Next does). Other tags (`<style:...>`, ...) are removed
    from the text with a warning. A request without tags is returned unchanged.
    SD.Next's own LoRA activation (`extra_networks.activate`) is deliberately not used; see
    `lora_tags_from_prompts`.
    """
    texts = {"prompt": request.prompt, "negative_prompt": request.negative_prompt,
             "section_prompts": request.section_prompts}
    stripped, loras, ignored = lora_tags_from_prompts(texts)
    if not loras and not ignored:
        return request
    from framepack.request.model import LoraSpec

    for tag in ignored:
        log.warning("FramePack: %s is not supported by FramePack; removed from the prompt", tag)
    files = resolve_loras(loras) if loras else []
    if files:
        log.info("FramePack LoRA from the prompt: %s",
                 ", ".join(f"{name}:{weight:g} ({Path(path).name})" for name, weight, path in files))
    added = (LoraSpec(path=path, weight=weight) for _, weight, path in files)
    return request.replace(**stripped, loras=(*request.loras, *added))


def resolve_loras(loras: dict[str, float]) -> list[tuple[str, float, str]]:
    """(name, weight, file) for every wanted LoRA, through SD.Next's LoRA list."""
    try:
        from modules.lora import lora_load
    except ImportError as error:
        raise InputError(f"SD.Next's LoRA support is not available ({error}); remove the <lora:...> tags") from None
    names = [name for name, weight in loras.items() if weight != 0]  # SD.Next skips weight-0 LoRAs
    if not names:
        return []
    try:
        found = lora_load.gather_networks(names)
    except Exception as error:  # noqa: BLE001 - the host's lookup failing is a job error, not a crash
        raise InputError(f"SD.Next could not look up LoRA {', '.join(names)}: "
                         f"{type(error).__name__}: {error}") from error
    missing = [name for name, entry in zip(names, found) if getattr(entry, "filename", None) is None]
    if missing:
        from modules import shared

        folder = getattr(getattr(shared, "cmd_opts", None), "lora_dir", None)
        raise InputError(f"LoRA not found: {', '.join(missing)} (SD.Next LoRA folder: {folder}); "
                         "use a name from the Networks tab (sub-folder/name also works)")
    files: dict[str, tuple[str, float, str]] = {}  # two names (name, alias) may be one file
    for name, entry in zip(names, found):
        key = os.path.normcase(os.path.abspath(entry.filename))
        if key in files and files[key][1] != loras[name]:
            raise InputError(f"LoRA {Path(entry.filename).name} is given twice with different weights "
                             f"({files[key][0]}:{files[key][1]:g} and {name}:{loras[name]:g}); give it once")
        files.setdefault(key, (name, loras[name], entry.filename))
    return list(files.values())


def lora_tags_from_prompts(texts: Mapping[str, str]) -> tuple[dict[str, str], dict[str, float], list[str]]:
    """Parse SD.Next extra-network tags with the host's own parser (`extra_networks.parse_prompt`).

    Returns (texts without the tags, {lora name: weight}, [ignored tags]).

    Why not SD.Next's `extra_networks.activate(p, data)`: for our pipeline it would take the
    host's "diffusers" LoRA method (`modules/lora/lora_overrides.get_method`: the model type is
    the class name, not in `allow_native`), i.e. `load_lora_weights` / `set_adapters` on the
    same transformer, whose adapters `run_job` manages (it unloads adapters it was not asked for
    right before sampling); its activation cache (`sd_model.loaded_loras`) would then believe a
    LoRA is still loaded when it is not; and `activate` only logs errors (an unknown name never
    fails the job). So the host supplies the syntax and the LoRA list, diffusers' loader (the
    one SD.Next would pick for this model too) does the loading, through `request.loras`.
    """
    from modules import extra_networks

    default = _default_multiplier()
    stripped: dict[str, str] = {}
    loras: dict[str, float] = {}
    ignored: list[str] = []
    for field_name, text in texts.items():
        if not text or "<" not in text:
            continue
        updated, found = extra_networks.parse_prompt(text)
        if not found:
            continue
        stripped[field_name] = _tidy(updated)
        for kind, params_list in found.items():
            if kind != "lora":
                ignored += [f"<{kind}:{':'.join(map(str, params.items))}>" for params in params_list]
                continue
            for params in params_list:
                name, weight = _lora_weight(params, default)
                if name in loras and loras[name] != weight:
                    raise InputError(f"LoRA {name} is given twice with different weights "
                                     f"({loras[name]:g} and {weight:g}); give it once")
                loras[name] = weight
    return stripped, loras, ignored


def _default_multiplier() -> float:
    """SD.Next's "Default strength" for a `<lora:name>` without a weight (1.0 when unset)."""
    from modules import shared

    try:
        return float(shared.opts.extra_networks_default_multiplier)
    except (AttributeError, KeyError, TypeError, ValueError):
        return 1.0


def _lora_weight(params, default: float) -> tuple[str, float]:
    """`ExtraNetworkParams` of one `<lora:...>` tag -> (name, transformer weight)."""
    positional = [str(item).strip() for item in params.positional]
    name = positional[0] if positional else ""
    if not name:
        raise InputError(f"empty LoRA tag <lora:{':'.join(map(str, params.items))}>; write <lora:name:weight>")
    text = params.named.get("unet", positional[1] if len(positional) > 1 else None)
    if text is None or str(text).strip() == "":
        return name, default
    try:
        weight = float(str(text).strip())
    except ValueError:
        raise InputError(f"<lora:{':'.join(map(str, params.items))}>: the weight must be a number, got {text!r} "
                         "(FramePack has no step-wise LoRA weights)") from None
    if not math.isfinite(weight):
        raise InputError(f"<lora:{':'.join(map(str, params.items))}>: the weight must be a finite number")
    return name, weight


def _tidy(text: str) -> str:
    """Text after removing tags: no doubled spaces, no blank edges (line breaks are kept)."""
    lines = [re.sub(r"[ \t]{2,}", " ", line).strip() for line in text.splitlines()]
    return "\n".join(lines).strip()
