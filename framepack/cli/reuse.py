"""`generate --from FILE`: the settings a video (or raw frames file) made by this tool carries
(read by framepack.io.embedded, shared with the tab's Load settings).

The writers embed `{"settings": request.settings(), "output": options, "plan": ..., "seed": ...}`
(framepack.jobs.output). Only the fields a flag could set are taken, each value is validated by
the request model like any flag (so a forged file gets an error naming the field, never a
crash), and a flag given on the command line always wins. Images are not embedded (only their
size), so `--image`, `--end-image` and `--keyframe` are given again; LoRA, upscaler and RIFE model
paths are never taken from a file (a video from elsewhere must not make this machine read paths
it names).
"""

from __future__ import annotations

from framepack.io.embedded import NOT_REUSED, Embedded, read_embedded  # noqa: F401 (the reader lives in io)


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
