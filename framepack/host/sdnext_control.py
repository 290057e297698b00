"""The bridge to SD.Next's `shared.state`: Stop / Skip / Pause, progress, stage hooks, the log.

- `SdnextControl`: a job's `GenerationControl` that also follows SD.Next's own Stop, Skip and
  Pause buttons (`shared.state.interrupted / skipped / paused`);
- `SdnextStageHooks`: the loop's `StageHooks` (progress text, the host's offload around each
  stage, the stage timers);
- `begin_state`, `end_state`, `report_to_state`: a job as SD.Next's progress bar and
  `/sdapi/v1/progress` show it;
- `bridge_logging`: our `framepack` logger's records also go to SD.Next's log.

`modules.*` is imported inside functions only.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator

from framepack.engine.control import GenerationControl, StageHooks

log = logging.getLogger("framepack")

STAGE_TEXT = {
    "text": "FramePack: encoding prompt",
    "vision": "FramePack: encoding image (SigLIP)",
    "vae_encode": "FramePack: encoding image (VAE)",
    "sample": "FramePack: sampling",
    "vae_decode": "FramePack: decoding frames",
}


def _state():
    from modules import shared

    return shared.state


class SdnextControl(GenerationControl):
    """`GenerationControl` that also reads SD.Next's Stop / Skip / Pause (for the job's task id)."""

    def __init__(self, host, task_id: str | None = None) -> None:
        super().__init__()
        self.host = host
        self.task_id = task_id
        self.task_started = False
        self.stage_hooks = SdnextStageHooks(host, self)

    def should_stop(self) -> bool:
        return super().should_stop() or bool(_state().interrupted)

    def take_skip(self) -> bool:
        state = _state()
        if state.skipped:
            state.skipped = False  # one skip per click: the current section ends
            return True
        return super().take_skip()

    @property
    def paused(self) -> bool:
        return super().paused or bool(_state().paused)

    def wait_while_paused(self, poll: float = 0.1) -> None:
        super().wait_while_paused(poll)
        state = _state()
        while state.paused and not self.should_stop():
            time.sleep(poll)


class SdnextStageHooks(StageHooks):
    """Around each stage: the job's progress task, the stage's text, the host's offload, a timer."""

    def __init__(self, host, control: SdnextControl) -> None:
        self.host = host
        self.control = control

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start_task(self.control)
        _state().textinfo = STAGE_TEXT.get(name, f"FramePack: {name}")
        self.host.models.stage_enter(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.host.models.stage_exit(name)
            self.host.add_timer(name, time.perf_counter() - started)


def start_task(control: SdnextControl) -> None:
    """Make the job's progress task (the web UI's id) the active one, once."""
    if control.task_id and not control.task_started:
        from modules import progress

        control.task_started = True
        progress.start_task(control.task_id)


def begin_state(title: str, control: SdnextControl | None) -> Any:
    """`shared.state.begin` for one job; returns the token `end_state` takes."""
    state = _state()
    task_id = control.task_id if control is not None and control.task_id else 0
    token = state.begin(title, task_id=task_id)
    state.job_count = 1
    state.textinfo = "FramePack: starting"
    if control is not None:
        start_task(control)
    return token


def end_state(token: Any) -> None:
    state = _state()
    state.end(token)
    # SD.Next's end() leaves the step counters: /sdapi/v1/progress would keep reporting this job's
    # fraction and an ETA while idle. Its idle test is job_count == 0 and sampling_step == 0.
    state.sampling_steps = 0
    state.sampling_step = 0
    state.interrupted, state.skipped = False, False  # consumed by this job
    state.textinfo = None


def report_to_state(event: object) -> None:
    """One engine event as SD.Next's progress bar, live preview and status text show it."""
    from framepack.request.events import Done, Preview, Progress, SectionDone

    state = _state()
    if isinstance(event, Progress):
        state.sampling_steps = event.section_count * event.steps
        state.sampling_step = event.position * event.steps + event.step
        state.job_count = 1
        state.textinfo = f"FramePack: {event.describe()}"
    elif isinstance(event, Preview):
        if not getattr(state, "disable_preview", False):
            from PIL import Image

            state.current_image = Image.fromarray(event.image)
            state.id_live_preview += 1
    elif isinstance(event, SectionDone):
        note = " (skipped)" if event.skipped else ""
        state.textinfo = f"FramePack: section {event.position + 1}/{event.section_count} done{note}"
    elif isinstance(event, Done):
        state.textinfo = f"FramePack: {event.status}, {event.frames} frames in {event.seconds:.1f} s"


class ForwardToHostLog(logging.Handler):
    """Our `framepack` logger's records go to SD.Next's log (`shared.log`)."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        shared = sys.modules.get("modules.shared")  # loaded whenever SD.Next runs; never imported here
        if shared is None:
            return
        try:
            shared.log.handle(record)
        except Exception:  # pragma: no cover - logging must never break a job
            pass


def bridge_logging() -> None:
    """Our records also go to SD.Next's log (its root logger discards everything)."""
    if not any(isinstance(h, ForwardToHostLog) for h in log.handlers):
        handler = ForwardToHostLog()
        handler.replaced_level = log.level
        log.addHandler(handler)
        if log.level == logging.NOTSET:  # SD.Next's root logger is at ERROR: INFO would be dropped
            log.setLevel(logging.INFO)


def unbridge_logging() -> None:
    for handler in [h for h in log.handlers if isinstance(h, ForwardToHostLog)]:
        log.removeHandler(handler)
        log.setLevel(getattr(handler, "replaced_level", logging.NOTSET))
