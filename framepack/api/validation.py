"""JSON bodies -> the shared models, with every problem reported at its field.

The REST API does not let FastAPI validate `GenerationRequest` itself: the model holds numpy
arrays and needs image bytes. Here a decoded JSON object is turned into a `GenerationRequest` and
an `OutputOptions`, and every problem becomes one FastAPI-style item
``{"loc": ["body", *error.field], "msg": "...", "type": "..."}``: the location is the field the
error carries (`framepack.errors`), never guessed from its message.

Images arrive as base64 text or ``data:`` URLs and are decoded HERE to bytes; the request model
takes only image data (bytes, arrays), never a path, so a client can never name a server file.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from framepack.errors import FramePackError
from framepack.jobs.checks import check_output, codec_problems
from framepack.request.images import declared_pixels
from framepack.request.limits import MAX_KEYFRAMES, MAX_REQUEST_IMAGE_PIXELS, request_pixels_text
from framepack.request.model import (PLAN_FIELDS, RESOURCE_FIELDS, GenerationRequest, Keyframe, field_values,
                                     plan_for, validated)
from framepack.request.output import OUTPUT, OutputOptions, build_output_from, is_host_model

OUTPUT_KEY = OUTPUT
"""Body key holding the `OutputOptions` fields (the generation fields sit at the top level)."""

IMAGE_FIELDS = ("image", "end_image")
BUILTIN_MODEL_NAMES = ("lanczos",)
"""Output model choices that are no file (the upscaler's built-in Lanczos)."""

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

def parse_job_body(body: Any, default_output: dict[str, Any] | None = None, lora_folder=None, model_folder=None
                   ) -> tuple[GenerationRequest, OutputOptions]:
    """Validate a POST /jobs body; raises BodyError listing every problem found.

    LoRAs and model files (upscaler, RIFE) are names looked up in the server's folders
    (`framepack.models.library.ModelFolder`): a client never names a server path.
    """
    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    errors: list[dict[str, Any]] = []
    fields = dict(body)
    output = fields.pop(OUTPUT_KEY, None)
    _check_unknown(fields, GenerationRequest.model_fields, errors, hint_fields=OutputOptions.model_fields)
    if fields.get("loras"):
        fields["loras"] = _resolve_loras(fields["loras"], lora_folder, errors)
    if _too_many_keyframes(fields.get("keyframes"), errors):
        fields.pop("keyframes")  # refused before a single one of them is decoded
    _decode_images(fields, errors)

    request = options = None
    reported = {tuple(entry["loc"]) for entry in errors}  # a failed image is not also "required"
    try:  # strict: "8" is not a number and "yes" is not a boolean here, as in the JSON schema
        request = validated(GenerationRequest, fields, strict=True)
    except FramePackError as error:
        errors.extend(entry for entry in error_items(error) if tuple(entry["loc"]) not in reported)

    if output is not None and not isinstance(output, dict):
        errors.append(item((OUTPUT_KEY,), f"output: expected an object of output options, got {_json_type(output)}",
                           "type_error"))
    else:
        merged = {**(default_output or {}), **(output or {})}
        try:
            options = build_output_from(merged, strict=True)
            options = _resolve_model_files(options, model_folder)
            check_output(options)  # codec, container, pixel format, encoder options: FFmpeg answers
        except FramePackError as error:
            errors.extend(error_items(error))
            if options is None and isinstance(merged.get("codec"), str):  # the codec is still worth a word
                errors.extend(entry for problem in codec_problems(merged["codec"]) for entry in error_items(problem))
    if errors:
        raise BodyError(_dedupe(errors))
    return request, options


def _resolve_loras(loras: Any, folder, errors: list) -> Any:
    """Each entry `NAME[:WEIGHT...]` or `{"name", "weight", "schedule"}` -> a `LoraSpec` on the folder's file."""
    from framepack.models.library import ModelFolder
    from framepack.request.limits import MAX_LORAS
    from framepack.request.model import LoraSpec

    if not isinstance(loras, list) or len(loras) > MAX_LORAS:
        return loras  # the request model reports it
    folder = folder or ModelFolder(None, "LoRA", "framepack_lora_dir")
    resolved = []
    for index, entry in enumerate(loras):
        if isinstance(entry, dict):
            if "path" in entry:
                errors.append(item(("loras", index, "path"), "loras: give the LoRA's name from the server's LoRA "
                                                              "folder as \"name\", not a path", "extra_forbidden"))
                continue
            entry = {("path" if key == "name" else key): value for key, value in entry.items()}
        try:
            spec = validated(LoraSpec, entry, strict=True)
            resolved.append(spec.model_copy(update={"path": str(folder.resolve(spec.path, ()))}))
        except FramePackError as error:
            errors.extend(entry for entry in error_items(error.located("loras", index)))
    return resolved


def _resolve_model_files(options: OutputOptions, folder) -> OutputOptions:
    """The upscaler / RIFE model names of the output options -> the folder's files."""
    from framepack.models.library import ModelFolder

    folder = folder or ModelFolder(None, "model", "framepack_model_dir")
    changes = {}
    for name in ("upscaler", "interpolation_model"):
        value = getattr(options, name, None)
        if value and value not in BUILTIN_MODEL_NAMES and not is_host_model(value):  # sdnext:...: the host checks
            try:
                changes[name] = str(folder.resolve(value, ()))
            except FramePackError as error:
                raise error.located(OUTPUT_KEY, name) from None
    return options.model_copy(update=changes) if changes else options


def parse_resume_body(body: Any) -> None:
    """POST /jobs/{id}/resume takes no settings: an empty body or an empty object."""
    if body is None or body == {}:
        return
    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    raise BodyError([item((key,), f"{key}: unknown field; a resume continues with the job's own settings",
                          "extra_forbidden") for key in body])


REROLL_FIELDS = ("from_section", "seed", "section_prompts", OUTPUT_KEY)


def parse_reroll_body(body: Any) -> dict[str, Any]:
    """POST /jobs/{id}/reroll: {"from_section": N, "seed": S?, "section_prompts": "..."?, "output": {...}?}.

    Returns the keyword arguments of `JobQueue.reroll` (output options merged over the job's own
    there: the queue knows them); raises BodyError naming every bad field."""
    from framepack.request.limits import MAX_SCHEDULE_CHARS, MAX_SEED, RANDOM_SEED

    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    errors = [item((key,), f"{key}: unknown field{_did_you_mean(key, REROLL_FIELDS)}", "extra_forbidden")
              for key in body if key not in REROLL_FIELDS]
    section = body.get("from_section")
    if section is None:
        errors.append(item(("from_section",), "from_section: give the first section to generate again (from 1)",
                           "missing"))
    elif type(section) is not int:
        errors.append(item(("from_section",), f"from_section: expected a whole number, got {_json_type(section)}",
                           "int_type"))
    seed = body.get("seed")
    if seed is not None and (type(seed) is not int or not RANDOM_SEED <= seed <= MAX_SEED):
        errors.append(item(("seed",), f"seed: expected a whole number from {RANDOM_SEED} to {MAX_SEED}", "int_type"))
    prompts = body.get("section_prompts")
    if prompts is not None and (not isinstance(prompts, str) or len(prompts) > MAX_SCHEDULE_CHARS):
        errors.append(item(("section_prompts",), f"section_prompts: expected text of at most {MAX_SCHEDULE_CHARS} "
                                                 f"characters", "string_type"))
    output = body.get(OUTPUT_KEY)
    if output is not None and not isinstance(output, dict):
        errors.append(item((OUTPUT_KEY,), f"output: expected an object of output options, got {_json_type(output)}",
                           "type_error"))
    if errors:
        raise BodyError(_dedupe(errors))
    return {"from_section": section, "seed": seed, "section_prompts": prompts, "output": output}


def reroll_options(base: OutputOptions, output: dict[str, Any] | None) -> OutputOptions:
    """A re-roll's output options: the job's own, with the body's `output` fields over them."""
    if not output:
        return base
    try:
        options = build_output_from({**base.model_dump(mode="json"), **output}, strict=True)
        check_output(options)
    except FramePackError as error:
        raise BodyError(_dedupe(error_items(error))) from None
    return options


EXTEND_SOURCES = ("job", "video")


def parse_extend_body(body: Any, default_output: dict[str, Any] | None = None,
                      refused: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any], OutputOptions]:
    """POST /extend: {"job": id} or {"video": base64}, request fields (no image, fps, size: they come from
    the clip) and "output". Returns (source, fields, options); raises BodyError naming every bad field.

    A video is sent as its bytes, never as a server path: a client cannot make the server read a file.
    """
    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    errors: list[dict[str, Any]] = []
    fields = dict(body)
    source = {key: fields.pop(key) for key in EXTEND_SOURCES if key in fields}
    output = fields.pop(OUTPUT_KEY, None)
    _check_unknown(fields, GenerationRequest.model_fields, errors, hint_fields=OutputOptions.model_fields)
    for name in refused:
        if fields.pop(name, None) is not None:
            errors.append(item((name,), f"{name}: an extension takes it from the clip; leave it out", "extra_forbidden"))
    if fields.pop("loras", None):
        errors.append(item(("loras",), "loras: LoRA files are chosen on the server, not through the API"))
    if len(source) != 1:
        errors.append(item((), "give the clip to continue: either \"job\" (a finished job's id) or \"video\" "
                               "(a video file as base64)", "missing"))
    elif "job" in source and not isinstance(source["job"], str):
        errors.append(item(("job",), f"job: expected a job id, got {_json_type(source['job'])}", "string_type"))
    elif "video" in source:
        source["video"] = _decode_video_text(source["video"], errors)
    if _too_many_keyframes(fields.get("keyframes"), errors):
        fields.pop("keyframes")
    _decode_images(fields, errors)
    try:  # strict field types, as for POST /jobs (the clip decides image, fps and size later)
        import numpy as np

        validated(GenerationRequest, {**fields, "image": np.zeros((16, 16, 3), np.uint8)}, strict=True)
    except FramePackError as error:
        reported = {tuple(entry["loc"]) for entry in errors}
        errors.extend(entry for entry in error_items(error) if tuple(entry["loc"]) not in reported)
    options = None
    if output is not None and not isinstance(output, dict):
        errors.append(item((OUTPUT_KEY,), f"output: expected an object of output options, got {_json_type(output)}",
                           "type_error"))
    else:
        try:
            options = build_output_from({**(default_output or {}), **(output or {})}, strict=True)
            check_output(options)
        except FramePackError as error:
            errors.extend(error_items(error))
    if errors:
        raise BodyError(_dedupe(errors))
    return source, fields, options


