"""Batches: many jobs submitted, listed, cancelled and retried as one.

A batch comes from a folder of images with same-name `.txt` captions, a prompt list (one job per
line) or a JSONL file (one object of settings per line): the CLI reads those files
(framepack.cli.batch), the API takes uploaded images and prompts in one body. Either way the face
turns every entry into a request and hands the list here: every entry is checked before any is
queued (all or nothing), each problem names its entry ("cat.png", "line 3"), and the jobs are
queued in order under one batch id, kept in the job store with their batch.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

from framepack.errors import FramePackError, InputError, InputErrors
from framepack.jobs.checks import check_job
from framepack.jobs.record import new_job_id
from framepack.request.events import STATUSES, Status
from framepack.request.limits import MAX_BATCH_JOBS
from framepack.request.model import GenerationRequest
from framepack.request.output import OutputOptions


class BatchNotFound(FramePackError):
    """No batch with that id (HTTP 404)."""


@dataclass(frozen=True)
class BatchEntry:
    """One job of a batch and where it came from (a file name, "line 3", "item 2")."""

    request: GenerationRequest
    options: OutputOptions
    label: str


def prompt_list(text: str, name: str, jsonl: bool, what: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """The jobs of a prompt list file named `name`, one at a time: (label "NAME line N", fields).

    Plain text: one prompt per line, blank lines and lines starting with # skipped. JSONL: one JSON
    object of settings per non-blank line. `what`, when given, starts every error (the tab's control).
    """
    prefix = f"{what}: " if what else ""
    for number, line in enumerate(text.splitlines(), start=1):
        label = f"{name} line {number}"
        if not line.strip() or (not jsonl and line.lstrip().startswith("#")):
            continue
        if not jsonl:
            yield label, {"prompt": line.strip()}
            continue
        try:
            fields = json.loads(line)
        except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the parser goes
            raise InputError(f"{prefix}{label}: not valid JSON ({error})", ("items",)) from None
        if not isinstance(fields, dict):
            raise InputError(f"{prefix}{label}: expected a JSON object of settings", ("items",))
        yield label, fields


def check_size(count: int, what: str = "the batch") -> None:
    if count == 0:
        raise InputError(f"{what} holds no jobs", ("items",))
    if count > MAX_BATCH_JOBS:
        raise InputError(f"{what} holds {count} jobs; a batch holds at most {MAX_BATCH_JOBS}", ("items",))


def submit_batch(queue, entries: list[BatchEntry], name: str = "") -> tuple[str, list]:
    """Check every entry, then queue them all under a new batch id; returns (id, job handles)."""
    if queue.store is None:
        raise FramePackError("batches need the job store (a queue made without one cannot keep them)")
    check_size(len(entries))
    problems = []
    for index, entry in enumerate(entries):
        try:
            check_job(entry.request, entry.options)
        except FramePackError as error:
            problems += [InputError(f"{entry.label}: {problem.message}", ("items", index, *(problem.field or ())))
                         for problem in error.problems()]
    if problems:
        raise InputErrors(problems)
    batch_id = new_job_id()
    name = name.strip()[:200] or f"batch of {len(entries)}"
    queue.store.add_batch(batch_id, name, {"jobs": len(entries), "labels": [entry.label for entry in entries]})
    handles = [queue.submit(entry.request, entry.options, batch=batch_id, label=entry.label) for entry in entries]
    return batch_id, handles


def batch_jobs(queue, batch_id: str) -> list:
    if queue.store is None or queue.store.batch(batch_id) is None:
        raise BatchNotFound(f"no batch with id {batch_id!r}")
    handles = [queue.get(job.id) for job in queue.store.jobs(batch=batch_id)]
    return [handle for handle in handles if handle is not None]


def batch_state(queue, batch_id: str) -> dict[str, Any]:
    """The batch, its jobs' counts by status, and whether it has finished."""
    info = queue.store.batch(batch_id) if queue.store is not None else None
    if info is None:
        raise BatchNotFound(f"no batch with id {batch_id!r}")
    jobs = batch_jobs(queue, batch_id)
    counts = Counter(job.status.value for job in jobs)
    return {"id": batch_id, "name": info["name"], "created": info["created"], "total": len(jobs),
            "counts": {status: counts.get(status, 0) for status in STATUSES},
            "finished": all(job.status.finished for job in jobs), "jobs": jobs}


def list_batches(queue) -> list[dict[str, Any]]:
    if queue.store is None:
        return []
    return [batch_state(queue, info["id"]) for info in queue.store.batches()]


def cancel_batch(queue, batch_id: str) -> list:
    """Cancel the batch's queued jobs and stop its running ones; finished jobs stay as they are."""
    jobs = batch_jobs(queue, batch_id)
    for job in jobs:
        if not job.status.finished:
            queue.cancel(job.id)
    return jobs


def retry_batch(queue, batch_id: str) -> list:
    """Run the batch's failed, cancelled and interrupted jobs again (resumed when they have checkpoints)."""
    retried = []
    for job in batch_jobs(queue, batch_id):
        if job.status in (Status.FAILED, Status.CANCELLED, Status.INTERRUPTED):
            retried.append(queue.retry(job.id))
    return retried


def wait_for(jobs: list, timeout: float | None = None, poll: float = 0.2) -> bool:
    """Wait until every job has finished; False when `timeout` passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for job in jobs:
        while not job.wait(poll):
            if deadline is not None and time.monotonic() > deadline:
                return False
    return True
