"""Plan a FramePack video before anything is sampled: sections, frames, times, prompts, keyframes.

The plan is plain data. Every face shows it to the user ("N frames, S sections; which prompt each
section gets") before a long generation starts, the section loop walks it, and checkpoints store
it. Nothing here imports torch, so it is cheap to call on every keystroke in the UI.

Facts it encodes (see docs/ALGORITHM.md, "Sections and frames" and "Inverted anti-drifting"):

- one section adds ``4 * latent_window_size`` generated frames; the start image is one more;
- ``S = max(round(seconds * generated_fps / (4 * lws)), 1)`` with Python's ``round``;
- with interpolation factor ``k`` the generated frame ``g`` becomes output frame ``g * (k + 1)``;
- the original ("inverted anti-drifting") model samples the END of the video first.

Prompt schedule lines read ``[WHEN:] text``; WHEN is ``3``, ``2-4``, ``1.5s`` or ``1.5s-3s``.

Every error names the request field it belongs to (``error.field``): ``("section_prompts",)`` for
the schedule, ``("keyframes", i, "when")`` for keyframe i, ``("duration",)`` and so on.
"""

from __future__ import annotations

import bisect
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Iterator, NamedTuple, Sequence

from framepack.errors import FramePackError, InputError, ScheduleError
from framepack.request.limits import (LATENT_WINDOW_RANGE, MAX_DURATION, MAX_FPS, MAX_INTERPOLATION, MAX_KEYFRAMES,
                                      MAX_PROMPT_CHARS, MAX_SCHEDULE_CHARS, MAX_SCHEDULE_LINE_CHARS, MAX_SECTIONS,
                                      MAX_WHEN_DIGITS, MIN_FPS, VARIANTS)

__all__ = [
    "VARIANTS",
    "MAX_DURATION",
    "MAX_SECTIONS",
    "MAX_INTERPOLATION",
    "LATENT_WINDOW_RANGE",
    "SectionPlan",
    "VideoPlan",
    "When",
    "ScheduleLine",
    "section_count",
    "latent_paddings",
    "frame_spans",
    "parse_when",
    "looks_like_when",
    "parse_schedule",
    "resolve_when",
    "plan_video",
]

DISPLAY_PROMPT_CHARS = 100
"""Characters of the main prompt and of a section's text shown per row of ``VideoPlan.table``.

A table row is for reading; repeating a long prompt in each of thousands of rows would make the
table (and the JSON or HTML built from it) grow with sections x prompt length."""

_EPS = 1e-6
"""Tolerance, in output frames, when placing user times on frame boundaries (float noise)."""

_WHEN_HELP = "write a section (3), a section range (2-4), a time (1.5s) or a time range (1s-2.5s)"


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
        main = _shorten(self.prompt)
        shown: dict[str, tuple[str, str]] = {}  # section text -> (prompt, text) as shown, built once each
        rows = []
        for s in self.sections:
            if s.section_text not in shown:
                text = _shorten(s.section_text)
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


# ----------------------------------------------------------------------------------------------
# WHEN: parsing


@dataclass(frozen=True)
class When:
    """A parsed WHEN: sections ``start..end`` (1-based, inclusive) or times ``[start, end)`` in s.

    ``end`` is None for a single section or a single point in time.
    """

    kind: str  # "section" or "time"
    start: float
    end: float | None = None

    def describe(self) -> str:
        """The WHEN as a user would write it, for messages."""
        if self.kind == "section":
            if self.end is None:
                return f"section {self.start}"
            return f"sections {self.start}-{self.end}"
        if self.end is None:
            return f"{_fmt_num(self.start)}s"
        return f"{_fmt_num(self.start)}s-{_fmt_num(self.end)}s"


class ScheduleLine(NamedTuple):
    """One meaningful line of a prompt schedule; ``line_no`` counts every line, from 1."""

    line_no: int
    when: When | None
    text: str


# WHEN text is read in time linear in its length, whatever the text: a scanner steps through it
# with regular expressions that cannot backtrack (single character classes, and a possessive
# loop). The earlier pattern, a loop of overlapping pieces, took seconds on a long run of digits
# before a colon.
_SPACES = re.compile(r"\s*")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_UNIT = re.compile(r"s(?:ec(?:ond)?s?)?", re.IGNORECASE)  # s, sec, secs, second, seconds
_HAS_DIGIT = re.compile(r"\d")
# Unit words are s, sec, second (+ s): the letter after each piece decides which one it is, so
# matching greedily and never giving back (`*+`) accepts exactly the texts made of WHEN pieces.
_WHEN_PIECES = re.compile(r"(?:[\d\s.\-]|s(?:ec(?:ond)?)?)*+", re.IGNORECASE)


