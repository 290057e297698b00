"""FramePack extension installer, run by SD.Next in a subprocess (cwd = this folder).

Installs only what is missing, through SD.Next's own helpers:

| import          | package                | for                                        |
|-----------------|------------------------|--------------------------------------------|
| av              | av (PyAV)              | writing videos (required)                  |
| optimum.quanto  | optimum-quanto         | quanto int8 / fp8 / int4 quantization      |
| nncf            | nncf                   | NNCF int8 / int4 weight compression        |
| cv2             | opencv-python-headless | image I/O, optical-flow interpolation      |
| peft            | peft                   | LoRA through diffusers' loader             |

`launch.run_pip` installs all but OpenCV (it raises on failure). It silently refuses any name
containing "opencv-python", so OpenCV goes through `installer.install` from the SD.Next root
(that helper adds a relative `-c constraints.txt`). torch, diffusers, transformers, gradio and
numpy are never installed, upgraded or downgraded: every pip call gets a constraints file
pinning the versions installed now.

Set FRAMEPACK_INSTALL_SKIP to a comma-separated list of package names (e.g. `nncf`) to leave
optional packages out. Exit status: 0 when everything is present or was installed, 1 when an
installation failed (SD.Next then reports an extension installer error; this output says which
package, what it is needed for and how to install it by hand).
"""

from __future__ import annotations

import importlib.util
import os
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
PROTECTED = ("torch", "diffusers", "transformers", "gradio", "numpy")


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


def write_constraints() -> str:
    """A constraints file pinning the protected packages at the versions installed now."""
    lines = []
    for name in PROTECTED:
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


def install_with_launch(requirement: str, package: str, constraints: str) -> None:
    import launch

    launch.run_pip(f'install "{requirement}" -c "{constraints}"', package)


def install_with_installer(requirement: str, package: str, constraints: str) -> None:
    """`installer.install` from the SD.Next root (its `-c constraints.txt` is relative)."""
    import installer

    root = os.path.dirname(os.path.abspath(installer.__file__))
    here = os.getcwd()
    os.chdir(root)
    try:
        result = installer.install(f'"{requirement}" -c "{constraints}"', package, reinstall=True)
    finally:
        os.chdir(here)
    outcome = result[0] if isinstance(result, tuple) else None
    if outcome is not None and getattr(outcome, "returncode", 0) != 0:
        raise RuntimeError(f"pip exit code {outcome.returncode}: {(outcome.stderr or '').strip()[:500]}")


def main() -> int:
    missing = missing_requirements()
    if not missing:
        names = ", ".join(package for _, package, _, _ in REQUIREMENTS if package not in skipped())
        say(f"nothing to install, all requirements present ({names})")
        return 0
    constraints = write_constraints()
    failed = []
    try:
        for module, package, purpose, required in missing:
            requirement = pip_requirement(package)
            say(f"installing {requirement} (needed for {purpose})")
            try:
                if package.startswith("opencv"):
                    install_with_installer(requirement, package, constraints)
                else:
                    install_with_launch(requirement, package, constraints)
            except Exception as error:  # one failure must not stop the others
                detail = " ".join(str(error).split())[:400]
                kind = "required" if required else "optional"
                say(f"could not install {package} ({kind}, needed for {purpose}): {detail}. "
                    f'Install it by hand into SD.Next\'s Python: python -m pip install "{requirement}"', error=True)
                failed.append(package)
            else:
                say(f"installed {package}")
    finally:
        try:
            os.remove(constraints)
        except OSError:
            pass
    if failed:
        say(f"failed: {', '.join(failed)}; the other requirements are in place", error=True)
        return 1
    say(f"done: installed {', '.join(package for _, package, _, _ in missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
