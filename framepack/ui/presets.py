"""Load settings and named presets: settings JSON back into the tab's controls.

Three sources give the same JSON, `{"settings": request.settings(), "output": options}`: the tags
a video made by this tool carries (framepack.io.embedded, the reader `generate --from` uses), a
finished job's record (the jobs panel's history) and a named preset (saved by the tab into the
`settings` folder of the output folder). Every value is validated by the request and output
models before any control changes: a forged file gets one error naming the field, and nothing is
applied. Images are never embedded: the start image, end image and keyframes stay as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from framepack.errors import FramePackError, InputError
from framepack.ui.media_values import lora_choices, media_control_values, sync_lora_weights
from framepack.ui.values import BASE_DEFAULTS, OUTPUT_NAMES, VALUE_NAMES, labelled, validate

IMAGE_NAMES = ("image", "end_image", "keyframes")
SETTING_NAMES = tuple(name for name in VALUE_NAMES if name not in IMAGE_NAMES)
"""The controls Load settings fills: every one but the images."""
REQUEST_NAMES = tuple(name for name in SETTING_NAMES if name not in OUTPUT_NAMES)
PRESETS_FOLDER = "settings"
MAX_PRESET_BYTES = 256 * 1024
MAX_PRESET_NAME = 80
MAX_PRESETS_LISTED = 500


def control_values(data: Any, source: str, host) -> dict[str, Any]:
    """Settings JSON -> {control name: value} for every setting control; InputError naming the field."""
    from framepack.io.embedded import embedded_from

    embedded = embedded_from(data, source, REQUEST_NAMES, OUTPUT_NAMES, label="Load settings")
    values = {**BASE_DEFAULTS, "image": None, "end_image": None, "keyframes": []}
    values.update(embedded.request)
    values.update(embedded.output)
    # LoRAs and model files by their names in this host's folders (never a path from the file)
    values.update(media_control_values(data["settings"], embedded_output(data), host))
    if values.get("blank_start") is None:
        values["blank_start"] = BASE_DEFAULTS["blank_start"]
    if values.get("shift") is None:
        values["shift"] = 0.0
    try:
        validate(values, host)
    except InputError as error:
        raise InputError(f"Load settings: {source}: {error}") from None
    return {name: values[name] for name in SETTING_NAMES}


def embedded_output(data: Any) -> dict[str, Any]:
    output = data.get("output") if isinstance(data, dict) else None
    return output if isinstance(output, dict) else {}


def from_video(path: str, host) -> dict[str, Any]:
    """The settings embedded in a video or raw frames file made by this tool."""
    from framepack.io.reader import open_frames

    try:
        with open_frames(path) as source:
            data = source.settings
    except FramePackError as error:
        raise InputError(f"Load settings: {error}") from None
    return control_values(data, Path(path).name, host)


def from_job(job_queue, job_id: str, host) -> dict[str, Any]:
    """The settings of a job the queue still remembers."""
    job = job_queue.get(job_id) if job_id else None
    if job is None:
        raise InputError(f"Load settings: job {job_id!r} is no longer in the history")
    settings = dict(job.record.settings)
    output = settings.pop("output", {})
    return control_values({"settings": settings, "output": output}, f"job {job_id}", host)


def stored_values(stored: str) -> dict[str, Any]:
    """The browser's copy of the last Generate's values (a JSON list in VALUE_NAMES order, images left out)."""
    try:
        items = json.loads(stored or "[]")
    except ValueError:
        items = []
    if not isinstance(items, list) or len(items) != len(VALUE_NAMES):
        raise InputError("no last settings stored in this browser")
    return dict(zip(VALUE_NAMES, items))


def from_values(values: Mapping[str, Any], host) -> dict[str, Any]:
    """Control values (the page's last Generate, kept by the browser) checked like a preset; a LoRA
    no longer in the LoRA folder is left out rather than losing every other setting."""
    picked = values.get("loras") if isinstance(values.get("loras"), list) else []
    kept = [name for name in picked if name in set(lora_choices(host))]
    if kept != picked:
        values = {**values, "loras": kept, "lora_weights": sync_lora_weights(kept, values.get("lora_weights"))}
    request, options = validate({**values, "image": None, "end_image": None, "keyframes": []}, host)
    return control_values(preset_json(request, options), "last settings", host)


def preset_json(request, options) -> dict[str, Any]:
    return {"settings": request.settings(), "output": options.model_dump(mode="json")}


# ----------------------------------------------------------------------------- named presets

def presets_folder(host) -> Path:
    return Path(host.video_dir()) / PRESETS_FOLDER


def preset_name(name: Any) -> str:
    """A preset's file stem: the user's name made one safe file name; InputError when nothing is left."""
    from framepack.io.paths import sanitize_filename

    text = str(name or "").strip()[:MAX_PRESET_NAME]
    if not text:
        raise InputError("Preset name: write a name first")
    return sanitize_filename(text, fallback="preset")


def list_presets(host) -> list[str]:
    folder = presets_folder(host)
    try:
        names = sorted(path.stem for path in folder.glob("*.json") if path.is_file())
    except OSError:
        return []
    return names[:MAX_PRESETS_LISTED]


def save_preset(host, name: Any, values: Mapping[str, Any]) -> str:
    """Validate the controls and write them as `<output>/settings/<name>.json` (atomically); returns the name."""
    stem = preset_name(name)
    try:
        request, options = validate({**values, "image": None, "end_image": None, "keyframes": []}, host)
    except InputError as error:
        raise InputError(f"Preset not saved: {error}") from None
    folder = presets_folder(host)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}.json"
    partial = folder / f".{stem}.json.partial"
    partial.write_text(json.dumps(preset_json(request, options), indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, target)
    return stem


def load_preset(host, name: Any) -> dict[str, Any]:
    stem = preset_name(name)
    path = presets_folder(host) / f"{stem}.json"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PRESET_BYTES + 1)
    except OSError:
        raise InputError(f"Preset {stem!r} not found in {presets_folder(host)}") from None
    if len(raw) > MAX_PRESET_BYTES:
        raise InputError(f"Preset {stem!r}: larger than {MAX_PRESET_BYTES // 1024} KB, not a preset")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"Preset {stem!r}: not valid JSON") from None
    return control_values(data, f"preset {stem}", host)


def problem_text(error: FramePackError) -> str:
    return "; ".join(labelled(problem) for problem in error.problems())
