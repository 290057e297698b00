"""The settings a video (or raw frames file) made by this tool carries, read back.

The writers embed `{"settings": request.settings(), "output": options, "plan": ..., "seed": ...}`
(framepack.jobs.output); presets saved by the tab are the same JSON. Only the names asked for are
taken (the faces validate each value like any input, so a forged file gets an error naming the
field, never a crash). Images are not embedded (only their size); LoRA paths are never taken
from a file (a video from elsewhere must not make this machine read paths it names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

NOT_REUSED = frozenset({"image", "end_image", "keyframes", "loras", "upscaler", "interpolation_model"})
"""Never taken from a file: images (not embedded) and anything naming a file on this machine."""


@dataclass
class Embedded:
    """Request and output field values found in `source`, and the images it was made from (as described)."""

    source: str
    request: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)  # image / end_image / keyframes as described


def embedded_from(data: Any, source: str, request_fields: Iterable[str], output_fields: Iterable[str],
                  label: str = "settings") -> Embedded:
    """Pick the known names out of embedded settings JSON; InputError (prefixed with `label`) when malformed."""
    from framepack.errors import InputError

    settings = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(settings, dict) or not settings:
        raise InputError(f"{label}: {source!r} holds no FramePack settings (it was not made by this tool, "
                         f"or its tags were stripped)")
    output = data.get("output", {})
    if not isinstance(output, dict):
        raise InputError(f"{label}: {source!r}: the embedded setting 'output' is not a JSON object")
    embedded = Embedded(source)
    embedded.request = {name: settings[name] for name in request_fields
                        if name in settings and name not in NOT_REUSED}
    embedded.output = {name: output[name] for name in output_fields if name in output and name not in NOT_REUSED}
    embedded.images = {name: settings.get(name) for name in ("image", "end_image", "keyframes")}
    return embedded


def read_embedded(path: str, request_fields: Iterable[str], output_fields: Iterable[str],
                  label: str = "--from") -> Embedded:
    """The settings embedded in the file at `path`; InputError when absent or malformed."""
    from framepack.errors import FramePackError, InputError
    from framepack.io.reader import open_frames

    try:
        with open_frames(path) as source:
            data = source.settings
    except FramePackError as error:
        raise InputError(f"{label}: {error}") from None
    return embedded_from(data, path, request_fields, output_fields, label)
