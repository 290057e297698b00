"""The checks a job needs before it is queued that the request layer cannot make: they need io.

Does the codec open on this machine, fit the container, take the pixel format, crf and encoder
options (FFmpeg answers, in memory, cached per process)? Is each LoRA an existing `.safetensors`
file? Every problem names its field (`("output", "codec")`, `("loras", 1)`, ...), and all of them
are reported at once. The queue runs these at submission; faces that show every problem of a
form together (the API, the tab) call them while validating.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from framepack.errors import FramePackError, InputError, InputErrors
from framepack.request.model import GenerationRequest
from framepack.request.output import OUTPUT, OutputOptions


def check_job(request: GenerationRequest, options: OutputOptions) -> None:
    """Raise `InputErrors` naming every output and LoRA problem; return quietly when there is none."""
    problems = output_problems(options) + model_file_problems(options, request) + lora_problems(request)
    if problems:
        raise InputErrors(problems)


def model_file_problems(options: OutputOptions, request: GenerationRequest) -> list[FramePackError]:
    """The upscaler and RIFE model files exist and are `.safetensors` (the API resolved names already)."""
    from framepack.models.upscalers import check_model_file
    from framepack.request.output import is_host_model

    problems: list[FramePackError] = []  # the host's own tools (sdnext:...) are checked by `host_model_problems`
    if options.upscale != 1.0 and options.upscaler != "lanczos" and not is_host_model(options.upscaler):
        with _collect(problems, "upscaler"):
            check_model_file(options.upscaler, "upscaler")
    if request.interpolation and options.interpolation_method == "rife" and not is_host_model(
            options.interpolation_model):
        with _collect(problems, "interpolation_model"):
            check_model_file(options.interpolation_model, "RIFE")
    return problems


def host_model_problems(host, options: OutputOptions, request: GenerationRequest) -> list[FramePackError]:
    """`sdnext:...` upscaler / RIFE choices: does this host have them? (It finds them by name; nothing loads.)"""
    from framepack.request.output import is_host_model

    problems: list[FramePackError] = []
    if options.upscale != 1.0 and is_host_model(options.upscaler):
        with _collect(problems, "upscaler"):
            host.host_upscaler(options.upscaler, options.upscale)
    if request.interpolation and options.interpolation_method == "rife" and is_host_model(options.interpolation_model):
        with _collect(problems, "interpolation_model"):
            host.host_interpolator(options.interpolation_model)
    return problems


def check_output(options: OutputOptions) -> None:
    problems = output_problems(options)
    if problems:
        raise InputErrors(problems)


def output_problems(options: OutputOptions) -> list[FramePackError]:
    """The encoder settings checked before any frame exists (codec first: the rest depends on it)."""
    if not options.writes_video:
        return []
    from framepack.io import codecs

    problems = codec_problems(options.codec)
    if problems:
        return problems
    with _collect(problems, "container"):
        codecs.check_compatible(options.codec, codecs.container_for(f"video.{options.container}"))
    with _collect(problems, "pix_fmt"):
        codecs.pick_pix_fmt(options.codec, options.pix_fmt)
    parsed = None
    with _collect(problems, "codec_options"):
        parsed = codecs.parse_options(options.codec_options)
    if parsed is not None:
        merged = None
        with _collect(problems, "crf"):
            merged = codecs.with_quality(options.codec, parsed, options.crf)
        if merged is not None:
            with _collect(problems, "codec_options"):
                codecs.check_options(options.codec, codecs.expand_aliases(merged))
    return problems


def codec_problems(codec: str) -> list[FramePackError]:
    """Whether `codec` opens on this machine (`("output", "codec")`); checked alone when the other
    output options are invalid, so a form still hears about every problem at once."""
    from framepack.io import codecs

    problems: list[FramePackError] = []
    if codec != codecs.NONE:
        with _collect(problems, "codec"):
            codecs.check_codec(codec)
    return problems


def lora_problems(request: GenerationRequest) -> list[FramePackError]:
    """Each LoRA must be an existing `.safetensors` file, listed once."""
    from framepack.models.lora import check_lora_file

    problems: list[FramePackError] = []
    seen = {}
    for index, spec in enumerate(request.loras):
        with _collect(problems, "loras", index, within=None):
            file = check_lora_file(spec.path)
            if file in seen:
                raise InputError(f"LoRA {file.name} is listed twice (entries {seen[file] + 1} and {index + 1}); "
                                     "give it once with the weight you want")
            seen[file] = index
    return problems


@contextmanager
def _collect(problems: list[FramePackError], *field: str | int, within: str | None = OUTPUT) -> Iterator[None]:
    """Keep a problem raised inside, located at `field` (under `within`)."""
    try:
        yield
    except FramePackError as error:
        error.field = (*(() if within is None else (within,)), *field)
        problems.append(error)
