"""Encode on a worker thread while the sampler goes on with the next section.

`BackgroundSink` wraps a frame sink (the output writers): the generating thread hands it batches,
a worker thread feeds them to the sink in the same order (one worker, first in first out, so the
video's frame order is the order the loop emits). What it holds is bounded twice: at most
``max_batches`` batches and at most ``max_bytes`` bytes of frames, counting the batch being
written until the sink returns (a single batch larger than ``max_bytes`` is still taken, alone).
A slow encoder makes the generator wait instead of piling frames up in RAM, whatever the frame
size. An error in the worker is raised in the generating thread at its next batch, or at `drain`.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable

import numpy as np

DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # two sections of 36 frames at 1280x1280 would be 354 MB
_DONE = object()


class BackgroundSink:
    def __init__(self, sink: Callable[[np.ndarray], None], max_batches: int = 2,
                 max_bytes: int = DEFAULT_MAX_BYTES, name: str = "framepack-encode"):
        self.sink = sink
        self.max_batches = max(1, int(max_batches))
        self.max_bytes = max(1, int(max_bytes))
        self._batches: collections.deque = collections.deque()
        self._held_bytes = 0  # queued batches plus the one being written
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._cancelled = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def held_bytes(self) -> int:
        """Bytes of frames handed in and not yet written."""
        return self._held_bytes

    def __call__(self, frames: np.ndarray) -> None:
        if self._closed:
            raise RuntimeError("the background sink is closed")
        self._raise_error()
        size = int(frames.nbytes)
        with self._changed:  # wait while the encoder is too far behind: memory stays flat
            self._changed.wait_for(lambda: self._error is not None or self._room_for(size))
            self._batches.append(frames)
            self._held_bytes += size
            self._changed.notify_all()

    def drain(self) -> None:
        """Wait until every batch handed in has been written; raise the worker's error if it had one."""
        self._finish()
        self._raise_error()

    def cancel(self) -> None:
        """Stop writing: batches still queued are dropped; waits for the batch being written."""
        self._cancelled = True
        self._finish()

    def _room_for(self, size: int) -> bool:
        if not self._held_bytes:
            return True  # an idle encoder takes any batch, however large
        return len(self._batches) < self.max_batches and self._held_bytes + size <= self.max_bytes

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            with self._changed:
                self._batches.append(_DONE)
                self._changed.notify_all()
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._batches))
                frames = self._batches.popleft()
            if frames is _DONE:
                return
            try:
                if self._error is None and not self._cancelled:
                    self.sink(frames)
            except BaseException as error:  # noqa: BLE001 - handed to the generating thread
                self._error = error
            finally:
                with self._changed:
                    self._held_bytes -= int(frames.nbytes)
                    self._changed.notify_all()
                del frames  # the batch leaves memory before the next one is taken
