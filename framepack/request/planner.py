"""Plan a FramePack video before anything is sampled: sections, frames, times, prompts, keyframes.

The plan is plain data. Every face shows it to the user ("N frames, S sections; which prompt each
section gets") before a long generation starts, the section loop walks it, and checkpoints store
it. Nothing here imports torch, so it is cheap to call on every keystroke in the UI.

Facts it encodes (see docs/ALGORITHM.md, "Sections and frames" and "Inverted anti-drifting"):

- one section adds ``4 * latent_window_size`` generated frames; the start image is one more;
- ``S = max(round(seconds * generated_fps / (4 * lws)), 1)`` with Python's ``round``;
- with interpolation factor ``k`` the generated frame ``g`` becomes output frame ``g * (k + 1)``;
- the original ("inverted anti-drifting") model samples the END of the video first.

Prompt schedule lines read ``[WHEN:] text``; WHEN is ``3``, ``2-4``, ``1.5s`` or ``1.5s-3s``. Reading
them and placing them (and keyframes and LoRA schedule entries) on sections is
``framepack.request.schedule``; this module is the arithmetic and the checks around it.

Every error names the request field it belongs to (``error.field``): ``("section_prompts",)`` for
the schedule, ``("keyframes", i, "when")`` for keyframe i, ``("duration",)`` and so on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Sequence

from framepack.errors import InputError
from framepack.request.limits import (LATENT_WINDOW_RANGE, MAX_DURATION, MAX_FPS, MAX_INTERPOLATION, MAX_KEYFRAMES,
                                      MAX_PROMPT_CHARS, MAX_SCHEDULE_CHARS, MAX_SECTIONS, MIN_FPS, VARIANTS)
from framepack.request.schedule import (_assign_keyframes, _assign_lora_weights, _assign_schedule, _field, _fmt_num,
                                        _plural, _shorten, _Spans, parse_schedule, parse_when, resolve_when)

__all__ = [
    "VARIANTS",
    "MAX_DURATION",
    "MAX_SECTIONS",
    "MAX_INTERPOLATION",
    "LATENT_WINDOW_RANGE",
    "SectionPlan",
    "VideoPlan",
    "section_count",
    "latent_paddings",
    "frame_spans",
    "plan_video",
]

DISPLAY_PROMPT_CHARS = 100
"""Characters of the main prompt and of a section's text shown per row of ``VideoPlan.table``.

A table row is for reading; repeating a long prompt in each of thousands of rows would make the
table (and the JSON or HTML built from it) grow with sections x prompt length."""


# ----------------------------------------------------------------------------------------------
# Plan data


class SectionPlan(NamedTuple):
    """One section of the output video, in time order.

    Its prompt is the video's main prompt plus its own text, joined when asked for: a plan of
    a thousand sections holds one main prompt, not a thousand copies of it.
    """

    index: int
    number: int
    padding: int | None
    time_start: float
    time_end: float
    frame_start: int
    frame_end: int
    section_text: str
    keyframe: int | None
    lora_weights: tuple[float, ...] = ()
    """Weight of each of the request's LoRAs in this section (their order in ``VideoPlan.lora_names``)."""
    main_prompt: str = ""

    @property
    def prompt(self) -> str:
        """What the text encoder reads for this section."""
        return _join_prompt(self.main_prompt, self.section_text)

    @property
    def frame_count(self) -> int:
        """Output frames this section contributes (interpolated ones included)."""
        return self.frame_end - self.frame_start


_SECTION_FIELDS = tuple(name for name in SectionPlan._fields if name != "main_prompt")


