"""The one request model every face builds: tab, REST API, CLI, SD.Next and tests.

A `GenerationRequest` is frozen: validated once, at the boundary, and never changed after. Images
are decoded to RGB uint8 arrays, the prompt schedule and keyframe placements are planned (the
plan is kept: `request.plan()` costs nothing after validation), incompatible combinations are
refused, and LoRAs are typed `LoraSpec`s. Code below this layer can trust a request.

The seed -1 means "pick one": `resolve_seed()` returns a copy with a real seed, and the job
queue calls it at submission, so -1 never reaches the engine. Every error names its field
(`FramePackError.field`); pydantic's own field errors carry their location the same way once
`build_request` has turned them into `InputErrors`. A request serialises losslessly to JSON
(`to_json` / `from_json`, images as PNG base64), for job stores and checkpoints.

Nothing here imports numpy or PIL at import time (the CLI builds its flags from these fields and
its `--help` stays instant); images are decoded by `framepack.request.images` when one arrives.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import random
from contextlib import contextmanager
from typing import Annotated, Any, Iterator, Literal, Optional, Sequence

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, TypeAdapter,
                      ValidationError, field_serializer, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from framepack.errors import FramePackError, InputError, InputErrors
from framepack.request import limits
from framepack.request.planner import VideoPlan, plan_video
from framepack.request.schedule import parse_when

DEFAULT_SYSTEM_PROMPT = (
    "Describe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:"
)
MAX_SEED = limits.MAX_SEED
RANDOM_SEED = limits.RANDOM_SEED
RESOLVED_SEEDS = 2**32
"""A resolved random seed is below this, so users can type it back in any tool."""

IMAGE_DOC = "image file bytes, an RGB(A)/gray pixel array or a PIL image (stored as RGB uint8 pixels)"


def _unicode_text(value: str) -> str:
    """Refuse lone surrogates: they are not text, and would break the file metadata after sampling."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"contains an invalid character (a lone surrogate) at position {error.start}") from None
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]
"""A string that is valid Unicode (JSON allows lone surrogates such as \\ud800; text files cannot)."""


def _as_tuple(value: Any) -> Any:
    """Lists become tuples (frozen fields); anything else but a tuple is refused as "not a list"."""
    if isinstance(value, list):
        return tuple(value)
    if not isinstance(value, tuple):
        raise PydanticCustomError("list_type", "Input should be a valid list")
    return value


@contextmanager
def _as_value_error() -> Iterator[None]:
    """pydantic reports only ValueErrors as field errors; ours carry the user-facing text."""
    try:
        yield
    except FramePackError as error:
        raise ValueError(str(error)) from None


def _decode(value: Any, name: str) -> Any:
    if value is None:
        return None
    from framepack.request.images import to_rgb_array  # numpy and PIL load with the first image

    with _as_value_error():
        return to_rgb_array(value, name)


def _png_base64(image: Any) -> str | None:
    """Lossless text form of an RGB uint8 array (PNG, base64)."""
    if image is None:
        return None
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _from_base64(text: Any, name: str) -> Any:
    """A serialised image (PNG base64) back to bytes; anything else is left for the model to judge."""
    if not isinstance(text, str):
        return text
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{name}: not valid base64 image data", (name,)) from None


# ---------------------------------------------------------------------------------------------- LoRA

