"""Shared by the fake launch/installer: append one JSON line per call to $FAKE_SDNEXT_RECORD."""

import json
import os


def record(kind: str, **details) -> None:
    path = os.environ.get("FAKE_SDNEXT_RECORD")
    if not path:
        return
    details = {"call": kind, "cwd": os.getcwd(), **details}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(details, default=str) + "\n")


def failing(package_text: str) -> bool:
    """$FAKE_SDNEXT_PIP_FAIL: comma-separated package names whose installation fails."""
    names = [n.strip() for n in os.environ.get("FAKE_SDNEXT_PIP_FAIL", "").split(",") if n.strip()]
    words = package_text.replace('"', " ").replace("'", " ").replace("<", " ").replace(">", " ").replace("=", " ").split()
    return any(name in words for name in names)


def constraints_in(text: str) -> dict[str, str]:
    """Contents of the files given with `-c FILE` in a pip argument string (path -> text)."""
    import shlex

    found = {}
    words = shlex.split(text)
    for flag, value in zip(words, words[1:]):
        if flag == "-c" and os.path.isfile(value):
            with open(value, encoding="utf-8") as handle:
                found[value] = handle.read()
    return found
