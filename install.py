"""FramePack extension installer, run by SD.Next in a subprocess (cwd = this folder).

Installs only what is missing, through SD.Next's own helpers:

| import          | package                | for                                        |
|-----------------|------------------------|--------------------------------------------|
| av              | av (PyAV)              | writing videos (required)                  |
| optimum.quanto  | optimum-quanto         | quanto int8 / fp8 / int4 quantization      |
| nncf            | nncf                   | NNCF int8 / int4 weight compression        |
| cv2             | opencv-python-headless | image I/O, optical-flow interpolation      |
| peft            | peft                   | LoRA through diffusers' loader             |

torch, diffusers, transformers, gradio, numpy and setuptools are never installed, upgraded or
downgraded. A plain `pip install optimum-quanto` would re-resolve torch's own requirements and
raise setuptools from SD.Next's 69.5.1 to the newest release (torch's metadata asks for >= 77,
SD.Next pins 69.5.1 on every start), and pinning setuptools makes that resolve impossible. So
each missing package is installed in two steps: `pip install --dry-run --report -` says what it
needs (the protected packages pinned at their installed versions, setuptools left free), then
exactly that list, minus the protected packages, is installed with `--no-deps`.

`launch.run_pip` installs all but OpenCV (it raises on failure). It silently refuses any name
containing "opencv-python", so OpenCV goes through `installer.install` from the SD.Next root
(that helper adds a relative `-c constraints.txt`).

SD.Next shows extension installer output only with `SD_INSTALL_DEBUG` set (or in its log file
after a failure): the lines start with `FramePack install:`.

Set FRAMEPACK_INSTALL_SKIP to a comma-separated list of package names (e.g. `nncf`) to leave
optional packages out. Exit status: 0 when everything is present or was installed, 1 when an
installation failed (SD.Next then reports an extension installer error; this output says which
package, what it is needed for and how to install it by hand).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
from importlib import metadata

PREFIX = "FramePack install:"
# (module to import, pip package, what it is for, required)
REQUIREMENTS = (
    ("av", "av", "writing videos", True),
    ("optimum.quanto", "optimum-quanto", "quanto quantization", False),
    ("nncf", "nncf", "NNCF weight compression", False),
    ("cv2", "opencv-python-headless", "image I/O and optical-flow interpolation", False),
    ("peft", "peft", "LoRA files through diffusers' loader", False),
)
PROTECTED = ("torch", "diffusers", "transformers", "gradio", "numpy", "setuptools")
# pinned in the dry run too, except setuptools: torch's metadata asks for a newer one than SD.Next keeps,
# so pinning it there makes every resolve that touches torch impossible (it is dropped from the plan instead)
PINNED_IN_RESOLVE = tuple(name for name in PROTECTED if name != "setuptools")


def say(message: str, error: bool = False) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr if error else sys.stdout, flush=True)


def importable(module: str) -> bool:
    """True when `module` can be found; a broken or hidden parent package counts as missing."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def skipped() -> set[str]:
    return {name.strip().lower() for name in os.environ.get("FRAMEPACK_INSTALL_SKIP", "").split(",") if name.strip()}


def missing_requirements() -> list[tuple[str, str, str, bool]]:
    skip = skipped()
    return [item for item in REQUIREMENTS if not importable(item[0]) and item[1] not in skip]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_constraints(names: tuple[str, ...] = PROTECTED) -> str:
    """A constraints file pinning `names` at the versions installed now."""
    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    handle = tempfile.NamedTemporaryFile("w", prefix="framepack-constraints-", suffix=".txt", delete=False)
    with handle:
        handle.write("\n".join(lines) + "\n")
    return handle.name


def pip_requirement(package: str) -> str:
    """opencv 4.12+ needs numpy 2: with numpy 1 installed ask for the last release that fits."""
    if package == "opencv-python-headless":
        try:
            if int(metadata.version("numpy").split(".")[0]) < 2:
                return "opencv-python-headless<4.12"
        except (metadata.PackageNotFoundError, ValueError):
            pass
    return package