class LoraWeight(BaseModel):
    """One entry of a LoRA's schedule: `weight` in the section(s) `when` names (WHEN syntax)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    when: Text = Field(min_length=1, max_length=limits.MAX_WHEN_CHARS,
                       description="section (3), range (2-4), time (1.5s) or time range (1s-2s)")
    weight: float = Field(description="strength in those sections")

    @field_validator("when")
    @classmethod
    def _when_syntax(cls, value: str) -> str:
        with _as_value_error():
            parse_when(value, "when")  # where it falls is checked against the plan, by the request
        return value.strip()

    def __str__(self) -> str:
        return f"{self.weight:g}@{self.when}"


class LoraSpec(BaseModel):
    """One LoRA file on this machine, its weight, and optionally a weight per section.

    Written `FILE`, `FILE:WEIGHT` or `FILE:[BASE,]WEIGHT@WHEN[,WEIGHT@WHEN...]` on the CLI and in
    settings, e.g. `style.safetensors:0.8@1-3` (0.8 in sections 1-3, off elsewhere) or
    `style.safetensors:0.3,1@4` (0.3 everywhere but section 4). WHEN is the section prompts'
    syntax. Without a schedule `weight` applies everywhere (default 1.0); with one, `weight` is
    the strength in the sections no entry names (default 0). Whether the file exists and is a
    `.safetensors` file is checked when the job is submitted (the jobs layer).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    path: Text = Field(min_length=1, max_length=limits.MAX_LORA_PATH_CHARS,
                       description="a .safetensors LoRA file on this machine (the API takes names from the "
                                   "LoRA folder)")
    weight: float = Field(1.0, description="strength; 1.0 as trained, 0 no effect (with a schedule: the "
                                           "strength outside it, default 0)")
    schedule: Annotated[tuple[LoraWeight, ...], BeforeValidator(_as_tuple)] = Field(
        (), max_length=limits.MAX_LORA_SCHEDULE_ENTRIES, description="weight per section: [{when, weight}, ...]")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return cls._parse(value)
        if isinstance(value, dict) and value.get("schedule") and "weight" not in value:
            return {**value, "weight": 0.0}  # a schedule names where the LoRA acts; elsewhere it is off
        return value

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """`"file.safetensors:0.8"` -> path and weight 0.8; no `:weight` means 1.0 (`InputErrors` if bad)."""
        return validated(cls, text)

    @classmethod
    def _parse(cls, text: str) -> dict[str, Any]:
        """Only weights after the last colon are read, so `C:\\loras\\x.safetensors` stays a path.

        Linear in the text: one split on the last colon, one on commas, one `@` per entry.
        """
        spec = text.strip()
        if not spec:
            raise ValueError("empty LoRA entry; write FILE or FILE:WEIGHT")
        if len(spec) > limits.MAX_LORA_PATH_CHARS + limits.MAX_SCHEDULE_LINE_CHARS:
            raise ValueError(f"LoRA entry too long ({len(spec)} characters)")
        head, sep, tail = spec.rpartition(":")
        if not (sep and head.strip()) or _number(tail.split(",", 1)[0].partition("@")[0]) is None:
            return {"path": spec, "weight": 1.0}
        if tail.count(",") >= limits.MAX_LORA_SCHEDULE_ENTRIES + 1:
            raise ValueError(f"LoRA {head.strip()!r}: more than {limits.MAX_LORA_SCHEDULE_ENTRIES} schedule entries")
        base, schedule = None, []
        for entry in tail.split(","):
            weight_text, at, when = entry.partition("@")
            weight = _number(weight_text)
            if weight is None:
                raise ValueError(f"LoRA {head.strip()!r}: {entry.strip()!r} is not WEIGHT or WEIGHT@WHEN "
                                 "(e.g. 0.8 or 0.8@1-3)")
            if not math.isfinite(weight):
                raise ValueError(f"LoRA weight in {spec!r} must be a finite number")
            if not at:
                if base is not None:
                    raise ValueError(f"LoRA {head.strip()!r}: give one weight without @WHEN (the weight elsewhere)")
                base = weight
            else:
                schedule.append({"when": when.strip(), "weight": weight})
        return {"path": head.strip(), "weight": (0.0 if schedule else 1.0) if base is None else base,
                "schedule": schedule}

    @property
    def label(self) -> str:
        """The file's name without folder and `.safetensors`, for plans and messages."""
        name = self.path.replace("\\", "/").rsplit("/", 1)[-1]
        return name[: -len(".safetensors")] if name.lower().endswith(".safetensors") else name

    def __str__(self) -> str:
        if not self.schedule:
            return f"{self.path}:{self.weight:g}"
        entries = ([f"{self.weight:g}"] if self.weight else []) + [str(entry) for entry in self.schedule]
        return f"{self.path}:{','.join(entries)}"


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- keyframes