def _decode_video_text(value: Any, errors: list) -> bytes | None:
    if not isinstance(value, str) or not value.strip():
        errors.append(item(("video",), "video: expected a video file as base64 text (or a data: URL)", "type_error"))
        return None
    text = value.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or ";base64" not in header:
            errors.append(item(("video",), "video: a data URL must be base64 encoded (data:video/mp4;base64,...)"))
            return None
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        errors.append(item(("video",), "video: not valid base64 data"))
        return None
    if not data:
        errors.append(item(("video",), "video: the data is empty"))
        return None
    return data


def parse_plan_body(body: Any):
    """Validate a POST /plan body and plan it; the same body as POST /jobs is accepted.

    Only the planner's fields are read, each validated by its request field (images are neither
    needed nor decoded); unknown names are still refused so a typo does not silently plan the
    defaults.
    """
    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    errors: list[dict[str, Any]] = []
    fields = {key: value for key, value in body.items() if key != OUTPUT_KEY}
    _check_unknown(fields, GenerationRequest.model_fields, errors, hint_fields=OutputOptions.model_fields)
    whens = [] if _too_many_keyframes(fields.get("keyframes"), errors) else _keyframe_whens(fields.get("keyframes"),
                                                                                              errors)
    if errors:
        raise BodyError(_dedupe(errors))
    try:
        return plan_for({key: fields[key] for key in PLAN_FIELDS if key in fields}, whens, strict=True)
    except FramePackError as error:
        raise BodyError(_dedupe(error_items(error))) from None