def looks_like_when(text: str) -> bool:
    """True when ``text`` is written with WHEN characters only, so a mistake in it is an error.

    WHEN characters are digits, spaces, '.', '-' and unit words; a digit must be among them. A
    prefix like "a man says" before a colon is prompt text, "3 ss" or "1..2" is a broken WHEN.
    """
    return bool(_HAS_DIGIT.search(text)) and _WHEN_PIECES.fullmatch(text) is not None


def _scan_when(text: str) -> tuple[str, bool, str | None, bool] | None:
    """``A [unit] [- B [unit]]`` with spaces anywhere between: (A, A has a unit, B, B has a unit)."""
    i = _SPACES.match(text).end()
    a = _NUMBER.match(text, i)
    if a is None:
        return None
    i = _SPACES.match(text, a.end()).end()
    a_unit = _UNIT.match(text, i)
    i = _SPACES.match(text, a_unit.end() if a_unit else i).end()
    b = b_unit = None
    if text.startswith("-", i):
        b = _NUMBER.match(text, _SPACES.match(text, i + 1).end())
        if b is None:
            return None
        i = _SPACES.match(text, b.end()).end()
        b_unit = _UNIT.match(text, i)
        i = _SPACES.match(text, b_unit.end() if b_unit else i).end()
    if i != len(text):
        return None
    return a[0], a_unit is not None, None if b is None else b[0], b_unit is not None


def parse_when(text: str, where: str = "when") -> When:
    """Parse ``3``, ``2-4``, ``1.5s``, ``1.5 s`` or ``1.5s-3s`` (a unit on either side makes times).

    ``sec``/``seconds`` are read like ``s``, since users write them and a silent miss would
    turn the WHEN into prompt text.

    Raises ScheduleError, prefixed with ``where``, for anything malformed or reversed.
    """
    scanned = _scan_when(text)
    if scanned is None:
        raise ScheduleError(f"{where}: {_quote(text.strip())} is not a section or time; {_WHEN_HELP}")
    a, a_unit, b, b_unit = scanned
    for number in (a, b):
        if number is not None and len(number) - number.count(".") > MAX_WHEN_DIGITS:
            raise ScheduleError(f"{where}: the number {_quote(number)} is too long for a section or time "
                                f"(at most {MAX_WHEN_DIGITS} digits)")
    if a_unit or b_unit:
        return _time_when(float(a), None if b is None else float(b), where)
    return _section_when(a, b, where)


def _time_when(start: float, end: float | None, where: str) -> When:
    """Build a time WHEN; an empty or reversed range is a typo, never silently swapped."""
    if end is not None and end < start:
        raise ScheduleError(
            f"{where}: time range {_fmt_num(start)}s-{_fmt_num(end)}s ends before it starts; "
            f"write {_fmt_num(end)}s-{_fmt_num(start)}s"
        )
    if end is not None and end == start:
        raise ScheduleError(
            f"{where}: time range {_fmt_num(start)}s-{_fmt_num(end)}s is empty; "
            f"use {_fmt_num(start)}s for a single moment"
        )
    return When("time", start, end)


def _section_when(a: str, b: str | None, where: str) -> When:
    """Build a section WHEN; numbers must be whole and counted from 1, as the table shows them."""
    for value in (a, b):
        if value is not None and "." in value:
            raise ScheduleError(
                f"{where}: section numbers are whole numbers, not '{value}'; add 's' for a time ({value}s)"
            )
    start = int(a)
    end = None if b is None else int(b)
    if start < 1 or (end is not None and end < 1):
        raise ScheduleError(f"{where}: sections are numbered from 1, there is no section 0")
    if end is not None and end < start:
        raise ScheduleError(f"{where}: section range {start}-{end} is reversed; write {end}-{start}")
    return When("section", start, None if end == start else end)


def _split_line(line: str, line_no: int) -> tuple[When | None, str]:
    """Split ``WHEN: text``; a colon after ordinary words is left in the text."""
    prefix, colon, rest = line.partition(":")
    if not colon:
        return None, line
    if looks_like_when(prefix):
        return parse_when(prefix, _line_label(line_no)), rest.strip()
    return None, line