class Keyframe(BaseModel):
    """An extra image steering the section(s) its WHEN names (same syntax as section prompts)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    image: Any = Field(description=f"keyframe image: {IMAGE_DOC}")
    when: Text = Field(max_length=limits.MAX_WHEN_CHARS, description="section (3), range (2-4), time (1.5s) or "
                                                                      "time range (1s-2s)")

    @field_validator("image", mode="before")
    @classmethod
    def _decode_image(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("keyframe image: give an image")
        return _decode(value, "keyframe image")

    @field_serializer("image", when_used="json")
    def _image_text(self, image: Any) -> str | None:
        return _png_base64(image)


# ---------------------------------------------------------------------------------------------- the request

class GenerationRequest(BaseModel):
    """Everything that decides the frames of one video."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True)

    image: Any = Field(None, description=f"start image: {IMAGE_DOC}; none with a blank start")
    blank_start: Optional[Literal[limits.BLANK_STARTS]] = Field(
        None, description="text-to-video start frame when no image is given (weaker than a real image)")
    end_image: Any = Field(None, description=f"last frame to aim at (original model only): {IMAGE_DOC}")
    keyframes: Annotated[tuple[Keyframe, ...], BeforeValidator(_as_tuple)] = Field(
        (), max_length=limits.MAX_KEYFRAMES, description="extra images for given sections or times")
    start_strength: float = Field(1.0, ge=0.0, le=1.0, description="weight of the start image latent")
    end_strength: float = Field(1.0, ge=0.0, le=1.0, description="weight of the end image / keyframe latent")
    vision_strength: float = Field(0.5, ge=0.0, le=1.0,
                                   description="weight of the end image / keyframe in the image embedding")

    prompt: Text = Field("", max_length=limits.MAX_PROMPT_CHARS, description="main prompt")
    negative_prompt: Text = Field("", max_length=limits.MAX_PROMPT_CHARS,
                                  description="negative prompt (used when cfg > 1)")
    section_prompts: Text = Field("", max_length=limits.MAX_SCHEDULE_CHARS,
                                  description="one '[WHEN:] text' line per section prompt")
    system_prompt: Text = Field(DEFAULT_SYSTEM_PROMPT, max_length=limits.MAX_PROMPT_CHARS,
                                description="Llama system prompt (default: the optimized template)")

    variant: Literal[limits.VARIANTS] = Field(
        "original", description="original (inverted anti-drifting, supports an end image) or f1 (forward)")
    duration: float = Field(5.0, gt=0.0, le=limits.MAX_DURATION, description="seconds")
    fps: float = Field(30.0, ge=limits.MIN_FPS, le=limits.MAX_FPS, description="frames per second of the video")
    interpolation: int = Field(0, ge=0, le=limits.MAX_INTERPOLATION,
                               description="interpolated frames between generated ones")
    resolution: int = Field(640, ge=limits.RESOLUTION_RANGE[0], le=limits.RESOLUTION_RANGE[1],
                            description="bucket size in px, a multiple of 16 (240-960 for real models)")

    steps: int = Field(25, ge=limits.STEPS_RANGE[0], le=limits.STEPS_RANGE[1], description="sampling steps")
    seed: int = Field(RANDOM_SEED, ge=RANDOM_SEED, le=MAX_SEED,
                      description="-1 picks a random seed when the job is submitted (reported back)")
    latent_window_size: int = Field(9, ge=limits.LATENT_WINDOW_RANGE[0], le=limits.LATENT_WINDOW_RANGE[1],
                                    description="latent window size")
    sampler: Literal[limits.SAMPLERS] = Field("unipc", description="sampler")
    shift: Optional[float] = Field(None, gt=0.0, le=limits.MAX_SHIFT,
                                   description="sigma shift (default: dynamic, from the token count)")
    distilled_cfg: float = Field(10.0, ge=0.0, le=limits.MAX_CFG, description="distilled guidance")
    cfg: float = Field(1.0, ge=0.0, le=limits.MAX_CFG, description="real CFG scale (1 = off)")
    cfg_rescale: float = Field(0.0, ge=0.0, le=1.0, description="CFG rescale")
    cfg_zero_star: bool = Field(False, description="CFG-Zero* (optimized scale, zero-init)")
    teacache: bool = Field(True, description="TeaCache (skips model calls whose output barely changes)")
    teacache_threshold: float = Field(0.15, ge=0.0, le=limits.MAX_TEACACHE_THRESHOLD,
                                      description="TeaCache threshold")
    cache: Optional[Literal[limits.STEP_CACHES]] = Field(
        None, description="step cache: none, teacache or magcache (default: teacache when teacache is on, else none)")
    magcache_threshold: float = Field(0.1, ge=0.0, le=limits.MAX_MAGCACHE_THRESHOLD,
                                      description="MagCache error threshold (higher = faster, lower quality)")
    magcache_max_skips: int = Field(2, ge=limits.MAGCACHE_SKIPS_RANGE[0], le=limits.MAGCACHE_SKIPS_RANGE[1],
                                    description="MagCache: most steps skipped in a row")
    magcache_retention: float = Field(0.25, ge=0.0, le=1.0,
                                      description="MagCache: fraction of early steps that always run")
    fp32_head: bool = Field(True, description="run the transformer's output head (norm_out, proj_out) in float32, "
                                              "as the reference app does")
    compile: bool = Field(False, description="torch.compile the transformer blocks (slow first section, "
                                             "faster after; needs a C++/Triton toolchain)")
    noise: Literal[limits.NOISE_MODES] = Field(
        "section", description="section: noise seeded per section (resumable); reference: one generator in "
                               "generation order, as lllyasviel's FramePack, to reproduce its videos from a seed")
    preview: bool = Field(True, description="live previews while sampling (sharper with a Tiny VAE in the recipe)")
    tiny_vae_decode: bool = Field(False, description="decode the video with the recipe's Tiny VAE (TAEHV): much "
                                                     "faster, a little softer; needs a tiny_vae component")
    max_prompt_tokens: int = Field(256, ge=limits.PROMPT_TOKENS_RANGE[0], le=limits.PROMPT_TOKENS_RANGE[1],
                                   description="tokens of each prompt the text encoder reads")
    loras: Annotated[tuple[LoraSpec, ...], BeforeValidator(_as_tuple)] = Field(
        (), max_length=limits.MAX_LORAS, description="LoRA files on this machine, FILE[:WEIGHT]")

    _plan: VideoPlan | None = PrivateAttr(None)

    # ---- field checks ----------------------------------------------------------------------
    @field_validator("image", "end_image", mode="before")
    @classmethod
    def _decode_image(cls, value: Any, info) -> Any:
        return _decode(value, info.field_name.replace("_", " "))

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        step = limits.RESOLUTION_STEP
        if value % step:
            raise ValueError(f"resolution must be a multiple of {step} (got {value}); try {round(value / step) * step}")
        return value

    @field_serializer("image", "end_image", when_used="json")
    def _image_text(self, image: Any) -> str | None:
        return _png_base64(image)

    # ---- combinations and the plan -------------------------------------------------------------
    @model_validator(mode="after")
    def _check_combinations(self) -> "GenerationRequest":
        problems: list[FramePackError] = []
        if self.image is None and self.blank_start is None:
            problems.append(InputError("give a start image, or choose a blank start (black, white or noise) "
                                       "for text-to-video", ("image",)))
        if self.variant == "f1" and self.end_image is not None:
            problems.append(InputError("an end image needs the original (inverted anti-drifting) model; "
                                       "the F1 model generates forward and cannot aim at a last frame", ("end_image",)))
        problem = self._pixels_problem()
        if problem is not None:
            problems.append(problem)
        try:  # the schedule and keyframe placement errors surface here, before any model work
            self._plan = plan_video(
                duration=self.duration, fps=self.fps, interpolation=self.interpolation,
                latent_window_size=self.latent_window_size, variant=self.variant, prompt=self.prompt,
                section_prompts=self.section_prompts, keyframes=[keyframe.when for keyframe in self.keyframes],
                loras=lora_plan_entries(self.loras))
        except FramePackError as error:
            problems.append(error)
        if problems:
            raise InputErrors(problems)
        return self

    def _pixels_problem(self) -> InputError | None:
        """All images together within the request limit; the error names the image that crosses it."""
        total = 0
        for field, image in self.located_images():
            total += image.shape[0] * image.shape[1]
            if total > limits.MAX_REQUEST_IMAGE_PIXELS:
                return InputError(f"the images are too large together ({total / 1024 ** 2:.0f} megapixels so far); "
                                  f"{limits.request_pixels_text()}", field)
        return None

    # ---- reading ---------------------------------------------------------------------------
    def plan(self) -> VideoPlan:
        """The video's plan, made once when the request was validated."""
        return self._plan

    @property
    def step_cache(self) -> str:
        """The step cache in force: `cache` when given, else TeaCache when `teacache` is on (older requests)."""
        if self.cache is not None:
            return self.cache
        return "teacache" if self.teacache else "none"

    def located_images(self) -> list[tuple[tuple, Any]]:
        """(field, RGB array) for every image the request holds: start, end, keyframes."""
        found = [(("image",), self.image), (("end_image",), self.end_image),
                 *((("keyframes", i, "image"), keyframe.image) for i, keyframe in enumerate(self.keyframes))]
        return [(field, image) for field, image in found if image is not None]

    def settings(self) -> dict[str, Any]:
        """The JSON-safe settings that reproduce this video (images summarised, not embedded)."""
        data = self.model_dump(mode="json", exclude={"image", "end_image", "keyframes"})
        data["image"] = _describe(self.image)
        data["end_image"] = _describe(self.end_image)
        data["keyframes"] = [{"when": k.when, "image": _describe(k.image)} for k in self.keyframes]
        return data

    # ---- new requests from this one --------------------------------------------------------------
    def resolve_seed(self, rng: random.Random | None = None) -> "GenerationRequest":
        """This request with a real seed: -1 becomes a random one (below 2**32), any other stays."""
        if self.seed != RANDOM_SEED:
            return self
        return self.model_copy(update={"seed": (rng or random).randrange(RESOLVED_SEEDS)})  # the plan is kept

    def replace(self, **changes: Any) -> "GenerationRequest":
        """A new, validated request with `changes` (raises `InputErrors` naming each bad field)."""
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return build_request(**{**fields, **changes})

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data holding everything, images as PNG base64 (lossless)."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationRequest":
        """Rebuild a request saved with `to_dict` (the same pixels, the same plan)."""
        fields = dict(data)
        for name in ("image", "end_image"):
            fields[name] = _from_base64(fields.get(name), name)
        fields["keyframes"] = [{**keyframe, "image": _from_base64(keyframe.get("image"), "keyframes")}
                               for keyframe in fields.get("keyframes") or ()]
        return build_request(**fields)

    @classmethod
    def from_json(cls, text: str) -> "GenerationRequest":
        return cls.from_dict(json.loads(text))


