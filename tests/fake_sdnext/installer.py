"""Fake SD.Next `installer`: `install`, `installed`, `pip`. Calls are recorded, nothing is installed.

Like the real one, `pip()` adds a relative `-c constraints.txt` (so callers must chdir to the
SD.Next root first); the record says whether that file was found from the current folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
from importlib import metadata

from _record import constraints_in, failing, record

log = logging.getLogger("sdnext.installer")
errors: list[str] = []
opts: dict = {}


class Dot(dict):
    __getattr__ = dict.get
    __setattr__ = dict.__setitem__


args = Dot({"reinstall": False, "upgrade": False, "uv": False, "experimental": False})


def _missing() -> set[str]:
    return {n.strip() for n in os.environ.get("FAKE_SDNEXT_MISSING", "").split(",") if n.strip()}


def installed(package, friendly: str | None = None, quiet=False):
    names = friendly.split() if friendly else [p for p in package.split() if not p.startswith("-")]
    for name in names:
        name = name.split("==")[0].split(">=")[0].split("<")[0]
        if name in _missing():
            return False
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return False
    return True


def pip(arg: str, ignore: bool = False, quiet: bool = True, *, uv=True, constraints=True):
    if opts.get("offline_mode", False):
        log.warning("Offline mode enabled")
        return None, "offline"
    all_args = [arg]
    if constraints and arg.startswith("install"):
        all_args.append("-c constraints.txt")
    code = 1 if failing(arg) else 0
    record("installer_pip", arg=arg, args=" ".join(all_args), constraints_found=os.path.exists("constraints.txt"),
           returncode=code, constraints=constraints_in(arg))
    result = subprocess.CompletedProcess(["pip", *all_args], code, stdout="", stderr="ERROR: failed" if code else "")
    if code != 0 and not ignore:
        errors.append(f"pip: {arg}")
        log.error(f"Install: pip: {arg}")
    return result, result.stderr


def install(package, friendly: str | None = None, ignore: bool = False, reinstall: bool = False, no_deps: bool = False,
            quiet: bool = False, force: bool = False, no_build_isolation: bool = False):
    res = ""
    if args.reinstall or reinstall or not installed(package, friendly, quiet=quiet):
        deps = "" if not no_deps else "--no-deps "
        isolation = "" if not no_build_isolation else "--no-build-isolation "
        cmd = f"install{' --upgrade' if not args.uv else ''}{' --force-reinstall' if force else ''} {deps}{isolation}{package}"
        res = pip(cmd, ignore=ignore)
    return res
