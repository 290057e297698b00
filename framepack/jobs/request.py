"""The one request model every face builds: UI, REST API, CLI and tests.

Validation happens here, once: images are decoded to RGB arrays, the prompt schedule and
keyframe placements are checked by the planner, incompatible combinations are refused. Code
below this layer can trust a `GenerationRequest`.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from framepack.request import limits
from framepack.request.images import to_rgb_array
from framepack.request.planner import VideoPlan, plan_video
from framepack.errors import FramePackError, InputError

DEFAULT_SYSTEM_PROMPT = (
    "Describe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:"
)
MAX_SEED = 2**63 - 1

Image = Any  # PIL image, numpy array, path, bytes or base64 string; stored as an RGB uint8 array


def _unicode_text(value: str) -> str:
    """Refuse lone surrogates: they are not text, and would break the file metadata after sampling."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"contains an invalid character (a lone surrogate) at position {error.start}") from None
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]
"""A string that is valid Unicode (JSON allows lone surrogates such as \\ud800; text files cannot)."""


class Keyframe(BaseModel):
    """An extra image steering the section(s) its WHEN names (same syntax as section prompts)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    image: Image
    when: Text = Field(max_length=200)

    @field_validator("image", mode="before")
    @classmethod
    def _decode(cls, value: Any) -> np.ndarray:
        with _as_value_error():
            return to_rgb_array(value, "keyframe image")


class GenerationRequest(BaseModel):
    """Everything that decides the frames of one video."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=False,
                              allow_inf_nan=False)

    image: Image | None = None
    blank_start: Literal["black", "white", "noise"] | None = Field(
        None, description="Text-to-video start when no image is given (weaker than a real image)"
    )
    end_image: Image | None = None
    keyframes: list[Keyframe] = Field(default_factory=list, max_length=limits.MAX_KEYFRAMES)
    start_strength: float = Field(1.0, ge=0.0, le=1.0)
    end_strength: float = Field(1.0, ge=0.0, le=1.0)
    vision_strength: float = Field(0.5, ge=0.0, le=1.0, description="Weight of end/keyframe image in the image embedding")

    prompt: Text = Field("", max_length=limits.MAX_PROMPT_CHARS)
    negative_prompt: Text = Field("", max_length=limits.MAX_PROMPT_CHARS)
    section_prompts: Text = Field("", max_length=limits.MAX_SCHEDULE_CHARS)
    system_prompt: Text = Field(DEFAULT_SYSTEM_PROMPT, max_length=limits.MAX_PROMPT_CHARS)

    variant: Literal["original", "f1"] = "original"
    duration: float = Field(5.0, gt=0.0, le=limits.MAX_DURATION)
    fps: float = Field(30.0, ge=limits.MIN_FPS, le=limits.MAX_FPS)
    interpolation: int = Field(0, ge=0, le=limits.MAX_INTERPOLATION)
    resolution: int = Field(640, ge=limits.RESOLUTION_RANGE[0], le=limits.RESOLUTION_RANGE[1],
                            description="Bucket size in px (240-960 for real models)")

    steps: int = Field(25, ge=limits.STEPS_RANGE[0], le=limits.STEPS_RANGE[1])
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    latent_window_size: int = Field(9, ge=limits.LATENT_WINDOW_RANGE[0], le=limits.LATENT_WINDOW_RANGE[1])
    sampler: Literal["unipc", "euler"] = "unipc"
    shift: float | None = Field(None, gt=0.0, le=100.0, description="None: dynamic shift from the token count")
    distilled_cfg: float = Field(10.0, ge=0.0, le=100.0)
    cfg: float = Field(1.0, ge=0.0, le=100.0)
    cfg_rescale: float = Field(0.0, ge=0.0, le=1.0)
    cfg_zero_star: bool = False
    teacache: bool = True
    teacache_threshold: float = Field(0.15, ge=0.0, le=10.0)
    preview: bool = True
    max_prompt_tokens: int = Field(256, ge=8, le=1024)
    loras: list[Text] = Field(default_factory=list, max_length=limits.MAX_LORAS,
                             description="LoRA files on this machine, 'FILE[:weight]' (standalone host)")

    @field_validator("loras")
    @classmethod
    def _lora_files(cls, values: list[str]) -> list[str]:
        from framepack.models.lora import check_lora_file, parse_lora_spec

        with _as_value_error():
            for value in values:
                check_lora_file(parse_lora_spec(value)[0])
        return values

    @field_validator("image", "end_image", mode="before")
    @classmethod
    def _decode_image(cls, value: Any, info) -> np.ndarray | None:
        if value is None:
            return None
        with _as_value_error():
            return to_rgb_array(value, info.field_name.replace("_", " "))

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"resolution must be a multiple of 16 (got {value}); try {round(value / 16) * 16}")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> "GenerationRequest":
        if self.image is None and self.blank_start is None:
            raise ValueError("give a start image, or choose a blank start (black, white or noise) for text-to-video")
        if self.variant == "f1" and self.end_image is not None:
            raise ValueError(
                "an end image needs the original (inverted anti-drifting) model; "
                "the F1 model generates forward and cannot aim at a last frame"
            )
        pixels = sum(image.shape[0] * image.shape[1] for image in self.images())
        if pixels > limits.MAX_REQUEST_IMAGE_PIXELS:
            raise ValueError(f"the images are too large together ({pixels / 1024 ** 2:.0f} megapixels); "
                             f"{limits.request_pixels_text()}")
        if self.seed == -1:
            self.seed = random.randint(0, 2**32 - 1)
        with _as_value_error():
            self.plan()  # the schedule and keyframe placement errors surface here, before any model work
        return self

    def plan(self) -> VideoPlan:
        return plan_video(
            duration=self.duration,
            fps=self.fps,
            interpolation=self.interpolation,
            latent_window_size=self.latent_window_size,
            variant=self.variant,
            prompt=self.prompt,
            section_prompts=self.section_prompts,
            keyframes=[keyframe.when for keyframe in self.keyframes],
        )

    def images(self) -> list[np.ndarray]:
        """Every decoded image the request holds (start, end, keyframes)."""
        found = [self.image, self.end_image, *(keyframe.image for keyframe in self.keyframes)]
        return [image for image in found if isinstance(image, np.ndarray)]

    def without_images(self) -> "GenerationRequest":
        """A copy holding the settings only: what a finished job keeps (its images can be 100s of MB)."""
        keyframes = [keyframe.model_copy(update={"image": None}) for keyframe in self.keyframes]
        return self.model_copy(update={"image": None, "end_image": None, "keyframes": keyframes})

    def settings(self) -> dict[str, Any]:
        """The JSON-safe settings that reproduce this video (images summarised, not embedded)."""
        data = self.model_dump(exclude={"image", "end_image", "keyframes"})
        data["image"] = _describe(self.image)
        data["end_image"] = _describe(self.end_image)
        data["keyframes"] = [{"when": k.when, "image": _describe(k.image)} for k in self.keyframes]
        return data


@contextmanager
def _as_value_error():
    """pydantic reports only ValueErrors as field errors; ours carry the user-facing text."""
    try:
        yield
    except FramePackError as error:
        raise ValueError(str(error)) from None


def _describe(image: np.ndarray | None) -> str | None:
    return None if image is None else f"{image.shape[1]}x{image.shape[0]} RGB"


def build_request(**fields: Any) -> GenerationRequest:
    """Validate fields into a request, turning pydantic's report into one readable `InputError`."""
    try:
        return GenerationRequest(**fields)
    except ValidationError as error:
        raise InputError(format_validation_error(error)) from None


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "request"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where != "request" else message)
    return "; ".join(lines)