def _describe(image: Any) -> str | None:
    return None if image is None else f"{image.shape[1]}x{image.shape[0]} RGB"


# ---------------------------------------------------------------------------------------------- validation

def build_request(**fields: Any) -> GenerationRequest:
    """Validate fields into a request; every problem becomes one located error of an `InputErrors`."""
    return validated(GenerationRequest, fields)


def validated(model: type[BaseModel], data: Any, *, strict: bool = False) -> Any:
    """`model.model_validate(data)`, with pydantic's report turned into `InputErrors` (one per field)."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as error:
        raise input_errors(error) from None


def input_errors(error: ValidationError) -> InputErrors:
    """pydantic's errors as `InputError`s located at their field (its `loc`)."""
    problems = []
    for entry in error.errors(include_url=False, include_input=False):
        message = entry["msg"].removeprefix("Value error, ")
        problem = InputError(message, tuple(entry["loc"]))
        problem.kind = entry["type"]
        problems.append(problem)
    return InputErrors(problems)


# ---------------------------------------------------------------------------------------------- planning only

PLAN_FIELDS = ("duration", "fps", "interpolation", "latent_window_size", "variant", "prompt", "section_prompts",
               "loras")
"""Request fields the planner reads (plus the WHEN of each keyframe)."""
RESOURCE_FIELDS = ("resolution", "steps", "cfg", "teacache", "teacache_threshold", "max_prompt_tokens")
"""Request fields the resource plan reads besides `PLAN_FIELDS`."""


