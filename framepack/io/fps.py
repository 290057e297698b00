"""Frame rates as exact fractions, so 29.97 fps video is 30000/1001 end to end, not 2997/100."""

from __future__ import annotations

from fractions import Fraction

from framepack.errors import InputError
from framepack.request.limits import MAX_ENCODE_FPS as MAX_FPS

_NTSC_BASES = (24, 30, 48, 60, 120, 240)


def parse_fps(value, what: str = "fps") -> Fraction:
    """Turn 30, 29.97, "30000/1001", "29.97" or a Fraction into an exact positive Fraction.

    Decimal NTSC rates (23.976, 29.97, 59.94 ...) snap to their true n*1000/1001 values, since
    that is what every player and ffprobe expect; other decimals keep at most 3 decimals.
    """
    if isinstance(value, Fraction):
        rate = value
    elif isinstance(value, bool):
        raise InputError(f"{what} must be a number, got {value!r}")
    elif isinstance(value, int):
        rate = Fraction(value)
    elif isinstance(value, (float, str)):
        rate = _from_text_or_float(value, what)
    else:
        raise InputError(f"{what} must be a number like 30 or 30000/1001, got {value!r}")
    if not 0 < rate <= MAX_FPS:
        raise InputError(f"{what} {format_fps(rate)} is out of range (0 < fps <= {MAX_FPS})")
    return rate


def _from_text_or_float(value, what: str) -> Fraction:
    text = str(value).strip()
    try:
        if "/" in text:
            return Fraction(text)
        number = float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{what} must be a number like 30 or 30000/1001, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    if number.is_integer():
        return Fraction(int(number))
    for base in _NTSC_BASES:
        ntsc = Fraction(base * 1000, 1001)
        if abs(number - float(ntsc)) < 0.006:
            return ntsc
    return Fraction(number).limit_denominator(1000)


def format_fps(rate: Fraction) -> str:
    """`30` or `30000/1001`: exact, and parseable again by parse_fps."""
    rate = Fraction(rate)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"
