"""Encode on a worker thread while the sampler goes on with the next section.

`BackgroundSink` wraps a frame sink (the output writers): the generating thread hands it batches,
a worker thread feeds them to the sink in the same order (one worker, first in first out, so the
video's frame order is the order the loop emits). The queue holds at most ``max_batches``
batches: a slow encoder makes the generator wait instead of piling frames up in RAM. An error in
the worker is raised in the generating thread at its next batch, or at `drain`.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np

_DONE = object()


class BackgroundSink:
    def __init__(self, sink: Callable[[np.ndarray], None], max_batches: int = 2, name: str = "framepack-encode"):
        self.sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(max_batches)))
        self._error: BaseException | None = None
        self._cancelled = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def __call__(self, frames: np.ndarray) -> None:
        if self._closed:
            raise RuntimeError("the background sink is closed")
        self._raise_error()
        self._queue.put(frames)  # blocks while the encoder is max_batches behind: memory stays flat

    def drain(self) -> None:
        """Wait until every batch handed in has been written; raise the worker's error if it had one."""
        self._finish()
        self._raise_error()

    def cancel(self) -> None:
        """Stop writing: batches still queued are dropped; waits for the batch being written."""
        self._cancelled = True
        self._finish()

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_DONE)
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            frames = self._queue.get()
            if frames is _DONE:
                return
            if self._error is not None or self._cancelled:
                continue  # keep taking batches so the generating thread never blocks on a dead worker
            try:
                self.sink(frames)
            except BaseException as error:  # noqa: BLE001 - handed to the generating thread
                self._error = error
