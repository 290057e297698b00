"""JSON bodies -> the shared models, with every problem reported per field.

The REST API does not let FastAPI validate `GenerationRequest` itself: the model holds numpy
arrays (arbitrary types) and its model-level checks (start image or blank start, schedule
syntax, codec/container fit) report no field. Here a decoded JSON object is turned into a
`GenerationRequest` and an `OutputOptions`, and every pydantic or FramePack error becomes one
FastAPI-style item ``{"loc": ["body", field, ...], "msg": "...", "type": "..."}``.

Images arrive as base64 text or ``data:`` URLs and are decoded HERE to bytes; the request model
takes only image data (bytes, arrays), never a path, so a client can never name a server file.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any, Callable

from pydantic import ValidationError

from framepack.request.images import declared_pixels
from framepack.request.limits import MAX_KEYFRAMES, MAX_REQUEST_IMAGE_PIXELS, request_pixels_text
from framepack.errors import FramePackError
from framepack.jobs.output import OutputOptions
from framepack.jobs.request import GenerationRequest

OUTPUT_KEY = "output"
"""Body key holding the `OutputOptions` fields (the generation fields sit at the top level)."""

IMAGE_FIELDS = ("image", "end_image")
PLAN_FIELDS = ("duration", "fps", "interpolation", "latent_window_size", "variant", "prompt", "section_prompts")
"""Request fields the planner reads (plus the WHEN of each keyframe)."""

Loc = tuple  # ("body", field, index, ...)


class BodyError(Exception):
    """One or more field errors; the API answers them as 422 ``{"detail": items}``."""

    def __init__(self, items: list[dict[str, Any]]):
        super().__init__("; ".join(item["msg"] for item in items))
        self.items = items


def item(loc: Loc, msg: str, type_: str = "value_error") -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": type_}


# ----------------------------------------------------------------------------------- images

def _decode_image_text(value: Any, name: str, loc: Loc, errors: list, budget: list[int]) -> Any:
    """base64 / data URL text -> bytes; null or "" -> None; anything else is a field error.

    `budget` holds the pixels the request's images may still declare, all together: a request
    over it is refused from the headers, before any image is decoded.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.append(item(loc, f"{name}: expected a base64 string or a data URL, got {_json_type(value)}", "type_error"))
        return None
    text = value.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or ";base64" not in header:
            errors.append(item(loc, f"{name}: a data URL must be base64 encoded (data:image/png;base64,...)"))
            return None
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        errors.append(item(loc, f"{name}: not valid base64 image data"))
        return None
    if not data:
        errors.append(item(loc, f"{name}: the image data is empty"))
        return None
    try:
        pixels = declared_pixels(data, name)
    except FramePackError as error:
        errors.append(item(loc, str(error)))
        return None
    budget[0] -= pixels
    if budget[0] < 0:
        errors.append(item(loc, f"{name}: the images of this request are too large together; "
                                f"{request_pixels_text()}"))
        return None
    return data


# ----------------------------------------------------------------------------------- bodies

def parse_job_body(body: Any, default_output: dict[str, Any] | None = None
                   ) -> tuple[GenerationRequest, OutputOptions]:
    """Validate a POST /jobs body; raises BodyError listing every problem found."""
    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    errors: list[dict[str, Any]] = []
    fields = dict(body)
    output = fields.pop(OUTPUT_KEY, None)
    _check_unknown(fields, GenerationRequest.model_fields, errors, hint_fields=OutputOptions.model_fields)
    if fields.pop("loras", None):  # server file paths: never chosen by a remote client
        errors.append(item(("loras",), "loras: LoRA files are chosen on the server (SD.Next: <lora:name:weight> "
                                       "in the prompt; standalone: framepack_cli.py --lora), not through the API"))
    if _too_many_keyframes(fields.get("keyframes"), errors):
        fields.pop("keyframes")  # refused before a single one of them is decoded
    _decode_images(fields, errors)

    request = options = None
    try:  # strict: "8" is not a number and "yes" is not a boolean here, as in the JSON schema
        request = GenerationRequest.model_validate(fields, strict=True)
    except ValidationError as error:
        reported = {tuple(entry["loc"]) for entry in errors}  # a failed image is not also "required"
        errors.extend(entry for entry in _pydantic_items(error, (), _request_loc)
                      if tuple(entry["loc"]) not in reported)
    except FramePackError as error:  # defensive: the model wraps these, but never let one escape as a 500
        errors.append(item((), str(error)))

    if output is not None and not isinstance(output, dict):
        errors.append(item((OUTPUT_KEY,), f"output: expected an object of output options, got {_json_type(output)}",
                           "type_error"))
    else:
        merged = {**(default_output or {}), **(output or {})}
        try:
            options = OutputOptions.model_validate(merged, strict=True)
        except ValidationError as error:
            errors.extend(_pydantic_items(error, (OUTPUT_KEY,), _output_loc))
    if errors:
        raise BodyError(_dedupe(errors))
    return request, options


