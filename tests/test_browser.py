"""The tab in a real browser: headless Debian Chromium driven by Playwright (no browser download).

The standalone app (`framepack.app.create_app`: REST API + the tab at "/") serves the tiny
random-weight model. The host starts the tab with fast values through its `ui_defaults` setting
(240 px, the tab's smallest resolution; 2 steps; latent window 3, i.e. 12 frames a section), so
a section takes a second or two on a CPU. The tests then use the page like a user: upload,
edit, watch the plan, Generate, watch progress, play the video, Pause, Stop.

Screenshots go to the test's output folder (`<tmp>/browser*/screens`), and the last one of each
test is copied to /tmp/framepack-screens/.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENS = Path("/tmp/framepack-screens")
UI_DEFAULTS = {"resolution": 240, "steps": 2, "latent_window_size": 3, "duration": 0.4, "fps": 30, "teacache": False}
DEMO_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "demo.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not installed (Debian: apt-get install chromium; "
                              "`make system-deps` installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(tiny_model_dir, out: Path, job_store: bool = False):
    """The standalone app (framepack.app) on a free port, serving `out` with the fast UI defaults;
    `job_store`: the queue `serve` builds (jobs kept in the output folder's store), else one in memory."""
    import uvicorn

    from framepack.app import create_app
    from framepack.host.standalone import StandaloneHost
    from framepack.jobs.queue import JobQueue

    host = StandaloneHost(output_dir=out, model=str(tiny_model_dir),
                          settings={"ui_defaults": UI_DEFAULTS, "keep_incomplete": True})
    app = create_app(host) if job_store else create_app(host, JobQueue(host))
    queue = app.state.framepack_queue
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="framepack-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    screens = out / "screens"
    screens.mkdir()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", host=host, queue=queue, screens=screens)
    finally:
        for job in queue.list():
            if not job.status.finished:
                queue.cancel(job.id)
        server.should_exit = True
        thread.join(30)
        if not job_store:
            queue.shutdown()


@pytest.fixture(scope="module")
def app_server(tiny_model_dir, tmp_path_factory):
    with running_app(tiny_model_dir, tmp_path_factory.mktemp("browser")) as app:
        yield app


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        yield context
        context.close()


def screenshot(page, server, name: str, publish: bool = False) -> Path:
    path = server.screens / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if publish:
        SCREENS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENS / path.name)
    return path


def open_tab(browser, server):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url)
    page.wait_for_selector("#fpk_generate")
    page.wait_for_function("typeof window.fpkSubmit === 'function'")  # our script is in the page
    page.errors = errors
    return page


