"""The tab's LoRA picker, upscaling, RIFE and Tiny VAE values: their choices and how they become a request.

Plain values, no Gradio (the controls are `framepack.ui.media_controls`). The tab, like the REST
API, never takes a path: LoRAs are names from the LoRA folder (setting `framepack_lora_dir`),
upscaler and RIFE models names from the model folder (`framepack_model_dir`), resolved here
through the host's `lora_folder()` / `model_folder()` (`framepack.models.library.ModelFolder`:
nothing outside the folder). Inside SD.Next the host adds its own tools (`sdnext:<upscaler>`,
`sdnext:RIFE`), which the job checks against the host when it is submitted.

The picker's weights are one line per LoRA, `name: WEIGHT` or a schedule in the CLI's syntax,
`name: 0.8@1-3` (0.8 in sections 1-3, off elsewhere) or `name: 0.3,1@4`; each line becomes a
`LoraSpec` exactly as `--lora FILE:0.8@1-3` does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from framepack.errors import FramePackError, InputError, InputErrors
from framepack.request.output import HOST_MODEL_PREFIX, is_host_model

log = logging.getLogger("framepack")

LANCZOS = "lanczos"
HOST_RIFE = f"{HOST_MODEL_PREFIX}RIFE"
NO_MODEL = "none"
"""The RIFE model choice "none" (model files are listed with their `.safetensors`, so no file is called this)."""

MEDIA_DEFAULTS: dict[str, Any] = {"loras": [], "lora_weights": "", "upscale": 1.0, "upscaler": LANCZOS,
                                  "interpolation_model": NO_MODEL, "tiny_vae_decode": False}
MEDIA_LABELS = {"loras": "LoRA", "lora_weights": "LoRA weights", "upscale": "Upscale", "upscaler": "Upscaler",
                "interpolation_model": "RIFE model", "tiny_vae_decode": "Tiny VAE decode"}
OUTPUT_MEDIA_NAMES = ("upscale", "upscaler", "interpolation_model")


# ----------------------------------------------------------------------------- choices

def _folder(host, method: str):
    getter = getattr(host, method, None)
    return getter() if callable(getter) else None


def _names(host, method: str) -> list[str]:
    """The `.safetensors` names of one of the host's model folders ([] without one, or when unreadable)."""
    folder = _folder(host, method)
    if folder is None:
        return []
    try:
        return folder.names()
    except OSError as error:  # an unreadable folder must not break the tab
        log.warning("FramePack tab: cannot list the %s folder: %s", folder.kind, error)
        return []


def has_host_media(host) -> bool:
    """Whether the host brings its own upscalers and RIFE (SD.Next)."""
    return callable(getattr(host, "host_upscaler_names", None))


def lora_choices(host) -> list[str]:
    return _names(host, "lora_folder")


def upscaler_choices(host) -> list[str]:
    """Lanczos, the model folder's files, and inside SD.Next its upscalers (`sdnext:<name>`)."""
    host_names: list[str] = []
    if has_host_media(host):
        try:
            host_names = list(host.host_upscaler_names())
        except Exception as error:  # noqa: BLE001 - the host's list failing leaves ours
            log.warning("FramePack tab: SD.Next's upscaler list failed: %s", error)
    return [LANCZOS, *_names(host, "model_folder"), *host_names]


def rife_choices(host) -> list[str]:
    """The RIFE models: none, SD.Next's RIFE (inside SD.Next), the model folder's files."""
    return [NO_MODEL, *([HOST_RIFE] if has_host_media(host) else []), *_names(host, "model_folder")]


def default_rife(host) -> str:
    return HOST_RIFE if has_host_media(host) else NO_MODEL


def enhancer_available(host) -> bool:
    """The prompt enhancer button shows when the host has one (SD.Next with its VLM enhancer)."""
    if not callable(getattr(host, "enhance_prompt", None)):
        return False
    models = getattr(host, "enhancer_models", None)
    try:
        return bool(models()) if callable(models) else True
    except Exception:  # noqa: BLE001 - no list, no button
        return False