def parse_plan_body(body: Any):
    """Validate a POST /plan body and plan it; the same body as POST /jobs is accepted.

    Only the planner's fields are read (images are neither needed nor decoded); unknown names
    are still refused so a typo does not silently plan the defaults.
    """
    from framepack.request.planner import plan_video

    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    errors: list[dict[str, Any]] = []
    fields = {key: value for key, value in body.items() if key != OUTPUT_KEY}
    _check_unknown(fields, GenerationRequest.model_fields, errors, hint_fields=OutputOptions.model_fields)
    whens = [] if _too_many_keyframes(fields.get("keyframes"), errors) else _keyframe_whens(fields.get("keyframes"),
                                                                                              errors)
    model = _plan_model()
    values = None
    try:
        values = model.model_validate({key: fields[key] for key in PLAN_FIELDS if key in fields}, strict=True)
    except ValidationError as error:
        errors.extend(_pydantic_items(error, (), _request_loc))
    if errors:
        raise BodyError(_dedupe(errors))
    try:
        return plan_video(**values.model_dump(), keyframes=whens)
    except FramePackError as error:
        raise BodyError([item(_request_loc(str(error)), str(error))]) from None


_PLAN_MODEL = None


def _plan_model():
    """A model with exactly the planner's fields, reusing the request model's constraints."""
    global _PLAN_MODEL
    if _PLAN_MODEL is None:
        from pydantic import ConfigDict, create_model

        source = GenerationRequest.model_fields
        _PLAN_MODEL = create_model("PlanSettings", __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
                                   **{name: (source[name].annotation, source[name]) for name in PLAN_FIELDS})
    return _PLAN_MODEL


def _too_many_keyframes(keyframes: Any, errors: list) -> bool:
    if isinstance(keyframes, list) and len(keyframes) > MAX_KEYFRAMES:
        errors.append(item(("keyframes",), f"keyframes: {len(keyframes)} given, at most {MAX_KEYFRAMES}",
                           "too_long"))
        return True
    return False


def _keyframe_whens(keyframes: Any, errors: list) -> list[str]:
    if keyframes is None:
        return []
    if not isinstance(keyframes, list):
        errors.append(item(("keyframes",), f"keyframes: expected a list, got {_json_type(keyframes)}", "type_error"))
        return []
    whens = []
    for index, keyframe in enumerate(keyframes):
        when = keyframe.get("when") if isinstance(keyframe, dict) else keyframe
        if not isinstance(when, str) or not when.strip():
            errors.append(item(("keyframes", index, "when"),
                               f"keyframe {index + 1}: give its WHEN as text, e.g. \"3\" or \"2.5s\"", "type_error"))
            continue
        whens.append(when)
    return whens


def _check_unknown(fields: dict, known: dict, errors: list, hint_fields: dict) -> None:
    for key in fields:
        if key in known:
            continue
        if key in hint_fields:
            errors.append(item((key,), f"{key} is an output option; put it under \"{OUTPUT_KEY}\": "
                                       f"{{\"{OUTPUT_KEY}\": {{\"{key}\": ...}}}}", "extra_forbidden"))
        else:
            errors.append(item((key,), f"{key}: unknown field{_did_you_mean(key, known)}", "extra_forbidden"))
    for key in [key for key in fields if key not in known]:
        del fields[key]  # reported once, here; pydantic would repeat it less helpfully