def upload_image(page):
    page.set_input_files("#fpk_image input[type=file]", str(DEMO_IMAGE))
    page.wait_for_selector("#fpk_image img")
    page.wait_for_function("document.querySelector('#fpk_mode').innerText.includes('Image-to-video')")


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def wait_for_text(page, selector: str, pattern: str, timeout: float = 60.0) -> str:
    """Poll the element's text until the regex matches; returns the text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page.inner_text(selector)
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(100)
    raise AssertionError(f"{selector} never matched {pattern!r}; last text: {text!r}")


_RECORD_TEXTS = """(selector) => {
    const element = document.querySelector(selector);
    window.fpkTextsSeen = window.fpkTextsSeen || {};
    const seen = window.fpkTextsSeen[selector] = [element.innerText];
    new MutationObserver(() => seen.push(element.innerText))
        .observe(element, {subtree: true, childList: true, characterData: true});
}"""


def record_texts(page, selector: str) -> None:
    """From now on, keep every text the element shows, however briefly (a follower may replace it)."""
    page.evaluate(_RECORD_TEXTS, selector)


def wait_for_text_seen(page, selector: str, pattern: str, timeout: float = 60.0) -> None:
    """Wait until a text recorded by `record_texts` matched the regex (also valid in JavaScript)."""
    try:
        page.wait_for_function("([selector, pattern]) => (window.fpkTextsSeen[selector] || [])"
                               ".some(text => new RegExp(pattern).test(text))",
                               arg=[selector, pattern], timeout=timeout * 1000, polling=100)
    except Exception:
        seen = page.evaluate("(selector) => window.fpkTextsSeen[selector].slice(-5)", selector)
        raise AssertionError(f"{selector} never showed {pattern!r}; last texts: {seen!r}") from None


def video_metadata(page) -> dict:
    return page.eval_on_selector("#fpk_video video", """video => new Promise(resolve => {
        const report = () => resolve({src: video.currentSrc || video.src, duration: video.duration,
                                      loop: video.loop, width: video.videoWidth});
        if (video.readyState >= 1) report(); else video.addEventListener('loadedmetadata', report);
    })""")


def test_generate_in_the_browser(app_server, browser):
    page = open_tab(browser, app_server)
    plan = "#fpk_plan"
    assert "13 frames (0.43 s at 30 fps), 1 section" in page.inner_text(plan)  # ui_defaults: 1 section
    upload_image(page)

    set_number(page, "fpk_duration", 1.2)  # the plan follows the duration at once
    wait_for_text(page, plan, r"37 frames \(1\.23 s at 30 fps\), 3 sections")
    assert page.locator(f"{plan} tbody tr").count() == 3
    page.fill("#fpk_section_prompts textarea", "5: jumps")  # a bad schedule shows in red before Generate
    wait_for_text(page, plan, "section 5 does not exist; the video has 3 sections")
    assert page.locator(f"{plan} .fpk-plan-error").is_visible()
    page.fill("#fpk_section_prompts textarea", "2: the boat turns")
    wait_for_text(page, plan, "the boat turns")
    screenshot(page, app_server, "plan")
    page.fill("#fpk_section_prompts textarea", "")
    set_number(page, "fpk_duration", 0.4)
    wait_for_text(page, plan, r"13 frames .*1 section")

    page.locator("#fpk_quick_prompts button.gallery-item").first.click()  # a quick prompt fills the prompt
    page.wait_for_function("document.querySelector('#fpk_prompt textarea').value.startsWith('The girl dances')")

    page.click("#fpk_generate")
    seen = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = page.inner_text("#fpk_progress")
        seen.add(text.split("\n")[0])
        if "Done in" in text or "Failed" in text:
            break
        page.wait_for_timeout(100)
    final = page.inner_text("#fpk_progress")
    assert "Done in" in final and "13 frames" in final and "Timings:" in final, final
    assert any("Starting" in s or "Section" in s for s in seen), seen  # live progress was shown
    assert "completed · seed" in page.inner_text("#fpk_status")

    page.wait_for_selector("#fpk_video video[src]")
    meta = video_metadata(page)
    assert "/file=" in meta["src"] and meta["duration"] > 0.3 and meta["loop"] is True and meta["width"] > 0
    videos = sorted(app_server.host.video_dir().glob("*.mp4"))
    assert videos and videos[-1].name in meta["src"]
    screenshot(page, app_server, "generated", publish=True)
    assert not page.errors, page.errors
    page.close()


def test_pause_and_stop_keep_a_partial_video(app_server, browser):
    assert app_server.host.keep_incomplete()
    before = set(app_server.host.video_dir().glob("*.mp4"))
    page = open_tab(browser, app_server)
    upload_image(page)
    set_number(page, "fpk_duration", 2.0)
    wait_for_text(page, "#fpk_plan", r"61 frames .*5 sections")

    page.click("#fpk_generate")
    wait_for_text(page, "#fpk_progress", r"(?i)section [2-5]/5", timeout=90)  # the first section is finished
    page.click("#fpk_pause")
    page.wait_for_function("document.querySelector('#fpk_pause').innerText.trim() === 'Resume'")
    wait_for_text(page, "#fpk_progress", "PAUSED", timeout=10)
    screenshot(page, app_server, "paused")
    page.click("#fpk_stop")  # a paused job wakes up to stop
    final = wait_for_text(page, "#fpk_progress", "Stopped after|Done in|Failed", timeout=90)
    assert "Stopped after" in final and "partial outputs kept" in final, final

    page.wait_for_selector("#fpk_video video[src]")
    meta = video_metadata(page)
    assert 0 < meta["duration"] < 2.0, meta
    new = set(app_server.host.video_dir().glob("*.mp4")) - before
    assert len(new) == 1
    import av

    with av.open(str(new.pop())) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert 0 < frames < 61
    screenshot(page, app_server, "stopped", publish=True)
    assert not page.errors, page.errors
    page.close()
