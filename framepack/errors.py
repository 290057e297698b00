"""One error type per layer, each carrying a message written for the person who caused it.

Faces catch `FramePackError` once: the CLI exits 2, the API answers 422, the tab shows a red
line. Anything else that escapes is a bug and is reported as such.
"""


class FramePackError(Exception):
    """Base for every error whose message is meant for the user."""


class InputError(FramePackError):
    """Bad settings, images or prompt schedule supplied by the user."""


class ScheduleError(InputError):
    """A section prompt or keyframe line that cannot be parsed or placed."""


class ModelError(FramePackError):
    """A model component is missing, incomplete or cannot be loaded."""


class OutputError(FramePackError):
    """A video, raw-frames or image file cannot be written or read."""


class Interrupted(FramePackError):
    """The user stopped a running generation."""
