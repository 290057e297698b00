"""Output names and atomic publication, shared by every writer in this package.

Every file we produce is first written under a hidden temporary name in the destination folder
and renamed into place only when it is complete, so a crash, an exception or a Stop never leaves
a half-written video where a user (or SD.Next's gallery) would find it. Names come from user
text (prompts, patterns), so they are sanitized and checked to stay inside the output folder.
"""

from __future__ import annotations

import os
import re
import secrets
import unicodedata
from pathlib import Path

from framepack.errors import InputError, OutputError

MAX_NAME_BYTES = 120
"""Limit for a sanitized stem: leaves room for a counter and extension under the usual 255."""

_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_RESERVED_WINDOWS = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}
_EXT = re.compile(r"^\.?[A-Za-z0-9]{1,12}$")
TEMP_MARKER = ".partial-"


def sanitize_filename(stem: str, fallback: str = "video") -> str:
    """Turn arbitrary user text into one safe path component.

    Separators, control characters and characters Windows refuses become `_`; leading dots
    and spaces go (no hidden files, no `..`); the result is cut to MAX_NAME_BYTES of UTF-8
    without splitting a character. Empty results fall back to `fallback`.
    """
    text = unicodedata.normalize("NFC", str(stem))
    text = _FORBIDDEN.sub("_", text)
    text = re.sub(r"\s+", " ", text).strip(" .")
    text = re.sub(r"\.{2,}", ".", text)
    encoded = text.encode("utf-8")[:MAX_NAME_BYTES]
    text = encoded.decode("utf-8", errors="ignore").strip(" .")
    if not text:
        text = fallback
    if text.split(".")[0].lower() in _RESERVED_WINDOWS:
        text = "_" + text
    return text


def normalize_extension(ext: str) -> str:
    """Return `ext` as `.xyz`; refuse anything that is not a short alphanumeric extension."""
    if not isinstance(ext, str) or not _EXT.match(ext):
        raise InputError(f"invalid file extension {ext!r}: expected something like '.mp4'")
    return "." + ext.lstrip(".").lower()


def _inside(folder: Path, candidate: Path) -> bool:
    """True when `candidate` resolves to a direct or nested child of `folder`."""
    try:
        candidate.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def unique_output_path(folder: str | os.PathLike, stem: str, ext: str) -> Path:
    """A path `folder/<sanitized stem>[-N]<ext>` that does not exist yet and cannot escape.

    The folder is created if needed. The name is never an existing file (a counter is added),
    and the resolved path is checked to lie inside the resolved folder, so stems such as
    `../../etc/passwd` or absolute paths end up as harmless names inside it.
    """
    base = Path(folder)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {str(base)!r}: {e.strerror or e}") from e
    if not base.is_dir():
        raise OutputError(f"output folder {str(base)!r} is not a folder")
    clean = sanitize_filename(stem)
    suffix = normalize_extension(ext) if ext else ""
    for n in range(0, 100000):
        name = f"{clean}{suffix}" if n == 0 else f"{clean}-{n}{suffix}"
        candidate = base / name
        if not _inside(base, candidate):
            raise OutputError(f"output name {stem!r} would leave the folder {str(base)!r}")
        if not os.path.lexists(candidate):
            return candidate
    raise OutputError(f"no free file name for {clean!r} in {str(base)!r}")


def temp_sibling(final: str | os.PathLike, keep_suffix: bool = True, work=None) -> Path:
    """A random temporary name for the unfinished `final`: in `work` (a WorkFolder in the same
    output folder) when given, else hidden next to `final`. Either way on the same filesystem,
    so the rename into place is atomic.

    `keep_suffix` keeps the real extension at the end, for writers (OpenCV) that choose the
    container from the file name.
    """
    if work is not None:
        return work.temp_path(final, keep_suffix)
    final = Path(final)
    token = secrets.token_hex(4)
    tail = final.suffix if keep_suffix else ""
    return final.with_name(f".{final.name}{TEMP_MARKER}{token}{tail}")


def publish(temp: Path, final: Path, overwrite: bool = False) -> Path:
    """Move a finished temp file or folder to its final name; return the name actually used.

    With `overwrite` the final name is replaced atomically. Without it an existing final name
    is never clobbered: if something appeared there while we were writing, the result is
    published under the next free name instead of being lost.
    """
    temp, final = Path(temp), Path(final)
    if overwrite and not temp.is_dir():
        os.replace(temp, final)
        return final
    target = final
    for _ in range(1000):
        try:
            if temp.is_dir():
                if os.path.lexists(target):
                    raise FileExistsError(str(target))
                os.rename(temp, target)
            else:
                _link_or_rename(temp, target)
            return target
        except FileExistsError:
            target = unique_output_path(final.parent, final.stem, final.suffix)
    raise OutputError(f"could not publish {str(final)!r}: no free name")


def _link_or_rename(temp: Path, target: Path) -> None:
    """Rename without clobbering: hard link then unlink, falling back where links are absent."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(target):
            raise FileExistsError(str(target)) from None
        os.rename(temp, target)
        return
    os.unlink(temp)


def remove_quietly(path: Path | None) -> None:
    """Delete a temp file if it is still there; used on every failure path."""
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


class AtomicWriter:
    """The lifetime every writer shares: the output appears only on a clean `close()`.

    Leaving the `with` block through an exception, or dropping an unclosed writer, aborts it
    and removes the temporary file, so no half-written output is ever left behind.
    Subclasses set `_temp` while a temporary file exists and `_closed` once finished.
    """

    _temp: Path | None = None
    _closed: bool = False

    def open(self):
        return self

    def close(self):
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self):
        if self._temp is not None and not self._closed:
            self.abort()
