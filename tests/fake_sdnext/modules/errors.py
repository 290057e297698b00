"""Fake `modules.errors`: `display(e, task)` logs an exception for the user."""

from modules.logger import log

fake_displayed: list[tuple[str, BaseException]] = []  # test-only


class ValidationError(ValueError):
    """Expected validation failure: display() reports the message without a traceback."""


def display(e: Exception, task: str, suppress=None):
    fake_displayed.append((task, e))
    log.error(f"{task or 'error'}: {type(e).__name__}: {e}")