def plan_install(requirement: str, resolve_constraints: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(exact `name==version` specs to install, protected packages pip wanted to change).

    `pip install --dry-run --report -` resolves `requirement` against what is installed and
    prints what it would install or upgrade; nothing is installed.
    """
    import launch

    output = launch.run(f'"{sys.executable}" -m pip install --dry-run --quiet --no-input --report - '
                        f'"{requirement}" -c "{resolve_constraints}"',
                        errdesc=f"pip cannot resolve {requirement}")
    try:
        report = json.loads(output[output.index("{"):])
        items = [(item["metadata"]["name"], item["metadata"]["version"]) for item in report.get("install", [])]
    except (ValueError, KeyError, TypeError) as error:
        raise RuntimeError(f"pip's install report for {requirement} is unreadable ({error})") from None
    protected = {canonical(name) for name in PROTECTED}
    specs = [f"{name}=={version}" for name, version in items if canonical(name) not in protected]
    kept = [(name, version) for name, version in items if canonical(name) in protected]
    return specs, kept


def install_with_launch(specs: list[str], package: str, constraints: str) -> None:
    import launch

    quoted = " ".join(f'"{spec}"' for spec in specs)
    launch.run_pip(f'install --no-deps {quoted} -c "{constraints}"', package)


def install_with_installer(specs: list[str], package: str, constraints: str) -> None:
    """`installer.install` from the SD.Next root (its `-c constraints.txt` is relative)."""
    import installer

    root = os.path.dirname(os.path.abspath(installer.__file__))
    here = os.getcwd()
    os.chdir(root)
    try:
        quoted = " ".join(f'"{spec}"' for spec in specs)
        result = installer.install(f'{quoted} -c "{constraints}"', package, reinstall=True, no_deps=True)
    finally:
        os.chdir(here)
    outcome = result[0] if isinstance(result, tuple) else None
    if outcome is not None and getattr(outcome, "returncode", 0) != 0:
        raise RuntimeError(f"pip exit code {outcome.returncode}: {(outcome.stderr or '').strip()[:500]}")


def install_package(requirement: str, package: str, constraints: str, resolve_constraints: str) -> list[str]:
    """Install `requirement` and what it needs, never a protected package; returns what was installed."""
    specs, kept = plan_install(requirement, resolve_constraints)
    for name, wanted in kept:
        say(f"kept {name} {installed_version(name)} (the host's; resolving {requirement} asked for {wanted})")
    if not specs:
        return []
    through_installer = [spec for spec in specs if spec.lower().startswith("opencv")]  # launch.run_pip refuses them
    others = [spec for spec in specs if spec not in through_installer]
    if others:
        install_with_launch(others, package, constraints)
    if through_installer:
        install_with_installer(through_installer, package, constraints)
    return specs


def installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def main() -> int:
    missing = missing_requirements()
    if not missing:
        names = ", ".join(package for _, package, _, _ in REQUIREMENTS if package not in skipped())
        say(f"nothing to install, all requirements present ({names})")
        return 0
    constraints = write_constraints()
    resolve_constraints = write_constraints(PINNED_IN_RESOLVE)
    failed = []
    try:
        for module, package, purpose, required in missing:
            requirement = pip_requirement(package)
            say(f"installing {requirement} (needed for {purpose})")
            try:
                specs = install_package(requirement, package, constraints, resolve_constraints)
            except Exception as error:  # one failure must not stop the others
                detail = " ".join(str(error).split())[:400]
                kind = "required" if required else "optional"
                say(f"could not install {package} ({kind}, needed for {purpose}): {detail}. "
                    f'Install it by hand into SD.Next\'s Python: python -m pip install "{requirement}"', error=True)
                failed.append(package)
            else:
                extra = [spec for spec in specs if canonical(spec.split("==")[0]) != canonical(package)]
                say(f"installed {package}" + (f" with {', '.join(extra)}" if extra else ""))
    finally:
        for path in (constraints, resolve_constraints):
            try:
                os.remove(path)
            except OSError:
                pass
    if failed:
        say(f"failed: {', '.join(failed)}; the other requirements are in place", error=True)
        return 1
    say(f"done: installed {', '.join(package for _, package, _, _ in missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