@dataclass(frozen=True)
class VideoPlan:
    """Everything decided about a video before sampling; JSON-friendly through ``to_dict``."""

    variant: str
    fps: float
    interpolation: int
    latent_window_size: int
    generated_fps: float
    num_sections: int
    generated_frames: int
    total_frames: int
    duration: float
    requested_duration: float
    sections: tuple[SectionPlan, ...]
    generation_order: tuple[int, ...]
    prompt: str = ""
    """The main prompt; each section's ``prompt`` is it plus the section's own text."""
    lora_names: tuple[str, ...] = ()
    """The request's LoRAs (file names), in order; each section holds their weights."""

    @property
    def frame_spans(self) -> list[tuple[int, int]]:
        """Output-frame spans ``[start, end)`` per section, the shape ``resolve_when`` takes."""
        return [(s.frame_start, s.frame_end) for s in self.sections]

    def in_generation_order(self) -> tuple[SectionPlan, ...]:
        """Sections in the order the sampler visits them (the section loop walks this)."""
        return tuple(self.sections[i] for i in self.generation_order)

    def resolve(self, when_text: str, where: str = "when") -> list[int]:
        """Section indices a WHEN string covers in this plan; lets the UI preview a schedule entry."""
        return resolve_when(parse_when(when_text, where), self.frame_spans, self.fps, where)

    def summary(self) -> str:
        """One line for the UI and CLI: what will come out, exactly."""
        sections = _plural(self.num_sections, "section")
        head = f"{self.total_frames} frames ({self.duration:.2f} s at {_fmt_fps(self.fps)} fps), {sections}"
        if self.interpolation == 0:
            return f"{head}, all {self.generated_frames} generated"
        return f"{head}, {self.generated_frames} generated + {self.interpolation} interpolated per gap"

    def table(self) -> list[dict]:
        """Rows for a section preview table; keyframe and order are 1-based, as users count.

        ``prompt`` and ``section_text`` are for reading: a long main prompt or section text is
        shortened (``DISPLAY_PROMPT_CHARS``, ending in "…"), so the table stays small however long
        the video; the exact prompts are in the sections themselves and in ``to_dict``.
        """
        position = {index: n for n, index in enumerate(self.generation_order, start=1)}
        main = _shorten(self.prompt, DISPLAY_PROMPT_CHARS)
        shown: dict[str, tuple[str, str]] = {}  # section text -> (prompt, text) as shown, built once each
        rows = []
        for s in self.sections:
            if s.section_text not in shown:
                text = _shorten(s.section_text, DISPLAY_PROMPT_CHARS)
                shown[s.section_text] = (_join_prompt(main, text), text)
            prompt, text = shown[s.section_text]
            rows.append({
                "number": s.number,
                "time": f"{s.time_start:.2f}-{s.time_end:.2f} s",
                "frames": f"{s.frame_start}-{s.frame_end - 1}",
                "order": position[s.index],
                "prompt": prompt,
                "section_text": text,
                "keyframe": None if s.keyframe is None else s.keyframe + 1,
            })
            if self.lora_names:
                rows[-1]["loras"] = _lora_text(self.lora_names, s.lora_weights)
        return rows

    def to_dict(self) -> dict:
        """Plain JSON-serialisable data; ``from_dict`` turns it back into the same plan.

        The main prompt is stored once; each section keeps only its own text.
        """
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sections", "generation_order")}
        data["lora_names"] = list(self.lora_names)
        data["sections"] = [{**dict(zip(_SECTION_FIELDS, s)), "lora_weights": list(s.lora_weights)}
                            for s in self.sections]
        data["generation_order"] = list(self.generation_order)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "VideoPlan":
        """Rebuild a plan saved with ``to_dict`` (checkpoints, job records)."""
        fields_ = dict(data)
        main = fields_["prompt"]
        fields_["sections"] = tuple(SectionPlan(**{**s, "lora_weights": tuple(s.get("lora_weights", ()))},
                                                main_prompt=main) for s in data["sections"])
        fields_["lora_names"] = tuple(data.get("lora_names", ()))
        fields_["generation_order"] = tuple(data["generation_order"])
        return cls(**fields_)


# ----------------------------------------------------------------------------------------------
# Section arithmetic


def section_count(duration: float, generated_fps: float, latent_window_size: int) -> int:
    """Sections the reference demo would sample for this length (Python ``round``, at least 1).

    Kept identical to the reference so that a given duration yields the video users expect.
    """
    return max(round(duration * generated_fps / (4 * latent_window_size)), 1)


