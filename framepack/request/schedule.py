"""The WHEN and section-prompt schedule: parse ``[WHEN:] text`` lines, place them on sections.

WHEN is ``3``, ``2-4``, ``1.5s`` or ``1.5s-3s``. Prompt schedule lines, keyframes and LoRA schedule
entries each carry one; placing them turns a WHEN into the section indices it covers, given the
plan's output-frame spans (``framepack.request.planner`` builds the plan around these answers).
Parsing is linear in the text's length, whatever the text. Nothing here imports torch.

Every error names the request field it belongs to (``error.field``): ``("section_prompts",)`` for
the schedule, ``("keyframes", i, "when")`` for keyframe i, and so on.
"""

from __future__ import annotations

import bisect
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Sequence

from framepack.errors import FramePackError, ScheduleError
from framepack.request.limits import MAX_SCHEDULE_LINE_CHARS, MAX_SECTIONS, MAX_WHEN_DIGITS

__all__ = [
    "When",
    "ScheduleLine",
    "parse_when",
    "looks_like_when",
    "parse_schedule",
    "resolve_when",
]

_EPS = 1e-6
"""Tolerance, in output frames, when placing user times on frame boundaries (float noise)."""

_WHEN_HELP = "write a section (3), a section range (2-4), a time (1.5s) or a time range (1s-2.5s)"

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


@contextmanager
def _field(*field: str | int) -> Iterator[None]:
    """Errors raised inside belong to `field` (the caller knows which field it is checking)."""
    try:
        yield
    except FramePackError as error:
        if error.field is None:
            error.field = field
        raise


# ----------------------------------------------------------------------------------------------
# Formatting helpers


def _line_label(line_no: int) -> str:
    return f"section prompt line {line_no}"


def _quote(text: str, limit: int = 40) -> str:
    """``'text'`` for a message, shortened so that a huge input never makes a huge error."""
    return f"'{_shorten(text, limit)}'"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _fmt_num(value: float) -> str:
    """1.5 -> '1.5', 3.0 -> '3'; how users typed it, without float noise."""
    return f"{value:g}"


def _fmt_limit(seconds: float) -> str:
    """A limit shown to 2 decimals, rounded DOWN so that the value shown is itself allowed."""
    text = f"{math.floor(seconds * 100 + 1e-6) / 100:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
