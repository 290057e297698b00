"""One error type per kind of problem, each carrying a message written for the person who caused it.

An error about an input also carries the field it belongs to, as a location tuple such as
`("section_prompts",)`, `("keyframes", 2, "when")` or `("output", "codec_options")`. Faces turn
the field into what their user sees: the API into `{"loc": ["body", *field]}`, the tab into the
control's label, the CLI into the flag name. Nothing ever recovers a field from message text.

Faces catch `FramePackError` once: the CLI exits 2, the API answers 422, the tab shows a red
line. Anything else that escapes is a bug and is reported as such.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

Field = tuple[Union[str, int], ...]
"""Where an error belongs: field names and list indexes, outermost first (empty: the whole input)."""


class FramePackError(Exception):
    """Base for every error whose message is meant for the user."""

    kind = "value_error"
    """What kind of problem, for machines (the API's `type`); pydantic's error type when it found it."""

    def __init__(self, message: str = "", field: Sequence[str | int] | None = None):
        super().__init__(message)
        self.message = str(message)
        self.field: Field | None = None if field is None else tuple(field)

    def problems(self) -> tuple["FramePackError", ...]:
        """Each problem on its own (one here; `InputErrors` holds several)."""
        return (self,)

    def located(self, *prefix: str | int) -> "FramePackError":
        """This error (and every problem in it) placed under `prefix`, e.g. `("output",)`; returns self."""
        for problem in self.problems():
            problem.field = (*prefix, *(problem.field or ()))
        return self

    def describe(self) -> str:
        """`field.path: message` when the error has a field, else the message."""
        if not self.field:
            return self.message
        return f"{'.'.join(str(part) for part in self.field)}: {self.message}"


class InputError(FramePackError):
    """Bad settings, images or prompt schedule supplied by the user."""


class ScheduleError(InputError):
    """A section prompt or keyframe line that cannot be parsed or placed."""


class InputErrors(InputError):
    """Several input problems found at once, so a form or body can show every one of them."""

    def __init__(self, problems: Iterable[FramePackError]):
        flat = tuple(item for problem in problems for item in problem.problems())
        super().__init__("; ".join(problem.describe() for problem in flat))
        self._problems = flat

    def problems(self) -> tuple[FramePackError, ...]:
        return self._problems

    def located(self, *prefix: str | int) -> "InputErrors":
        super().located(*prefix)
        self.message = "; ".join(problem.describe() for problem in self._problems)
        self.args = (self.message,)
        return self


class ModelError(FramePackError):
    """A model component is missing, incomplete or cannot be loaded."""


class OutputError(FramePackError):
    """A video, raw-frames or image file cannot be written or read."""
