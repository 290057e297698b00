"""What to write for a finished (or stopped) generation, checked before sampling starts.

The checks here need nothing but the values: types, ranges, choices, file name length, and that
something is saved at all. Whether the codec opens on this machine, fits the container, takes
the pixel format and the encoder options needs FFmpeg, so the jobs layer checks that when the
job is submitted (`framepack.jobs.checks`). Every error is located under `("output", ...)`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from framepack.errors import InputError
from framepack.request import limits
from framepack.request.model import Text, validated

OUTPUT = "output"
"""Where output options sit in a job (the API body's key, the first part of their errors' field)."""

HOST_MODEL_PREFIX = limits.HOST_MODEL_PREFIX


def is_host_model(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(HOST_MODEL_PREFIX)


class OutputOptions(BaseModel):
    """What to write for a finished (or stopped) generation."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    save_video: bool = Field(True, description="write a video (needs a codec other than 'none')")
    codec: Text = Field(limits.DEFAULT_CODEC, min_length=1, max_length=limits.MAX_CODEC_NAME_CHARS,
                        description="video codec, 'none' for no video")
    container: Literal[limits.CONTAINERS] = Field("mp4", description="video file type")
    codec_options: Text = Field("", max_length=limits.MAX_CODEC_OPTIONS_CHARS,
                                description="key=value,... (key:value also accepted); only options on the "
                                            "encoder's allowlist (see README, Security)")
    crf: Optional[int] = Field(16, ge=limits.CRF_RANGE[0], le=limits.CRF_RANGE[1],
                               description="quality, lower is better (the codec's crf/cq option)")
    pix_fmt: Optional[Text] = Field(None, max_length=limits.MAX_CODEC_NAME_CHARS,
                                    description="pixel format (default: the codec's best for playback)")
    save_frames: bool = Field(False, description="also save raw frames (.safetensors)")
    save_images: bool = Field(False, description="also save numbered frame images")
    image_format: Literal[limits.IMAGE_FORMATS] = Field("png", description="format of the frame images")
    interpolation_method: Literal[limits.INTERPOLATION_METHODS] = Field(
        "flow", description="how interpolated frames are made")
    upscale: float = Field(1.0, ge=limits.UPSCALE_RANGE[0], le=limits.UPSCALE_RANGE[1],
                           description="scale the frames by this factor before writing them (1 = off)")
    upscaler: Text = Field("lanczos", min_length=1, max_length=limits.MAX_LORA_PATH_CHARS,
                           description="'lanczos', an ESRGAN-family .safetensors model (a name from the "
                                       "server's model folder), or inside SD.Next 'sdnext:<its upscaler name>'")
    interpolation_model: Optional[Text] = Field(None, min_length=1, max_length=limits.MAX_LORA_PATH_CHARS,
                                                description="RIFE .safetensors model for interpolation_method "
                                                            "'rife' (a name from the server's model folder), or "
                                                            "inside SD.Next 'sdnext:RIFE' (its own RIFE)")
    filename: Text = Field("framepack", max_length=limits.MAX_FILENAME_CHARS, description="file name stem")
    keep_incomplete: bool = Field(True, description="keep the partial outputs of a stopped job")
    keep_checkpoints: bool = Field(False, description="keep the job's checkpoints when it completes "
                                                      "(to re-roll from a section later)")

    @model_validator(mode="after")
    def _something_to_save(self) -> "OutputOptions":
        if not (self.writes_video or self.save_frames or self.save_images):
            raise InputError("nothing to save: enable the video (with a codec), raw frames or frame images", ())
        if self.interpolation_method == "rife" and not self.interpolation_model:
            raise InputError("interpolation method 'rife' needs a RIFE model file (interpolation_model)",
                             ("interpolation_model",))
        return self

    @property
    def writes_video(self) -> bool:
        return self.save_video and self.codec != limits.NO_VIDEO_CODEC


def build_output(**fields: Any) -> OutputOptions:
    """Validate output options; every problem is an `InputError` located under `("output", ...)`."""
    return build_output_from(fields)


def build_output_from(fields: Any, *, strict: bool = False) -> OutputOptions:
    try:
        return validated(OutputOptions, fields, strict=strict)
    except InputError as error:
        raise error.located(OUTPUT) from None