def latent_paddings(num_sections: int) -> list[int]:
    """Inverted-mode latent paddings in generation order (END first, padding 0 last).

    The reference caps the padding at 3 for long videos: past that the blank gap stops helping.
    """
    if num_sections < 1:
        raise InputError("a video needs at least 1 section")
    if num_sections > 4:
        return [3] + [2] * (num_sections - 3) + [1, 0]
    return list(range(num_sections - 1, -1, -1))


def frame_spans(num_sections: int, latent_window_size: int, interpolation: int) -> list[tuple[int, int]]:
    """Output-frame spans ``[start, end)`` per section in time order.

    Section i owns generated frames ``1 + i*4*lws .. (i+1)*4*lws`` (section 0 also frame 0, the
    start image) and the interpolated frames just before each of them, so spans are contiguous.
    """
    step = 4 * latent_window_size * (interpolation + 1)
    return [(0 if i == 0 else i * step + 1, (i + 1) * step + 1) for i in range(num_sections)]


def _lora_text(names: Sequence[str], weights: Sequence[float]) -> str:
    """``style 0.8, motion 0``: each LoRA's weight in one section, for the plan table."""
    return ", ".join(f"{_shorten(name, 40)} {weight:g}" for name, weight in zip(names, weights))


def _join_prompt(main: str, section_text: str) -> str:
    """Main prompt, then the section's own text, one space between (either may be empty)."""
    return " ".join(part for part in (main.strip(), section_text.strip()) if part)


# ----------------------------------------------------------------------------------------------
# Settings validation


def _check_number(name: str, value: Any, field: str, unit: str = "") -> float:
    """A real, finite number; booleans and strings are refused rather than coerced."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, not {_shorten(repr(value), 40)}", (field,))
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {value!r}", (field,))
    if value <= 0:
        raise InputError(f"{name} must be greater than 0{unit}", (field,))
    return float(value)


def _check_fps(value: Any) -> float:
    """Frames per second within the limits every writer can store exactly."""
    fps = _check_number("fps", value, "fps")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise InputError(f"fps must be between {_fmt_num(MIN_FPS)} and {_fmt_num(MAX_FPS)}, not {_fmt_num(fps)}",
                         ("fps",))
    return fps


def _check_whole(name: str, value: Any, field: str, low: int, high: int) -> int:
    """A whole number in ``[low, high]``; 2.0 from a UI slider is fine, 2.5 is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a whole number, not {value!r}", (field,))
    if isinstance(value, float) and not value.is_integer():
        raise InputError(f"{name} must be a whole number, not {value!r}", (field,))
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, not {_fmt_num(value)}", (field,))
    return int(value)


def _check_variant(variant: Any) -> str:
    """One of VARIANTS, with the choices in the message."""
    if variant not in VARIANTS:
        choices = ", ".join(f"'{v}'" for v in VARIANTS)
        raise InputError(f"unknown variant {variant!r}; choose one of {choices}", ("variant",))
    return variant


