"""`make test-sdnext`: this checkout inside the REAL SD.Next (../shared/vendor snapshot), on CPU.

Run by `make test-sdnext` (which builds SD.Next first with build_sdnext.py) as
`.venv/bin/python -m pytest tests_sdnext`. The tests run in the project venv; SD.Next runs in its
own venv as a subprocess and is driven over HTTP and with Playwright + Debian Chromium.

One site (SD.Next user data folder) for the whole session, under build/sdnext-run/ (kept after
the run for inspection: config.json, sdnext.log, console-*.txt, outputs/); screenshots go to
build/sdnext-screens/. Files run in name order: test_0 installs the extension and does the full
launch, test_1 uses a Standard-theme server, test_2 a ModernUI server with --auth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tests_sdnext.sdnext_server import CACHE, ROOT, SdnextSite  # noqa: E402

RUN = ROOT / "build" / "sdnext-run"
SCREENS = ROOT / "build" / "sdnext-screens"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEMO_IMAGE = ROOT / "assets" / "demo.png"
AUTH = ("tester", "framepack-secret")


def pytest_configure(config):
    config.addinivalue_line("markers", "sdnext: needs the real SD.Next built by tests_sdnext/build_sdnext.py")


@pytest.fixture(scope="session")
def run_dir() -> Path:
    dotted = [part for part in RUN.parts if part.startswith(".")]
    assert not dotted, (f"{RUN} has a hidden folder in its path ({dotted}): Gradio 3.43 refuses to serve files "
                        "from such paths, so SD.Next's own page would be broken; check out the project elsewhere")
    if RUN.exists():
        shutil.rmtree(RUN)
    RUN.mkdir(parents=True)
    SCREENS.mkdir(parents=True, exist_ok=True)
    for old in SCREENS.glob("*.png"):
        old.unlink()
    return RUN


@pytest.fixture(scope="session")
def tiny_models(run_dir) -> dict[str, Path]:
    """The tiny model (2 MB) and its bigger twin whose layers are large enough for SDNQ to act."""
    from framepack.models.tiny import build_quantizable_tiny_model, build_tiny_model

    return {"tiny": build_tiny_model(run_dir / "models" / "tiny"),
            "quantizable": build_quantizable_tiny_model(run_dir / "models" / "quantizable")}


@pytest.fixture(scope="session")
def site(run_dir, tiny_models) -> SdnextSite:
    """SD.Next with this checkout installed by a git clone; its settings point at the tiny model."""
    if not (CACHE / "ready").is_file():
        subprocess.run(["python3", str(ROOT / "tests_sdnext" / "build_sdnext.py")], check=True)
    site = SdnextSite(run_dir)
    site.install_extension()
    site.update_config(theme_type="Standard", sd_checkpoint_autoload=False,
                       framepack_model_recipe=f"folder: {tiny_models['tiny']}")
    return site


@pytest.fixture(scope="session")
def playwright_instance():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    with sync_api.sync_playwright() as playwright:
        yield playwright


def browser_context(playwright_instance, profile: Path):
    """Chromium with its own profile folder at 1440x900 (the "first screen"); the caller closes it."""
    context = playwright_instance.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1440, "height": 900})
    context.set_default_timeout(240_000)  # SD.Next's page is heavy for 2 shared cores
    return context


@pytest.fixture
def browser(playwright_instance, tmp_path):
    """A fresh Chromium profile per test."""
    context = browser_context(playwright_instance, tmp_path / "chromium")
    yield context
    context.close()


def wait_until(predicate, timeout: float, interval: float = 0.5, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout:.0f} s")
