"""What the tab's buttons do: Generate (submit and follow a job), Stop / Skip / Pause, codecs.

`submit` validates and queues a Generate at once (the `JobQueue` opens the host's progress task
and closes it when the job ends). On the standalone page `follow_page` then streams `Update`s
for the page's jobs: progress text and preview while they run, then the end. Inside SD.Next no
event follows a job (every pending Gradio event costs SD.Next's page work on each frame): the
page's script draws progress and preview from SD.Next's own progress API
(javascript/framepack.js) and asks `page_news` for the running line and the end.
`generate_stream` is submit-and-follow in one generator (`stream=False`: only the start, a
"Stopping" line and the end). Closing the page only stops the following: the job itself runs
on in the queue. Stop / Skip / Pause find the job by job id, or by the page's progress task id
when the page has not yet received the job id.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from framepack.errors import FramePackError, InputError
from framepack.request.events import Status
from framepack.ui.progress_view import (_final_marker, final_html, progress_html, status_line, stopping_line,
                                        waiting_text)
from framepack.ui.values import error_html, info_html, labelled, validate

# ----------------------------------------------------------------------------- generation

KEEP = object()  # an Update field left as KEEP leaves that output unchanged


@dataclass
class Update:
    """One refresh of the tab's outputs while a generation runs."""

    status: Any = KEEP  # HTML line: errors (red), job state
    progress: Any = KEEP  # HTML: progress bar and text, timings at the end
    preview: Any = KEEP  # np.uint8 image or None
    video: Any = KEEP  # path (str) or None
    job_id: Any = KEEP
    seed: Any = KEEP
    pause_label: Any = KEEP  # "Pause" again when a job starts or ends
    finished: bool = False


def _stop_requested(job) -> bool:
    """Stop asked for (our Stop, the API, or the host's own Stop / interrupt) and the job not over yet."""
    try:
        return bool(job.control.should_stop())
    except Exception:  # noqa: BLE001 - a host's state that cannot be read is not a stop
        return False


def generate_stream(host, job_queue, values: Mapping[str, Any], task_id: str | None = None,
                    poll: float = 0.3, heartbeat: float = 2.0, stream: bool = True) -> Iterator[Update]:
    """Validate, submit, then follow the job until it ends; nothing is queued on a bad input.

    With `stream`, yields an `Update` when the job changes (at most every `poll` seconds) and at
    least every `heartbeat` seconds (elapsed time, memory). Without, it yields only the start,
    "Stopping" once when a stop is asked for, and the end. Stopping the iteration (page closed)
    leaves the job running in the queue.
    """
    first, job = submit(host, job_queue, values, task_id)
    yield first
    if job is not None:
        yield from follow_job(job_queue, job, task_id, poll=poll, heartbeat=heartbeat, stream=stream,
                              announced=True)


def submit(host, job_queue, values: Mapping[str, Any], task_id: str | None = None,
           page_id: str | None = None) -> tuple[Update, Any]:
    """Validate and submit at once (the tab's Generate): (the first `Update`, the job or None).

    Returns without waiting, so a second Generate while a job runs reaches the queue (Gradio 3.43
    drops a click on an event that is still running); the page follows its jobs with
    `follow_page`. A job submitted while another runs says its place in line.
    """
    try:
        request, options = validate(values, host)
    except InputError as error:  # the error replaces the previous result block (no stale video under it)
        return _refused(error_html(str(error)), task_id), None
    if PAGE_TASKS.stopped_before_start(task_id):
        return Update(status=_final_marker(info_html("Stopped before the job was submitted"), task_id),
                      finished=True), None
    try:  # the queue opens the host's progress task now and closes it when the job ends
        job = job_queue.submit(request, options, task_id=task_id or None)
    except FramePackError as error:
        return _refused(error_html("; ".join(labelled(problem) for problem in error.problems())), task_id), None
    PAGE_TASKS.bind(task_id, job, job_queue, page_id)  # a Stop that came in meanwhile cancels it now
    seed = job.record.seed
    if job.status == Status.QUEUED and job_queue.ahead_of(job) > 0:
        # another job runs: its follower keeps the progress box; this one says its place in line
        return Update(status=info_html(f"Job {job.id} queued · {waiting_text(job_queue, job)} · seed {seed}"),
                      seed=seed), job
    return Update(status=info_html(f"Job {job.id} submitted · seed {seed} · {job.record.plan}"),
                  progress=progress_html(job, job_queue), preview=None, video=None, job_id=job.id, seed=seed,
                  pause_label="Pause"), job


def follow_page(job_queue, page_id: str | None, poll: float = 0.3, heartbeat: float = 2.0,
                linger: float = 1.0) -> Iterator[Update]:
    """Follow the jobs this page submitted, oldest unfinished first, until none is left.

    A job submitted while this runs is picked up after the one followed now; `linger` seconds
    after the last one ends it looks once more before ending. Always yields at least once.
    """
    followed: set[str] = set()
    yielded = False
    while True:
        job = _next_to_follow(job_queue, page_id, followed)
        if job is None and linger > 0:
            time.sleep(linger)
            job = _next_to_follow(job_queue, page_id, followed)
        if job is None:
            break
        followed.add(job.id)
        for update in follow_job(job_queue, job, None, poll=poll, heartbeat=heartbeat):
            yielded = True
            if update.finished:
                PAGE_TASKS.end_shown(job.id)
            yield update
    if not yielded:
        yield Update()


