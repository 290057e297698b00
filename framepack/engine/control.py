"""What the running loop reads from outside (stop / skip / pause) and what it lets a host do per stage.

`GenerationControl` carries only flags, set by a UI, API or signal handler, and the stage
timings. `StageHooks` is the host's say around each stage (offload, progress text, moving an
encoder); the loop takes both separately, and either may be left at its default.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

class StageHooks:
    """What a host does around one stage of a generation; by default, nothing.

    Hosts subclass it (or give any object with this `stage` method): SD.Next offloads models,
    moves SigLIP and shows progress text there. The loop times the stage itself.
    """

    def stage(self, name: str) -> ContextManager[None]:
        """Wrap one stage: text, vision, vae_encode, sample or vae_decode."""
        return nullcontext()


class GenerationControl:
    """Thread-safe flags set by a UI, API or signal handler and read by the running loop."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._skip = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._waiting = False
        self.timings: dict[str, float] = {}

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused loop must wake up to notice the stop

    def skip(self) -> None:
        self._skip.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def take_skip(self) -> bool:
        """True once per skip request: the current section ends with its current prediction."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False

    @property
    def waiting(self) -> bool:
        """True while the loop really stands still in a pause (Pause pressed during a decode or an
        encode takes effect at the next sampling step: until then work goes on)."""
        return self._waiting

    def wait_while_paused(self, poll: float = 0.1) -> None:
        if self._running.is_set():
            return
        self._waiting = True
        try:
            while not self._running.wait(poll):
                if self.should_stop():
                    return
        finally:
            self._waiting = False

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the time spent inside to `timings[name]`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
