"""Fake SD.Next `launch` (installer helpers only). Calls are recorded, nothing is installed."""

from __future__ import annotations

import sys
from functools import lru_cache

import installer  # noqa: F401  (the real launch imports it too)
from _record import constraints_in, failing, record
from modules.logger import log  # noqa: F401

python = sys.executable
index_url = ""


def run(command, desc=None, errdesc=None, custom_env=None, live=False):
    record("run", command=command, desc=desc)
    if failing(command):
        raise RuntimeError(f"{errdesc or 'Error running command'}: {command} code: 1\n\nERROR: No matching distribution found\n")
    return ""


def is_installed(pkg):
    return installer.installed(pkg)


@lru_cache
def run_pip(pkg, desc=None):
    """`pip <pkg>`; raises RuntimeError on failure; silently skips forbidden names (as SD.Next does)."""
    forbidden = ["onnxruntime", "opencv-python"]
    if desc is None:
        desc = pkg
    for f in forbidden:
        if f in pkg:
            record("run_pip_blocked", pkg=pkg, desc=desc)
            return True
    record("run_pip", pkg=pkg, desc=desc, constraints=constraints_in(pkg))
    return run(f'"{sys.executable}" -m pip {pkg} --prefer-binary', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}")