def _next_to_follow(job_queue, page_id: str | None, followed: set[str]):
    """The page's oldest job still running or waiting, or that ran and ended before any follower showed
    its end (a busy page, SD.Next's, can start following after a short job has already finished). A job
    removed from the queue before it started has no end to show."""
    def pending(job) -> bool:
        status = Status(job.status)
        return not status.finished or (status != Status.CANCELLED and not PAGE_TASKS.was_end_shown(job.id))

    return next((job for job in PAGE_TASKS.page_jobs(page_id, job_queue) if job.id not in followed and pending(job)),
                None)


def follow_job(job_queue, job, task_id: str | None = None, poll: float = 0.3, heartbeat: float = 2.0,
               stream: bool = True, announced: bool = False) -> Iterator[Update]:
    """Updates for one job until it ends: its place in line while it waits, then progress, then the end."""
    task_id = _task_of(job, task_id)
    seed = job.record.seed
    waiting = job.status == Status.QUEUED and job_queue.ahead_of(job) > 0
    if not announced and not waiting and not Status(job.status).finished:  # Generate's line stays
        yield Update(progress=progress_html(job, job_queue), preview=None, video=None, job_id=job.id, seed=seed,
                     pause_label="Pause")
    seen, preview, last, stopping = job.record.updates, None, time.monotonic(), False
    place = waiting_text(job_queue, job) if waiting else None
    while not job.wait(poll):
        update = Update()
        if waiting:
            if job.status == Status.QUEUED:
                now_place = waiting_text(job_queue, job)
                if now_place != place:
                    place, update.status = now_place, info_html(f"Job {job.id} queued · {now_place} · seed {seed}")
                if update != Update():
                    yield update
                continue
            waiting = False
            update.status = running_line(job)
            update.preview, update.video, update.job_id, update.pause_label = None, None, job.id, "Pause"
        if not stopping and _stop_requested(job):
            stopping, update.status = True, stopping_line(job)
        now = time.monotonic()
        if stream and (job.record.updates != seen or now - last >= heartbeat):
            seen, last = job.record.updates, now
            update.progress = progress_html(job, job_queue)
            if job.preview is not None and job.preview is not preview:
                preview = update.preview = job.preview
        if update != Update():
            yield update
    yield end_update(job, task_id)


def end_update(job, task_id: str | None = None) -> Update:
    """What the page shows when `job` has ended: its final line, timings, last preview and video."""
    return Update(status=status_line(job, _task_of(job, task_id)), progress=final_html(job),
                  preview=job.preview if job.preview is not None else KEEP, video=job.record.video, job_id="",
                  pause_label="Pause", finished=True)


def page_news(job_queue, page_id: str | None) -> Update:
    """Inside SD.Next, in place of a follower: what the page should show now for its jobs.

    A follower holds a Gradio event for the whole job, and SD.Next's page pays for every pending
    event (Gradio animates a hidden timer on each of its outputs): on two cores the browser was
    busy for seconds and a Stop click waited behind it. There the page follows its task through
    SD.Next's progress API and asks this, in a short event, when its task starts running or ends:
    the newest ended job whose end no page has shown (shown once), else the running job's line.
    """
    jobs = PAGE_TASKS.page_jobs(page_id, job_queue)
    ended = [job for job in jobs if Status(job.status).finished and job.status != Status.CANCELLED
             and not PAGE_TASKS.was_end_shown(job.id)]
    for job in ended:
        PAGE_TASKS.end_shown(job.id)
    if ended:
        return end_update(ended[-1])
    running = next((job for job in jobs if job.status == Status.RUNNING), None)
    if running is None:
        return Update()
    return Update(status=running_line(running), job_id=running.id, pause_label="Pause")


def running_line(job) -> str:
    return info_html(f"Job {job.id} running · seed {job.record.seed} · {job.record.plan}")


def _task_of(job, task_id: str | None = None) -> str | None:
    """The progress task of the page's Generate that made `job` (given, or kept with the job)."""
    return task_id or getattr(job, "task_id", None) or getattr(job.record, "task_id", None)


def _refused(line: str, task_id: str | None) -> Update:
    """A Generate that submitted nothing: the error in the status line and in place of the last result."""
    return Update(status=_final_marker(line, task_id), progress=f'<div class="fpk-progress fpk-final '
                  f'fpk-final-failed">{line}</div>', video=None, finished=True)


# ----------------------------------------------------------------------------- Stop / Skip / Pause