def _check_text(name: str, value: Any, field: str, limit: int) -> str:
    """Prompt text up to ``limit`` characters; None means empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, not {type(value).__name__}", (field,))
    if len(value) > limit:
        raise InputError(f"{name} is too long: {len(value)} characters, at most {limit}", (field,))
    return value


def _check_keyframes(keyframes: Any) -> list:
    """A list of WHEN strings; a bare string is refused, it would be read letter by letter."""
    if keyframes is None:
        return []
    if isinstance(keyframes, str):
        raise InputError("keyframes must be a list with one section or time per keyframe image", ("keyframes",))
    keyframes = list(keyframes)
    if len(keyframes) > MAX_KEYFRAMES:
        raise InputError(f"keyframes: {len(keyframes)} given, at most {MAX_KEYFRAMES}", ("keyframes",))
    return keyframes


def _checked_count(duration: float, generated_fps: float, lws: int) -> int:
    """Section count, refusing plans too large to be meant (the duration is what to change)."""
    if duration > MAX_DURATION:
        raise InputError(f"duration {_fmt_num(duration)} s is longer than the {_fmt_num(MAX_DURATION)} s limit",
                         ("duration",))
    count = section_count(duration, generated_fps, lws)
    if count > MAX_SECTIONS:
        raise InputError(
            f"this video would need {count} sections, more than the {MAX_SECTIONS} limit; "
            "lower fps, raise interpolation or latent window size, or shorten it", ("duration",)
        )
    return count


# ----------------------------------------------------------------------------------------------
# The plan


def plan_video(
    *,
    duration: float,
    fps: float,
    interpolation: int = 0,
    latent_window_size: int = 9,
    variant: str = "original",
    prompt: str = "",
    section_prompts: str = "",
    keyframes: Sequence[str] = (),
    loras: Sequence[tuple[str, float, Sequence[tuple[str, float]]]] = (),
) -> VideoPlan:
    """Decide sections, frames, times, prompts, keyframes and LoRA weights for one video.

    ``loras`` holds (name, weight elsewhere, [(WHEN, weight), ...]) per LoRA: each section gets
    the weight of the schedule entry covering it, else the LoRA's weight elsewhere.

    ``keyframes`` holds one WHEN string per keyframe image; the images are not the planner's
    business. Raises InputError for bad settings and ScheduleError for schedule problems, each
    naming its request field (``error.field``).
    """
    duration = _check_number("duration", duration, "duration", " s")
    fps = _check_fps(fps)
    k = _check_whole("interpolation", interpolation, "interpolation", 0, MAX_INTERPOLATION)
    lws = _check_whole("latent window size", latent_window_size, "latent_window_size", *LATENT_WINDOW_RANGE)
    variant = _check_variant(variant)
    prompt = _check_text("prompt", prompt, "prompt", MAX_PROMPT_CHARS)
    with _field("section_prompts"):
        schedule = parse_schedule(_check_text("section prompts", section_prompts, "section_prompts",
                                              MAX_SCHEDULE_CHARS))
    keyframes = _check_keyframes(keyframes)

    generated_fps = fps / (k + 1)
    count = _checked_count(duration, generated_fps, lws)
    spans = _Spans(frame_spans(count, lws, k))
    with _field("section_prompts"):
        texts = _assign_schedule(schedule, spans, fps)
    chosen = _assign_keyframes(keyframes, spans, fps)
    weights = _assign_lora_weights(loras, spans, fps)
    order, paddings = _generation(variant, count)

    main = prompt.strip()
    sections = tuple(
        SectionPlan(i, i + 1, paddings[i], start / fps, end / fps, start, end, texts[i], chosen[i],
                    tuple(lora[i] for lora in weights), main)
        for i, (start, end) in enumerate(spans.spans)
    )
    generated = 4 * lws * count + 1
    total = (generated - 1) * (k + 1) + 1
    return VideoPlan(
        variant=variant,
        fps=fps,
        interpolation=k,
        latent_window_size=lws,
        generated_fps=generated_fps,
        num_sections=count,
        generated_frames=generated,
        total_frames=total,
        duration=total / fps,
        requested_duration=duration,
        sections=sections,
        generation_order=order,
        prompt=main,
        lora_names=tuple(name for name, _, _ in loras),
    )


def _generation(variant: str, count: int) -> tuple[tuple[int, ...], list[int | None]]:
    """Sampling order and per-section padding (indexed by time order).

    The original model draws the end first and walks back to the start image, so the section
    visited g-th is time index ``count - 1 - g`` and gets ``latent_paddings(count)[g]``.
    """
    if variant == "f1":
        return tuple(range(count)), [None] * count
    order = tuple(range(count - 1, -1, -1))
    paddings: list[int | None] = [None] * count
    for padding, index in zip(latent_paddings(count), order):
        paddings[index] = padding
    return order, paddings


# ----------------------------------------------------------------------------------------------
# Formatting helpers


def _fmt_fps(fps: float) -> str:
    """30 -> '30', 30000/1001 -> '29.97'."""
    return f"{fps:.3f}".rstrip("0").rstrip(".")
