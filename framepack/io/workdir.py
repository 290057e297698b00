"""Work folders: where a job keeps its unfinished files and its checkpoints, inside the output folder.

Everything a job writes before it is finished lives in `<output>/.framepack-work/<job id>/`: the
spill file of the inverted model, the frames already streamed out (for a resume), the partial
video, raw frames and image folder (renamed into the output folder when complete; same
filesystem, so the rename is atomic), and the job's checkpoints. Nothing goes to the system temp
folder, and the folder is hidden, so a gallery or file browser never shows it.

The folder's name is stable (the job id), so a job can be found and continued by another
process. Who works in it is said by an owner file inside, `owner-<pid>-<start time>` (a recycled
process id then does not look like the owner). A folder is created with its owner file already
inside (made under a temporary name, then renamed), and taken over (`WorkFolder.claim`) only
when no other live process owns it; two processes claiming at once both see each other and
both back off, so a job never runs twice.

`sweep` runs at every job start and server start. A folder whose owner is gone (or that has none)
is kept when the caller's `resumable` test says it holds a valid checkpoint (its stale partial
files are removed: it is an interrupted job that can be resumed, never deleted automatically),
and removed otherwise. Folders with a live owner are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from framepack.errors import InputError, OutputError

log = logging.getLogger("framepack")

WORK_DIR_NAME = ".framepack-work"
OWNER_PREFIX = "owner-"
NEW_PREFIX = ".new-"
STALE_MARKERS = (".partial-", ".tmp-")
"""Names holding these are unfinished files (partial outputs, half-written checkpoints)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_OWNER = re.compile(r"owner-(?P<pid>\d{1,10})-(?P<started>-?\d{1,20})")
_NEW = re.compile(r"\.new-(?P<pid>\d{1,10})-(?P<started>-?\d{1,20})-[0-9a-f]+")


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
    """Whether the process that owns a work folder still runs (same id and start time)."""
    now = process_start(pid)
    if now is None:
        return False
    return now == -1 or abs(now - started) <= 1  # rounding of the start time differs by at most 1


def this_process() -> tuple[int, int]:
    pid = os.getpid()
    return pid, process_start(pid) or 0


def check_name(name: str) -> str:
    """A work folder name: letters, digits, `_` and `-`, 64 at most (a job id)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"{name!r} is not a job id (letters, digits, '_' and '-', at most 64)")
    return name


class WorkBusy(OutputError):
    """Another live process works in this folder (it runs the job now)."""


class WorkFolder:
    """A job's folder in `<output>/.framepack-work/`, owned by this process while it is open.

    `close()` removes it with everything inside; `release()` gives up ownership and keeps the
    files (a checkpoint to resume from).
    """

    def __init__(self, output_dir: str | os.PathLike, name: str | None = None):
        """Create a new folder `name` (a fresh `tmp-...` name when None); an existing one is an error."""
        root = work_root(output_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create the work folder {str(root)!r}: {error.strerror or error}") from error
        name = check_name(name) if name is not None else f"tmp-{secrets.token_hex(6)}"
        pid, started = this_process()
        staging = root / f"{NEW_PREFIX}{pid}-{started}-{secrets.token_hex(4)}"
        staging.mkdir()
        _write_owner(staging, pid, started)
        final = root / name
        try:
            os.rename(staging, final)  # fails when `final` exists and is not empty: its owner file is inside
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if final.exists():
                raise OutputError(f"the work folder {str(final)!r} already exists (a job with this id)") from None
            raise
        self.root, self.path, self._owner = root, final, _owner_name(pid, started)
        self.released = False

    @classmethod
    def claim(cls, path: str | os.PathLike) -> "WorkFolder":
        """Take over an existing work folder whose owner is gone (a job to resume).

        Raises `WorkBusy` while another live process owns it, `OutputError` when it is no work folder.
        """
        path = Path(path)
        if path.is_symlink() or not path.is_dir() or path.parent.name != WORK_DIR_NAME:
            raise OutputError(f"{str(path)!r} is not a job's work folder (one inside {WORK_DIR_NAME}/)")
        pid, started = this_process()
        mine = path / _owner_name(pid, started)
        if not mine.exists():
            _write_owner(path, pid, started, exclusive=True)
        for other, (other_pid, other_started) in owners(path):
            if other.name == mine.name:
                continue
            if owner_alive(other_pid, other_started):
                _unlink(mine)
                raise WorkBusy(f"job {path.name} is being run by another process (pid {other_pid}); "
                               f"wait for it to finish or stop it first")
            _unlink(other)  # the owner died: its claim goes with it
        folder = cls.__new__(cls)
        folder.root, folder.path, folder._owner, folder.released = path.parent, path, mine.name, False
        return folder

    def temp_path(self, final: str | os.PathLike, keep_suffix: bool = True) -> Path:
        """A fresh name in this folder for the unfinished version of `final`."""
        final = Path(final)
        tail = final.suffix if keep_suffix else ""
        return self.path / f"{final.name}.partial-{secrets.token_hex(4)}{tail}"

    def remove_partials(self) -> None:
        """Delete unfinished files (partial outputs, half-written checkpoints); keep the rest."""
        remove_stale(self.path)

    def release(self) -> None:
        """Keep the folder and its files, and give up ownership (another process may resume it)."""
        self.remove_partials()
        _unlink(self.path / self._owner)
        self.released = True

    def close(self) -> None:
        """Remove the folder and everything left in it; the shared root goes when it is empty."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.released = True
        try:
            self.root.rmdir()
        except OSError:
            pass  # other jobs' folders are still there

    def __enter__(self) -> "WorkFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def work_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / WORK_DIR_NAME