class PageTasks:
    """Which job each page's Generate click (its progress task id) started, for Stop.

    The page sends its task id with Generate and with Stop, so Stop finds the job even before
    the page has received the job id (a busy page can lag by seconds). A Stop that arrives
    before the job exists is remembered: the job is cancelled the moment it is submitted, or
    never submitted. Bounded: only the latest `size` tasks are kept.
    """

    def __init__(self, size: int = 256) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, str] = OrderedDict()  # task id -> job id
        self._early_stops: OrderedDict[str, float] = OrderedDict()  # task ids stopped before their job existed
        self._pages: OrderedDict[str, list[str]] = OrderedDict()  # page id -> the job ids it submitted
        self._ends_shown: OrderedDict[str, bool] = OrderedDict()  # jobs whose final line a follower sent
        self._size = size

    def _remember(self, table: OrderedDict, key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._size:
            table.popitem(last=False)

    def bind(self, task_id: str | None, job, job_queue, page_id: str | None = None) -> None:
        if page_id:
            with self._lock:
                jobs = self._pages.get(page_id, [])[-self._size + 1:] + [job.id]
                self._remember(self._pages, page_id, jobs)
        if not task_id:
            return
        with self._lock:
            self._remember(self._jobs, task_id, job.id)
            stop = self._early_stops.pop(task_id, None) is not None
        if stop:
            job_queue.cancel(job.id)

    def stopped_before_start(self, task_id: str | None) -> bool:
        if not task_id:
            return False
        with self._lock:
            return self._early_stops.pop(task_id, None) is not None

    def end_shown(self, job_id: str) -> None:
        with self._lock:
            self._remember(self._ends_shown, job_id, True)

    def was_end_shown(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._ends_shown

    def page_jobs(self, page_id: str | None, job_queue) -> list:
        """The jobs a page submitted that the queue still knows, oldest first."""
        with self._lock:
            ids = list(self._pages.get(page_id, ())) if page_id else []
        return [job for job in (job_queue.get(i) for i in ids) if job is not None]

    def job_id(self, task_id: str | None) -> str | None:
        with self._lock:
            return self._jobs.get(task_id) if task_id else None

    def stop_before_start(self, task_id: str) -> None:
        with self._lock:
            self._remember(self._early_stops, task_id, time.time())


PAGE_TASKS = PageTasks()


def _running_job(job_queue, job_id: str | None):
    job = job_queue.get(job_id) if job_id else None
    if job is None or Status(job.status).finished:
        return None
    return job


def _page_job(job_queue, job_id: str | None, task_id: str | None):
    """The page's unfinished job: by job id, else by the page's task id."""
    return _running_job(job_queue, job_id) or _running_job(job_queue, PAGE_TASKS.job_id(task_id))


def _queue_running(job_queue):
    return next((job for job in job_queue.list() if job.status == "running"), None)


def stop_job(job_queue, job_id: str | None, task_id: str | None = None, wait: float = 1.0) -> str:
    """Stop the job this page started, or, when the page has none going, the running one.

    Waits up to `wait` seconds for the job to end, so the line it returns is the final one
    when the job stops at once (the Generate stream ends with the same line).
    """
    job = _page_job(job_queue, job_id, task_id)
    if job is None and task_id and PAGE_TASKS.job_id(task_id) is None and not job_id:
        PAGE_TASKS.stop_before_start(task_id)  # Generate was clicked but its job does not exist yet
        return info_html("Stopping: the job this page started is cancelled as soon as it is submitted")
    if job is None:
        job = _queue_running(job_queue)
    if job is None:
        return info_html("Nothing to stop")
    was_queued = job.status == Status.QUEUED
    job_queue.cancel(job.id)
    if was_queued:
        return info_html(f"Job {job.id} removed from the queue")
    if wait > 0 and job.wait(wait):
        return status_line(job, task_id if PAGE_TASKS.job_id(task_id) == job.id else None)
    return stopping_line(job)


def skip_section(job_queue, job_id: str | None, task_id: str | None = None) -> str:
    job = _page_job(job_queue, job_id, task_id)
    if job is None or job.status != Status.RUNNING:
        return info_html("Nothing to skip")
    job.control.skip()
    return info_html(f"Skipping the rest of the current section of job {job.id}")


def toggle_pause(job_queue, job_id: str | None, task_id: str | None = None) -> tuple[str, str]:
    """(button label, status line): Pause <-> Resume."""
    job = _page_job(job_queue, job_id, task_id)
    if job is None:
        return "Pause", info_html("Nothing to pause")
    if job.control.paused:
        job.control.resume()
        return "Pause", info_html(f"Job {job.id} resumed")
    job.control.pause()
    return "Resume", info_html(f"Job {job.id} paused between steps")


# ----------------------------------------------------------------------------- codecs

def codec_choices(current: str | None = None, refresh: bool = False) -> tuple[list[str], str, str]:
    """(encoders that really open here, the value to select, a note)."""
    from framepack.io import codecs

    found = codecs.available_encoders(refresh=refresh)
    value = current if current in found else ("libx264" if "libx264" in found else found[0])
    hardware = [c for c in found if codecs.is_hardware(c)]
    note = f"{len(found) - 1} working encoders" + (f" ({', '.join(hardware)} hardware)" if hardware else "")
    if current and current not in found:
        note += f"; {current} does not work here, switched to {value}"
    return found, value, note