# ----------------------------------------------------------------------------- LoRA weights text

def parse_lora_weights(text: Any) -> dict[str, str]:
    """`name: WEIGHT[@WHEN][,...]` lines -> {name: weight text}; blank lines and `#` comments skipped."""
    weights: dict[str, str] = {}
    for number, raw in enumerate(str(text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, weight = line.rpartition(":")  # names never hold a colon; weights never do
        if not colon or not name.strip():
            raise InputError(f"line {number}: write `name: weight` (e.g. `style: 0.8` or `style: 0.8@1-3`), "
                             f"got {line[:60]!r}", ("lora_weights",))
        name = name.strip()
        if name in weights:
            raise InputError(f"line {number}: {name!r} is given twice", ("lora_weights",))
        weights[name] = weight.strip()
    return weights


def sync_lora_weights(selected: Sequence[str] | None, text: Any) -> str:
    """The weights text after the picker changed: a line per selected LoRA, in the picker's order;
    weights already written are kept, a new LoRA starts at 1 (lines that do not parse are kept as they are)."""
    try:
        known = parse_lora_weights(text)
    except InputError:
        return str(text or "")
    return "\n".join(f"{name}: {known.get(name) or '1'}" for name in (selected or []))


def lora_specs(selected: Sequence[str] | None, weights_text: Any, host=None) -> list:
    """The picker's LoRAs as `LoraSpec`s on the LoRA folder's files; `InputErrors` naming each bad one.

    Without a `host` the specs keep the picked names as their paths (the live plan needs only the
    weights and a label)."""
    names = [str(name) for name in (selected or [])]
    if not names:
        if str(weights_text or "").strip() and parse_lora_weights(weights_text):
            raise InputError("weights are given but no LoRA is selected", ("lora_weights",))
        return []
    weights = parse_lora_weights(weights_text)
    stray = [name for name in weights if name not in names]
    if stray:
        raise InputError(f"{', '.join(map(repr, stray))} is not selected in the LoRA list", ("lora_weights",))
    folder = None if host is None else _folder(host, "lora_folder")
    if host is not None and folder is None:
        raise InputError("this host has no LoRA folder", ("loras",))
    specs, problems = [], []
    for index, name in enumerate(names):
        try:
            path = name if folder is None else str(folder.resolve(name, ("loras", index)))
            specs.append(_weighted(name, weights.get(name) or "1").model_copy(update={"path": path}))
        except FramePackError as error:
            problems.extend(error.problems())
    if problems:
        raise InputErrors(problems)
    return specs


def _weighted(name: str, weight: str):
    """A `LoraSpec` (placeholder path) of one weights line's text, in `--lora`'s syntax; errors at `lora_weights`."""
    from framepack.request.model import LoraSpec, validated

    try:  # the weight text alone, with a placeholder name: a folder path may hold colons
        spec = validated(LoraSpec, f"lora:{weight}")
    except FramePackError as error:
        raise InputErrors(InputError(f"{name}: {problem.message}", ("lora_weights",))
                          for problem in error.problems()) from None
    if spec.path != "lora":  # not a number: LoraSpec would have read it as part of a file name
        raise InputError(f"{name}: {weight!r} is not a weight (write 0.8, 0.8@1-3 or 0.3,1@4)", ("lora_weights",))
    return spec


def lora_values(loras: Any, host) -> tuple[list[str], str]:
    """Settings JSON `loras` (a request's `settings()`) -> (picker names, weights text).

    Only LoRAs whose stored path lies inside this host's LoRA folder come back (compared as text,
    nothing outside the folder is read): a file from elsewhere never makes the tab name a path.
    """
    from framepack.request.model import LoraSpec, validated

    folder = _folder(host, "lora_folder")
    names, lines = [], []
    for entry in loras if isinstance(loras, list) else []:
        try:
            spec = validated(LoraSpec, entry)
        except FramePackError:
            continue
        name = folder_name(spec.path, folder)
        if name is None or name in names:
            continue
        names.append(name)
        lines.append(f"{name}: {str(spec).rpartition(':')[2]}")
    return names, "\n".join(lines)


def folder_name(path: Any, folder) -> str | None:
    """A stored file path as its name in `folder` (None when it is not inside it); text only."""
    root = getattr(folder, "folder", None)
    if not isinstance(path, str) or root is None:
        return None
    try:
        relative = Path(path).relative_to(Path(root).expanduser().resolve())
    except ValueError:
        return None
    name = relative.as_posix()
    return name if name and ".." not in relative.parts else None


def model_value(value: Any, host, default: str) -> str:
    """A stored `upscaler` / `interpolation_model` -> the control's value: the built-in and host names
    as they are, a model file as its name in the model folder, anything else the default."""
    if value in (None, ""):
        return default
    if value == LANCZOS or is_host_model(value):
        return value
    return folder_name(value, _folder(host, "model_folder")) or default


# ----------------------------------------------------------------------------- tab values <-> request

def request_media_fields(values: Mapping[str, Any], host) -> dict[str, Any]:
    """The picker's LoRAs and the Tiny VAE switch as `GenerationRequest` fields."""
    return {"loras": lora_specs(values.get("loras"), values.get("lora_weights"), host),
            "tiny_vae_decode": bool(values.get("tiny_vae_decode"))}


def output_media_fields(values: Mapping[str, Any], host) -> dict[str, Any]:
    """Upscale factor, upscaler and RIFE model as `OutputOptions` fields (model names -> the folder's files).

    The RIFE model is sent only with the interpolation method `rife` (its only reader)."""
    upscale = values.get("upscale")
    upscale = 1.0 if upscale in (None, "") else upscale
    upscaler = str(values.get("upscaler") or LANCZOS)
    rife = values.get("interpolation_model")
    if values.get("interpolation_method") != "rife" or rife in (None, "", NO_MODEL):
        rife = None
    fields = {"upscale": upscale, "upscaler": upscaler, "interpolation_model": rife}
    folder = _folder(host, "model_folder")
    for name in ("upscaler", "interpolation_model"):
        value = fields[name]
        if not value or value == LANCZOS or is_host_model(value):
            continue
        if name == "upscaler" and _number_like(upscale) == 1.0:
            fields[name] = LANCZOS  # no upscaling: the model is not needed (nor loaded)
            continue
        if folder is None:
            raise InputError("this host has no model folder", ("output", name))
        fields[name] = str(folder.resolve(value, ("output", name)))
    return fields


def media_control_values(settings: Mapping[str, Any], output: Mapping[str, Any], host) -> dict[str, Any]:
    """Settings JSON (a video's, a job's, a preset's) -> the media controls' values."""
    names, weights = lora_values(settings.get("loras"), host)
    upscale = output.get("upscale", MEDIA_DEFAULTS["upscale"])
    return {"loras": names, "lora_weights": weights,
            "upscale": upscale if isinstance(upscale, (int, float)) and not isinstance(upscale, bool) else 1.0,
            "upscaler": model_value(output.get("upscaler"), host, LANCZOS),
            "interpolation_model": model_value(output.get("interpolation_model"), host, default_rife(host)),
            "tiny_vae_decode": settings.get("tiny_vae_decode") is True}


def _number_like(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def choices_with(choices: Iterable[str], current: Any) -> list[str]:
    """Choices keeping the current value(s) no longer among them (refused at Generate, by name, not dropped)."""
    items = list(choices)
    for value in current if isinstance(current, (list, tuple)) else [current]:
        if value not in (None, "") and value not in items:
            items.append(str(value))
    return items
