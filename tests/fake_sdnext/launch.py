"""Fake SD.Next `launch` (installer helpers only). Calls are recorded, nothing is installed."""

from __future__ import annotations

import os
import sys
from functools import lru_cache

import installer  # noqa: F401  (the real launch imports it too)
from _record import constraints_in, failing, record
from modules.logger import log  # noqa: F401

python = sys.executable
index_url = ""


def run(command, desc=None, errdesc=None, custom_env=None, live=False):
    record("run", command=command, desc=desc, constraints=constraints_in(command))
    if failing(command):
        raise RuntimeError(f"{errdesc or 'Error running command'}: {command} code: 1\n\nERROR: No matching distribution found\n")
    if " --dry-run " in command and "--report -" in command:
        return _install_report(command)
    return ""


def _install_report(command):
    """What `pip install --dry-run --report -` prints: the requested package at version 1.0 plus
    `$FAKE_SDNEXT_DEPS` ("pkg:dep==1.2+other==3;pkg2:...": what resolving pkg would also install)."""
    import json
    import shlex

    words = shlex.split(command)
    requirement = next(w for w in words[words.index("-"):][1:] if not w.startswith("-"))
    name = requirement.split("<")[0].split(">")[0].split("=")[0]
    deps = {}
    for entry in filter(None, os.environ.get("FAKE_SDNEXT_DEPS", "").split(";")):
        package, _, specs = entry.partition(":")
        deps[package.strip()] = [spec.split("==") for spec in specs.split("+") if spec]
    items = [(name, "1.0", True)] + [(dep, version, False) for dep, version in deps.get(name, [])]
    report = {"version": "1", "install": [{"metadata": {"name": n, "version": v}, "requested": r} for n, v, r in items]}
    return json.dumps(report, indent=2) + "\n"


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
