"""`generate --from FILE`: the settings a video (or raw frames file) made by this tool carries.

The writers embed `{"settings": request.settings(), "output": options, "plan": ..., "seed": ...}`
(framepack.jobs.output). Only the fields a flag could set are taken, each value is validated by
the request model like any flag (so a forged file gets an error naming the field, never a
crash), and a flag given on the command line always wins. Images are not embedded (only their
size), so `--image`, `--end-image` and `--keyframe` are given again; LoRA paths are never taken
from a file (a video from elsewhere must not make this machine read paths it names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOT_REUSED = frozenset({"image", "end_image", "keyframes", "loras"})


@dataclass
class Embedded:
    """What `--from` found: request and output field values, and the images the video was made from."""

    source: str
    request: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)  # image / end_image / keyframes as described


def read_embedded(path: str, request_fields, output_fields) -> Embedded:
    """The settings in `path` restricted to `request_fields` / `output_fields`; InputError when absent or malformed."""
    from framepack.errors import FramePackError, InputError
    from framepack.io.reader import open_frames

    try:
        with open_frames(path) as source:
            data = source.settings
    except FramePackError as error:
        raise InputError(f"--from: {error}") from None
    settings = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(settings, dict) or not settings:
        raise InputError(f"--from: {path!r} holds no FramePack settings (it was not made by this tool, "
                         f"or its tags were stripped)")
    output = data.get("output", {})
    if not isinstance(output, dict):
        raise InputError(f"--from: {path!r}: the embedded setting 'output' is not a JSON object")
    embedded = Embedded(path)
    embedded.request = {name: settings[name] for name in request_fields
                        if name in settings and name not in NOT_REUSED}
    embedded.output = {name: output[name] for name in output_fields if name in output}
    embedded.images = {name: settings.get(name) for name in ("image", "end_image", "keyframes")}
    return embedded


def missing_images(embedded: Embedded, image, end_image, keyframes) -> tuple[list[str], list[str]]:
    """(errors, notes) about the images `embedded` was made from that the command line does not give
    again: the start image is required; a missing end image or keyframes is allowed but said."""
    errors, notes = [], []
    described = embedded.images
    if described.get("image") and image is None:
        errors.append(f"--image: {embedded.source!r} was made from a {_shown(described['image'])} start image, "
                      f"which is not embedded in it; give it again with --image")
    if described.get("end_image") and end_image is None:
        notes.append(f"{embedded.source!r} was made with an end image; this run has none (--end-image)")
    wanted = described.get("keyframes")
    if isinstance(wanted, list) and wanted and not keyframes:
        notes.append(f"{embedded.source!r} was made with {len(wanted)} keyframe(s); this run has none (--keyframe)")
    return errors, notes


def _shown(description: Any) -> str:
    return str(description)[:40] if isinstance(description, str) else "given"