def plan_for(fields: dict[str, Any], keyframes: Sequence[str] = (), *, strict: bool = False) -> VideoPlan:
    """The plan of a request with these `PLAN_FIELDS` values, without building a whole request.

    Each value is validated by the request's own field (same type, range and message, missing ones
    take the request's default), so a plan preview accepts exactly what a submission would. Raises
    `InputErrors` naming every bad field, or the planner's located error.
    """
    values = field_values(fields, PLAN_FIELDS, strict=strict)
    values["loras"] = lora_plan_entries(values["loras"])
    return plan_video(**values, keyframes=list(keyframes))


def field_values(fields: dict[str, Any], names: Sequence[str], *, strict: bool = False) -> dict[str, Any]:
    """`names` validated one by one by the request's own fields (missing ones take the default);
    raises `InputErrors` naming every bad field."""
    values, problems = {}, []
    for name in names:
        info = GenerationRequest.model_fields[name]
        if name not in fields:
            values[name] = info.get_default(call_default_factory=True)
            continue
        try:
            values[name] = _field_adapter(name).validate_python(fields[name], strict=strict)
        except ValidationError as error:
            problems.extend(problem.located(name) for problem in input_errors(error).problems())
    if problems:
        raise InputErrors(problems)
    return values


def lora_plan_entries(loras: Sequence[LoraSpec]) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """What the planner needs of each LoRA: (label, weight elsewhere, [(WHEN, weight), ...])."""
    return [(spec.label, spec.weight, [(entry.when, entry.weight) for entry in spec.schedule]) for spec in loras]


@functools.cache
def _field_adapter(name: str) -> TypeAdapter:
    info = GenerationRequest.model_fields[name]
    kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(kind, config=ConfigDict(allow_inf_nan=GenerationRequest.model_config["allow_inf_nan"]))