def parse_schedule(text: str) -> list[ScheduleLine]:
    """Parse a section prompt schedule, one entry a line; blank and ``#`` lines are skipped.

    Line numbers count every line so error messages point where the user looks. A line longer
    than ``MAX_SCHEDULE_LINE_CHARS`` is refused: the text encoder would cut it anyway.
    """
    lines: list[ScheduleLine] = []
    for line_no, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_SCHEDULE_LINE_CHARS:
            raise ScheduleError(f"{_line_label(line_no)}: {len(line)} characters is too long for one line "
                                f"(at most {MAX_SCHEDULE_LINE_CHARS})")
        if len(lines) == MAX_SECTIONS:  # each line needs a section of its own; no video has more
            raise ScheduleError(f"{_line_label(line_no)}: more than {MAX_SECTIONS} lines, the most sections "
                                f"a video can have")
        when, body = _split_line(line, line_no)
        lines.append(ScheduleLine(line_no, when, body.strip()))
    return lines


# ----------------------------------------------------------------------------------------------
# WHEN: placing on sections


class _Spans:
    """Section spans with their start and end frames as sorted lists, for binary search.

    Built once per plan: placing a schedule line or keyframe then costs O(log sections) plus the
    sections it covers, never a scan of every section per line.
    """

    def __init__(self, spans: Sequence[tuple[int, int]]):
        self.spans = spans
        self.starts = [start for start, _ in spans]
        self.ends = [end for _, end in spans]

    def __len__(self) -> int:
        return len(self.spans)


def resolve_when(
    when: When, spans: Sequence[tuple[int, int]], fps: float, where: str = "when"
) -> list[int]:
    """Section indices (0-based, time order) that ``when`` covers.

    ``spans`` are the output-frame spans from ``frame_spans`` (or ``VideoPlan.frame_spans``);
    taking spans rather than a finished plan lets the planner place prompts while building it.
    A time point falls in the section showing that moment (the very end counts as the last
    section); a time range ``[a, b)`` takes every section it overlaps.
    """
    return _resolve(when, spans if isinstance(spans, _Spans) else _Spans(spans), fps, where)


def _resolve(when: When, spans: _Spans, fps: float, where: str) -> list[int]:
    if when.kind == "section":
        return _resolve_sections(when, len(spans), where)
    _check_times_inside(when, spans, fps, where)
    if when.end is None:
        return [_section_at(when.start * fps, spans)]
    low, high = when.start * fps, when.end * fps
    first = bisect.bisect_right(spans.ends, low + _EPS)  # first section ending after low
    last = bisect.bisect_left(spans.starts, high - _EPS)  # sections starting before high
    return list(range(first, last))


def _resolve_sections(when: When, count: int, where: str) -> list[int]:
    """Section numbers to indices, refusing numbers the video does not have."""
    last = when.start if when.end is None else when.end
    if last > count:
        raise ScheduleError(
            f"{where}: section {last} does not exist; the video has {_plural(count, 'section')} (1-{count})"
        )
    return list(range(int(when.start) - 1, int(last)))


def _check_times_inside(when: When, spans: _Spans, fps: float, where: str) -> None:
    """Refuse times past the true end of the video (which may be shorter than requested)."""
    total = spans.ends[-1]
    for t in (when.start, when.end):
        if t is not None and t * fps > total + _EPS:
            raise ScheduleError(
                f"{where}: time {_fmt_num(t)}s is past the end of the {_fmt_limit(total / fps)}s video"
            )


def _section_at(position: float, spans: _Spans) -> int:
    """Index of the section holding the frame shown at ``position`` (in output frames)."""
    frame = min(math.floor(position + _EPS), spans.ends[-1] - 1)
    return bisect.bisect_right(spans.ends, frame)


# ----------------------------------------------------------------------------------------------
# Prompts and keyframes per section


def _assign_schedule(lines: Sequence[ScheduleLine], spans: _Spans, fps: float) -> list[str]:
    """Section text per section: timed lines where they say, untimed ones spread over the rest."""
    texts = [""] * len(spans)
    owner: dict[int, int] = {}
    for line in lines:
        if line.when is None:
            continue
        for index in _resolve(line.when, spans, fps, _line_label(line.line_no)):
            if index in owner:
                raise ScheduleError(
                    f"section prompt lines {owner[index]} and {line.line_no} both cover section {index + 1}"
                )
            owner[index] = line.line_no
            texts[index] = line.text
    untimed = [line for line in lines if line.when is None]
    free = [i for i in range(len(spans)) if i not in owner]
    for index, line in _spread(untimed, free, len(spans)):
        texts[index] = line.text
    return texts


