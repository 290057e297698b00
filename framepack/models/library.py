"""Model files chosen by name from a configured folder: LoRAs, upscalers, interpolators.

Clients that are not the machine's own user (the REST API, the web tab) never give a path: they
give a name, and the name is looked up here, in the one folder the server's settings configure.
A name is a file name, or a relative path inside the folder written with `/`; the file it names
must resolve (links followed) to a regular `.safetensors` file inside the folder. Anything else,
`..`, absolute paths, drive letters, backslashes, control characters, is refused with an error
naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from framepack.errors import InputError
from framepack.request.limits import MAX_MODEL_NAME_CHARS

SAFE_SUFFIXES = (".safetensors",)
MAX_LISTED = 2000
"""Files a listing shows at most (a folder with more is cut, in name order)."""


class ModelFolder:
    """The `.safetensors` files of one kind (`kind`, for messages) in `folder`."""

    def __init__(self, folder: str | os.PathLike | None, kind: str, setting: str,
                 suffixes: Sequence[str] = SAFE_SUFFIXES):
        self.folder = None if folder in (None, "") else Path(os.path.expanduser(os.fspath(folder)))
        self.kind, self.setting, self.suffixes = kind, setting, tuple(suffixes)

    def names(self) -> list[str]:
        """Names of the files a client may choose (sub-folders included, `/`-separated), sorted."""
        root = self._root(None, required=False)
        if root is None:
            return []
        found = []
        for directory, folders, files in os.walk(root):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in files:
                if name.lower().endswith(self.suffixes) and not name.startswith("."):
                    found.append((Path(directory) / name).relative_to(root).as_posix())
                    if len(found) >= MAX_LISTED:
                        return sorted(found)
        return sorted(found)

    def resolve(self, name: object, field: tuple = ()) -> Path:
        """The file `name` stands for (`.safetensors` may be left off); `InputError` at `field` if none."""
        text = _checked_name(name, self.kind, field)  # a path is refused whether a folder is set or not
        root = self._root(field, required=True)
        candidates = [text] if text.lower().endswith(self.suffixes) else [text + suffix for suffix in self.suffixes]
        for candidate in candidates:
            path = (root / candidate).resolve()
            if not path.is_relative_to(root):
                raise InputError(f"{self.kind} {text!r} is outside the {self.kind} folder", field)
            if path.is_file():
                return path
        raise InputError(f"{self.kind} {text!r} not found in the {self.kind} folder", field)

    def _root(self, field: tuple | None, required: bool) -> Path | None:
        if self.folder is None or not self.folder.is_dir():
            if not required:
                return None
            why = "is not set" if self.folder is None else "does not exist"
            raise InputError(f"the {self.kind} folder {why} on the server (setting {self.setting}); "
                             f"{self.kind} files are chosen by name from it", field)
        return self.folder.resolve()


def _checked_name(name: object, kind: str, field: tuple) -> str:
    """A relative `/`-separated name without `..`, drive, backslash or control characters."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{kind}: give a file name from the {kind} folder", field)
    text = name.strip()
    if len(text) > MAX_MODEL_NAME_CHARS:
        raise InputError(f"{kind} name too long ({len(text)} characters, at most {MAX_MODEL_NAME_CHARS})", field)
    parts = text.split("/")
    if (text.startswith("/") or "\\" in text or ":" in text or any(ord(c) < 32 for c in text)
            or any(part in ("", ".", "..") for part in parts)):
        raise InputError(f"{kind} {text[:60]!r}: give a name from the {kind} folder, not a path", field)
    return text