def parse_resource_fields(body: dict) -> tuple[dict[str, Any], bool]:
    """The request fields a resource plan reads besides the plan's (resolution, steps, cfg,
    TeaCache, prompt tokens), each validated by its field, and whether raw frames are saved."""
    try:
        values = field_values(body, RESOURCE_FIELDS, strict=True)
    except FramePackError as error:
        raise BodyError(_dedupe(error_items(error))) from None
    output = body.get(OUTPUT_KEY)
    save_raw = isinstance(output, dict) and output.get("save_frames") is True
    return values, save_raw


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


# ------------------------------------------------------------------------ errors -> items

def error_items(error: FramePackError) -> list[dict[str, Any]]:
    """One item per problem, at the field it carries (no field: the body as a whole)."""
    items = []
    for problem in error.problems():
        loc = problem.field or ()
        message = problem.message
        if problem.kind == "extra_forbidden":
            message = f"unknown field{_did_you_mean(loc[-1], _known_fields(loc))}"
        items.append(item(loc, _with_field(message, loc), problem.kind))
    return items


def _known_fields(loc: Loc):
    if loc and loc[0] == OUTPUT_KEY:
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


def parse_batch_body(body: Any, default_output: dict[str, Any] | None = None) -> tuple[str, list]:
    """Validate a POST /batches body: {"items": [{fields}, ...], "name": ..., plus settings every item shares}.

    Each item's fields (its uploaded "image" as base64, its "prompt", ...) go over the shared ones;
    "output" is merged the same way. Returns (name, [(request, options), ...]); a BodyError lists
    every problem, located under ("items", n, ...)."""
    from framepack.request.limits import MAX_BATCH_JOBS

    if not isinstance(body, dict):
        raise BodyError([item((), f"the body must be a JSON object, got {_json_type(body)}", "type_error")])
    shared = dict(body)
    items, name = shared.pop("items", None), shared.pop("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise BodyError([item(("name",), "name: a text of at most 200 characters")])
    if not isinstance(items, list) or not items:
        raise BodyError([item(("items",), "items: a list of at least one object of job settings (its image, "
                                          "prompt, ...)", "missing" if items is None else "type_error")])
    if len(items) > MAX_BATCH_JOBS:
        raise BodyError([item(("items",), f"items: {len(items)} jobs; a batch holds at most {MAX_BATCH_JOBS}")])
    errors, jobs = [], []
    shared_output = shared.pop(OUTPUT_KEY, None)
    for index, fields in enumerate(items):
        if not isinstance(fields, dict):
            errors.append(item(("items", index), f"items #{index + 1}: expected an object, got {_json_type(fields)}",
                               "type_error"))
            continue
        merged = {**shared, **fields}
        outputs = [value for value in (shared_output, fields.get(OUTPUT_KEY)) if value is not None]
        if outputs:
            merged[OUTPUT_KEY] = ({key: value for part in outputs if isinstance(part, dict) for key, value in
                                   part.items()} if all(isinstance(part, dict) for part in outputs) else outputs[-1])
        try:
            jobs.append(parse_job_body(merged, default_output))
        except BodyError as error:
            errors += [{**entry, "loc": ["body", "items", index, *entry["loc"][1:]],
                        "msg": f"items #{index + 1}: {entry['msg']}"} for entry in error.items]
    if errors:
        raise BodyError(errors)
    return name, jobs