def _spread(
    untimed: Sequence[ScheduleLine], free: Sequence[int], count: int
) -> list[tuple[int, ScheduleLine]]:
    """Pair free sections with untimed lines in order, stretching lines over extra sections.

    Free section j gets line ``floor(j * L / F)``, so each line holds a run of neighbouring
    sections and the story keeps its order.
    """
    if not untimed:
        return []
    if len(untimed) > len(free):
        extra = untimed[len(free)]
        taken = count - len(free)
        fits = f"only {len(free)} fit" if taken == 0 else f"timed lines take {taken}, so only {len(free)} fit"
        raise ScheduleError(
            f"{_line_label(extra.line_no)}: too many lines without a time; the video has "
            f"{_plural(count, 'section')} and {fits}"
        )
    lines, slots = len(untimed), len(free)
    return [(index, untimed[j * lines // slots]) for j, index in enumerate(free)]


def _assign_keyframes(keyframes: Sequence[str], spans: _Spans, fps: float) -> list[int | None]:
    """Keyframe index per section; each keyframe needs a WHEN and a section takes only one."""
    chosen: list[int | None] = [None] * len(spans)
    for number, raw in enumerate(keyframes, start=1):
        where = f"keyframe {number}"
        with _field("keyframes", number - 1, "when"):
            for index in _resolve(_keyframe_when(raw, where), spans, fps, where):
                if chosen[index] is not None:
                    raise ScheduleError(
                        f"keyframes {chosen[index] + 1} and {number} both fall on section {index + 1}; "
                        "a section takes one keyframe"
                    )
                chosen[index] = number - 1
    return chosen


def _keyframe_when(raw: Any, where: str) -> When:
    """A keyframe's WHEN string (a trailing colon is tolerated; text is not)."""
    text = "" if raw is None else str(raw).strip()
    prefix, colon, rest = text.partition(":")
    if colon and rest.strip():
        raise ScheduleError(f"{where}: give only a section or time, not text ('{rest.strip()}')")
    if not prefix.strip():
        raise ScheduleError(f"{where}: give a section or time")
    return parse_when(prefix, where)


def _assign_lora_weights(loras: Sequence[tuple[str, float, Sequence[tuple[str, float]]]], spans: _Spans,
                         fps: float) -> list[list[float]]:
    """Weight per section for each LoRA; two entries of one LoRA may not cover the same section.

    Each entry costs its sections plus O(log sections), as prompt lines do (``_resolve``).
    """
    result = []
    for number, (name, elsewhere, schedule) in enumerate(loras):
        weights = [float(elsewhere)] * len(spans)
        owner: dict[int, int] = {}
        for entry, (when_text, weight) in enumerate(schedule):
            where = f"LoRA {name} schedule entry {entry + 1}"
            with _field("loras", number, "schedule", entry, "when"):
                for index in _resolve(parse_when(when_text, where), spans, fps, where):
                    if index in owner:
                        raise ScheduleError(f"LoRA {name}: schedule entries {owner[index] + 1} and {entry + 1} "
                                            f"both cover section {index + 1}")
                    owner[index] = entry
                    weights[index] = float(weight)
        result.append(weights)
    return result


def _lora_text(names: Sequence[str], weights: Sequence[float]) -> str:
    """``style 0.8, motion 0``: each LoRA's weight in one section, for the plan table."""
    return ", ".join(f"{_shorten(name, 40)} {weight:g}" for name, weight in zip(names, weights))


def _join_prompt(main: str, section_text: str) -> str:
    """Main prompt, then the section's own text, one space between (either may be empty)."""
    return " ".join(part for part in (main.strip(), section_text.strip()) if part)


# ----------------------------------------------------------------------------------------------
# Settings validation


@contextmanager
def _field(*field: str | int) -> Iterator[None]:
    """Errors raised inside belong to `field` (the caller knows which field it is checking)."""
    try:
        yield
    except FramePackError as error:
        if error.field is None:
            error.field = field
        raise


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


def _line_label(line_no: int) -> str:
    return f"section prompt line {line_no}"


def _quote(text: str, limit: int = 40) -> str:
    """``'text'`` for a message, shortened so that a huge input never makes a huge error."""
    return f"'{_shorten(text, limit)}'"


def _shorten(text: str, limit: int = DISPLAY_PROMPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _fmt_num(value: float) -> str:
    """1.5 -> '1.5', 3.0 -> '3'; how users typed it, without float noise."""
    return f"{value:g}"


def _fmt_fps(fps: float) -> str:
    """30 -> '30', 30000/1001 -> '29.97'."""
    return f"{fps:.3f}".rstrip("0").rstrip(".")


def _fmt_limit(seconds: float) -> str:
    """A limit shown to 2 decimals, rounded DOWN so that the value shown is itself allowed."""
    text = f"{math.floor(seconds * 100 + 1e-6) / 100:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