def owners(folder: Path) -> list[tuple[Path, tuple[int, int]]]:
    """The owner files in a work folder, each with its (pid, start time)."""
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _OWNER.fullmatch(entry.name)
        if match is not None:
            found.append((entry, (int(match["pid"]), int(match["started"]))))
    return found


def live_owner(folder: Path) -> int | None:
    """The pid of a live process owning `folder`, or None."""
    for _, (pid, started) in owners(folder):
        if owner_alive(pid, started):
            return pid
    return None


def remove_stale(folder: Path, depth: int = 2) -> None:
    """Delete the unfinished files and folders inside `folder` and its subfolders (`depth` levels,
    never through a symlink): partial outputs beside the checkpoints, half-written section files."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        is_folder = entry.is_dir() and not entry.is_symlink()
        if any(marker in entry.name for marker in STALE_MARKERS):
            if is_folder:
                shutil.rmtree(entry, ignore_errors=True)
            else:
                _unlink(entry)
        elif is_folder and depth > 1:
            remove_stale(entry, depth - 1)


@dataclass
class Sweep:
    """What `sweep` did: folders removed, and folders kept as resumable jobs."""

    removed: list[Path] = field(default_factory=list)
    resumable: list[Path] = field(default_factory=list)


def sweep(output_dir: str | os.PathLike, resumable: Callable[[Path], bool]) -> Sweep:
    """Tidy the work folders of `output_dir` whose owner is gone.

    `resumable(folder)` says whether a folder holds a valid checkpoint: such a folder is kept
    (unfinished files removed) and reported; every other unowned folder is deleted.
    """
    root = work_root(output_dir)
    result = Sweep()
    try:
        children = sorted(root.iterdir())
    except OSError:  # no work folder yet (the usual case), or unreadable
        return result
    for child in children:
        if child.is_symlink() or not child.is_dir():
            continue  # not ours: left alone
        staging = _NEW.fullmatch(child.name)
        if staging is not None:
            if not owner_alive(int(staging["pid"]), int(staging["started"])):
                shutil.rmtree(child, ignore_errors=True)
                result.removed.append(child)
            continue
        if not _NAME.fullmatch(child.name) or live_owner(child) is not None:
            continue
        for stale_owner, _ in owners(child):
            _unlink(stale_owner)
        if _safe(resumable, child):
            remove_stale(child)
            result.resumable.append(child)
        else:
            shutil.rmtree(child, ignore_errors=True)
            result.removed.append(child)
            log.info("removed the work folder of a job that did not finish and cannot be resumed: %s", child)
    try:
        root.rmdir()
    except OSError:
        pass
    return result


def _safe(test: Callable[[Path], bool], folder: Path) -> bool:
    try:
        return bool(test(folder))
    except Exception:  # a damaged folder is simply not resumable
        log.debug("work folder %s: checkpoint test failed", folder, exc_info=True)
        return False


def _owner_name(pid: int, started: int) -> str:
    return f"{OWNER_PREFIX}{pid}-{started}"


def _write_owner(folder: Path, pid: int, started: int, exclusive: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
    try:
        handle = os.open(folder / _owner_name(pid, started), flags, 0o644)
    except FileExistsError:
        return  # this process already owns it
    except OSError as error:
        raise OutputError(f"cannot write the owner file in {str(folder)!r}: {error.strerror or error}") from error
    with os.fdopen(handle, "w") as owner:
        owner.write(f'{{"pid": {pid}, "started": {started}}}\n')


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
