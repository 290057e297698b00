"""Work folders: where a job keeps its unfinished files, inside the output folder, owned by a process.

Everything a job writes before it is finished lives in `<output>/.framepack-work/<owner>-<job>/`:
the spill file of the inverted model (every frame generated so far, uncompressed), the partial
video, raw frames and image folder (renamed into the output folder when complete; same
filesystem, so the rename is atomic), and later a job's checkpoints. Nothing goes to the system
temp folder, and the folder is hidden, so a gallery or file browser never shows it.

A normal end, an error or a stop removes the job's folder. A crash, a kill or a power cut
cannot, so every folder's name starts with its owner: the process id and that process's start
time (a recycled process id then does not look like the owner). `remove_abandoned` deletes the
folders whose owner is gone; the next run in that output folder and every server start call it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from pathlib import Path

from framepack.errors import OutputError

log = logging.getLogger("framepack")

WORK_DIR_NAME = ".framepack-work"
_OWNED = re.compile(r"(?P<pid>\d+)-(?P<started>\d+)-[A-Za-z0-9_.-]+")


def process_start(pid: int) -> int | None:
    """When process `pid` started (centiseconds since the epoch), or None when there is no such process."""
    import psutil

    try:
        return int(round(psutil.Process(pid).create_time() * 100))
    except psutil.NoSuchProcess:
        return None
    except (psutil.AccessDenied, psutil.ZombieProcess):  # it exists; we may not look closer
        return -1


def owner_alive(pid: int, started: int) -> bool:
    """Whether the process that created a work folder still runs (same id and start time)."""
    now = process_start(pid)
    if now is None:
        return False
    return now == -1 or abs(now - started) <= 1  # rounding of the start time differs by at most 1


class WorkFolder:
    """A job's private folder in `output_dir`, removed by `close()` (or the `with` block's end)."""

    def __init__(self, output_dir: str | os.PathLike, label: str = "job"):
        root = Path(output_dir) / WORK_DIR_NAME
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create the work folder {str(root)!r}: {error.strerror or error}") from error
        pid = os.getpid()
        started = process_start(pid)
        clean_label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:40] or "job"
        self.path = root / f"{pid}-{started}-{clean_label}-{secrets.token_hex(4)}"
        self.path.mkdir()
        self.root = root

    def temp_path(self, final: str | os.PathLike, keep_suffix: bool = True) -> Path:
        """A fresh name in this folder for the unfinished version of `final`."""
        final = Path(final)
        tail = final.suffix if keep_suffix else ""
        return self.path / f"{final.name}.partial-{secrets.token_hex(4)}{tail}"

    def close(self) -> None:
        """Remove the folder and everything left in it; the shared root goes when it is empty."""
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:
            pass  # other jobs' folders are still there

    def __enter__(self) -> "WorkFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abandoned(output_dir: str | os.PathLike) -> list[Path]:
    """Work folders in `output_dir` whose owning process is gone."""
    root = Path(output_dir) / WORK_DIR_NAME
    try:
        children = list(root.iterdir())
    except OSError:  # no work folder yet (the usual case), or unreadable
        return []
    found = []
    for child in children:
        owner = _OWNED.fullmatch(child.name)
        if owner is None or not child.is_dir():
            continue  # not ours: left alone
        if not owner_alive(int(owner["pid"]), int(owner["started"])):
            found.append(child)
    return found


def remove_abandoned(output_dir: str | os.PathLike) -> list[Path]:
    """Delete the work folders of processes that ended without cleaning up; returns them."""
    removed = abandoned(output_dir)
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed the work folder of a run that did not finish: %s", folder)
    try:
        (Path(output_dir) / WORK_DIR_NAME).rmdir()
    except OSError:
        pass
    return removed
