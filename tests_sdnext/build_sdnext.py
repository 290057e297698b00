#!/usr/bin/env python3
"""Build the real SD.Next for `make test-sdnext`: unpacked from ../shared/vendor, with its own venv.

    python3 tests_sdnext/build_sdnext.py [--cache DIR] [--force]

Result (default DIR = build/sdnext, ignored by git; not under a dot-folder: Gradio 3.43 refuses
to serve any file whose path has a part starting with ".", which would hide SD.Next's own UI files):

    DIR/app/    SD.Next 058a7f0 (the vendored `git archive`), ModernUI in extensions-builtin/
    DIR/venv/   its Python 3.11 venv, CPU torch
    DIR/ready   the build key; the build is skipped while it matches

The key covers the two vendored tarballs, this file and host-pins.txt: change any of them and
the next run rebuilds from scratch. Only the package registry is used (no GitHub, no model hub).

Why each step (facts in tests_sdnext/README.md):
1. torch 2.13.0 (the CPU wheel on this machine) first, so nothing later picks another build.
2. torchvision 0.28.0 without dependencies, patched so that its import skips the operator
   registrations that need its compiled ops: PyPI's wheel is built for CUDA and its ops do not
   load on CPU torch, but SD.Next imports torchvision at startup.
3. SD.Next's requirements.txt with its constraints.txt and host-pins.txt, without its
   `setuptools==69.5.1` line (it conflicts with torch's setuptools>=77 in one resolve).
4. diffusers / transformers / tokenizers at SD.Next's versions as PyPI releases (SD.Next itself
   installs git commits, which need GitHub; `--experimental` makes it accept the releases).
5. gradio 3.43.2 and gradio-client 0.5.0 without dependencies, then the dependency list SD.Next's
   `install_gradio()` uses (gradio's own metadata asks for numpy 1 and Pillow 10).
6. setuptools 69.5.1 and wheel, as SD.Next's `ensure_base_requirements()` does on every start.
7. `launch.py --test` once: SD.Next installs the rest of its launch-time packages itself
   (compel, pydantic, OpenCV, SciPy, ONNX Runtime) and checks that it starts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENDOR = Path(os.environ.get("FRAMEPACK_VENDOR_DIR", ROOT.parent / "shared" / "vendor"))
SDNEXT_TARBALL = "sdnext-058a7f0.tar.gz"
THEME_TARBALL = "sdnext-modernui-4b8d5f6.tar.gz"
PINS = HERE / "host-pins.txt"
GRADIO_DEPENDENCIES = ("fastapi", "websockets", "aiofiles", "ffmpy", "pydub", "uvicorn", "semantic-version",
                       "altair", "python-multipart", "matplotlib", "importlib-resources")
HOST_SETUPTOOLS = "69.5.1"
TORCHVISION_PATCH_MARK = "# FramePack test bed:"


def say(message: str) -> None:
    print(f"[build-sdnext {time.strftime('%H:%M:%S')}] {message}", flush=True)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_key() -> str:
    parts = [file_digest(VENDOR / SDNEXT_TARBALL), file_digest(VENDOR / THEME_TARBALL),
             file_digest(Path(__file__).resolve()), file_digest(PINS), sys.version.split()[0]]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def run(*command: str | os.PathLike, cwd: Path | None = None, env: dict | None = None) -> None:
    shown = " ".join(str(part) for part in command)
    say(f"$ {shown[:300]}")
    started = time.monotonic()
    subprocess.run([str(part) for part in command], cwd=cwd, env=env, check=True)
    say(f"  ({time.monotonic() - started:.0f} s)")


def unpack(tarball: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="data")


def patch_torchvision(venv: Path) -> None:
    """Import torchvision without its compiled-ops registrations when those ops do not load."""
    init = next((venv / "lib").glob("python3*/site-packages/torchvision/__init__.py"))
    text = init.read_text(encoding="utf-8")
    if TORCHVISION_PATCH_MARK in text:
        return
    eager = "from torchvision import (\n    _autograd_registrations,\n    _meta_registrations,\n"
    if eager not in text:
        raise SystemExit(f"torchvision's __init__.py is not the one this recipe knows: {init}")
    text = text.replace(eager, "from torchvision import (\n", 1)
    text = text.replace(
        "try:\n    from .version import __version__",
        f"{TORCHVISION_PATCH_MARK} the CUDA wheel's ops do not load on CPU torch; register only when they do\n"
        "if extension._has_ops():\n"
        "    from torchvision import _autograd_registrations, _meta_registrations  # noqa: F401\n\n"
        "try:\n    from .version import __version__", 1)
    init.write_text(text, encoding="utf-8")
    for cache in init.parent.glob("__pycache__/__init__*.pyc"):
        cache.unlink()


def host_requirements(app: Path) -> Path:
    """SD.Next's requirements.txt without its setuptools pin (see step 3)."""
    lines = [line for line in (app / "requirements.txt").read_text(encoding="utf-8").splitlines()
             if not line.strip().lower().startswith("setuptools")]
    target = app.parent / "requirements-host.txt"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def build(cache: Path, python: str) -> None:
    app, venv = cache / "app", cache / "venv"
    for path in (app, venv, cache / "ready"):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    say(f"unpacking {SDNEXT_TARBALL} and {THEME_TARBALL} into {app}")
    unpack(VENDOR / SDNEXT_TARBALL, app)
    theme = app / "extensions-builtin" / "sdnext-modernui"
    if theme.exists():
        shutil.rmtree(theme)
    unpack(VENDOR / THEME_TARBALL, theme)

    run(python, "-m", "venv", venv)
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    pip = (py, "-m", "pip", "install", "-q", "--no-warn-conflicts")
    pins = ("-c", str(PINS))
    host = ("-c", str(app / "constraints.txt"))
    run(*pip, *pins, "torch==2.13.0", env=env)
    run(*pip, "--no-deps", *pins, "torchvision==0.28.0", env=env)
    patch_torchvision(venv)
    run(*pip, *pins, *host, "-r", host_requirements(app), env=env)
    run(*pip, *pins, *host, "diffusers==0.39.0", "transformers==5.13.0", "tokenizers==0.22.2", env=env)
    run(*pip, "--no-deps", *pins, "gradio==3.43.2", "gradio-client==0.5.0", env=env)
    run(*pip, *pins, *host, *GRADIO_DEPENDENCIES, env=env)
    run(*pip, f"setuptools=={HOST_SETUPTOOLS}", "wheel", env=env)
    run(py, "-c", "import torch, torchvision, diffusers, transformers, gradio; "
                  "print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'diffusers', "
                  "diffusers.__version__, 'transformers', transformers.__version__, 'gradio', gradio.__version__)",
        env=env)
    with tempfile.TemporaryDirectory(prefix="sdnext-build-data-") as data:
        launch_env = {**env, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "SD_NOTRACE": "1"}
        run(py, "launch.py", "--test", "--experimental", "--debug", "--data-dir", data, "--server-name", "127.0.0.1",
            cwd=app, env=launch_env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "sdnext")
    parser.add_argument("--python", default=os.environ.get("SDNEXT_PYTHON", "python3.11"))
    parser.add_argument("--force", action="store_true", help="rebuild even when the key matches")
    args = parser.parse_args(argv)
    cache = args.cache.resolve()
    key = build_key()
    ready = cache / "ready"
    if not args.force and ready.is_file() and ready.read_text().strip() == key:
        say(f"up to date: {cache} (key {key})")
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build(cache, args.python)
    ready.write_text(key + "\n")
    say(f"built {cache} in {time.monotonic() - started:.0f} s (key {key})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