def _did_you_mean(key: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _decode_images(fields: dict, errors: list) -> None:
    budget = [MAX_REQUEST_IMAGE_PIXELS]
    for name in IMAGE_FIELDS:
        if name in fields:
            fields[name] = _decode_image_text(fields[name], name.replace("_", " "), (name,), errors, budget)
    if isinstance(fields.get("keyframes"), list):
        keyframes = fields["keyframes"] = list(fields["keyframes"])  # never edit the caller's body
        for index, keyframe in enumerate(keyframes):
            if isinstance(keyframe, dict) and "image" in keyframe:
                keyframe = dict(keyframe)
                keyframe["image"] = _decode_image_text(keyframe["image"], f"keyframe {index + 1} image",
                                                       ("keyframes", index, "image"), errors, budget)
                if keyframe["image"] is None:
                    del keyframe["image"]  # null or undecodable: pydantic reports it as required
                keyframes[index] = keyframe


# ------------------------------------------------------------------------ pydantic -> items

def _pydantic_items(error: ValidationError, prefix: Loc, guess: Callable[[str], Loc]) -> list[dict[str, Any]]:
    items = []
    for entry in error.errors(include_url=False, include_input=False):
        message = entry["msg"].removeprefix("Value error, ")
        loc = tuple(entry["loc"])
        if not loc:  # a model-level check: find the field it is about from its message
            loc = guess(message)
        if entry["type"] == "extra_forbidden":
            message = f"unknown field{_did_you_mean(loc[-1], _known_fields(prefix, loc))}"
        items.append(item((*prefix, *loc), _with_field(message, (*prefix, *loc)), entry["type"]))
    return items


def _known_fields(prefix: Loc, loc: Loc):
    from framepack.jobs.request import Keyframe

    if prefix == (OUTPUT_KEY,):
        return OutputOptions.model_fields
    if loc and loc[0] == "keyframes":
        return Keyframe.model_fields
    return GenerationRequest.model_fields


def _with_field(message: str, loc: Loc) -> str:
    """Prefix the field name unless the message already starts by naming it."""
    if not loc:
        return message
    head = message.split(":", 1)[0].replace("_", " ").lower() if ":" in message[:60] else ""
    last = str(loc[-1]).replace("_", " ").lower()
    if message.lower().startswith((last + " ", str(loc[-1]).lower() + " ")):
        return message  # "resolution must be a multiple of 16", "crf 99 is out of range"
    if head and (head.endswith(last) or head.startswith("keyframe") or head.startswith("section prompt")):
        return message
    return f"{'.'.join(str(part) for part in loc)}: {message}"


_REQUEST_LOCS: list[tuple[re.Pattern, Callable[[re.Match], Loc]]] = [
    (re.compile(r"^give a start image"), lambda m: ("image",)),
    (re.compile(r"^an end image needs"), lambda m: ("end_image",)),
    (re.compile(r"^the images are too large together"), lambda m: ("image",)),
    (re.compile(r"^section prompt"), lambda m: ("section_prompts",)),
    (re.compile(r"^keyframe (\d+)"), lambda m: ("keyframes", int(m[1]) - 1, "when")),
    (re.compile(r"^keyframes\b"), lambda m: ("keyframes",)),
    (re.compile(r"^(duration|fps|interpolation|prompt)\b"), lambda m: (m[1],)),
    (re.compile(r"^latent window size"), lambda m: ("latent_window_size",)),
    (re.compile(r"^unknown variant"), lambda m: ("variant",)),
]
_OUTPUT_LOCS: list[tuple[re.Pattern, Callable[[re.Match], Loc]]] = [
    (re.compile(r"^nothing to save"), lambda m: ()),
    (re.compile(r"cannot be stored in a"), lambda m: ("container",)),
    (re.compile(r"pixel format"), lambda m: ("pix_fmt",)),
    (re.compile(r"^crf|no crf"), lambda m: ("crf",)),
    (re.compile(r"option"), lambda m: ("codec_options",)),
    (re.compile(r"codec"), lambda m: ("codec",)),
]


def _request_loc(message: str) -> Loc:
    return _match_loc(message, _REQUEST_LOCS)


def _output_loc(message: str) -> Loc:
    return _match_loc(message, _OUTPUT_LOCS)


def _match_loc(message: str, table) -> Loc:
    for pattern, loc in table:
        found = pattern.search(message)
        if found:
            return loc(found)
    return ()


def _dedupe(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, unique = set(), []
    for entry in items:
        key = (tuple(entry["loc"]), entry["msg"])
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
