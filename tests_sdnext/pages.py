"""Playwright helpers for SD.Next's page and the FramePack tab in it (both themes)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PageWatch:
    """Failed Gradio events and page script errors seen while a page was open."""

    failed_events: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def attach(self, page) -> "PageWatch":
        def on_response(response):
            if "/run/predict" not in response.url and "/api/predict" not in response.url:
                return
            try:
                body = response.text()
            except Exception:  # noqa: BLE001 - a closed page
                return
            if response.status != 200 or '"error"' in body[:2000]:
                self.failed_events.append(f"{response.status} {response.url}: {body[:500]}")

        page.on("response", on_response)
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        return self


SIDEBAR_BUTTON = "#other_extensions button[tabitemid*='#tab_framepack_tabitem']"


def open_page(browser, server, auth: tuple[str, str] | None = None, theme: str = "Standard"):
    """SD.Next's page, after its UI (ModernUI: its sidebar too) and our script have loaded;
    with --auth, logged in first."""
    if auth:
        response = browser.request.post(server.url + "/login", form={"username": auth[0], "password": auth[1]})
        assert response.ok, f"login failed: {response.status} {response.text()[:200]}"
    page = browser.new_page()
    watch = PageWatch().attach(page)
    page.goto(server.url, timeout=300_000)
    page.wait_for_selector("#fpk_generate", state="attached", timeout=300_000)
    page.wait_for_function("() => window.fpkScriptLoaded === true", timeout=120_000)
    if theme == "Modern":
        page.wait_for_selector(SIDEBAR_BUTTON, state="attached", timeout=300_000)
    return page, watch


def extension_problems(log: str) -> list[str]:
    """ERROR / CRITICAL lines naming this extension, tracebacks through its files, installer errors."""
    from tests_sdnext.sdnext_server import EXTENSION_FOLDER

    ours = re.compile(r"framepack|" + re.escape(EXTENSION_FOLDER), re.I)
    problems = []
    lines = log.splitlines()
    for number, line in enumerate(lines):
        level = re.search(r"\| (ERROR|CRITICAL) \|", line)
        if (level and ours.search(line)) or "Extension installer error" in line:
            problems.append("\n".join(lines[number:number + 12]))
        elif "Traceback" in line and any(ours.search(after) for after in lines[number + 1:number + 40]
                                         if after.startswith((" ", "\t"))):
            problems.append("\n".join(lines[number:number + 40]))
    return problems


def modern(page) -> bool:
    return page.evaluate("() => !!document.querySelector('#other_extensions')")


def open_framepack_tab(page) -> None:
    if modern(page):
        page.locator(SIDEBAR_BUTTON).click()
    else:
        page.locator("#tabs > .tab-nav > button", has_text=re.compile(r"^\s*FramePack\s*$")).click()
    page.wait_for_selector("#fpk_generate", state="visible", timeout=60_000)


def open_settings_section(page, name: str) -> None:
    """System -> Settings -> section `name` (Standard theme)."""
    page.locator("#tabs > .tab-nav > button", has_text=re.compile(r"^\s*System\s*$")).click()
    page.locator("#settings > .tab-nav > button", has_text=re.compile(rf"^\s*{name}\s*$")).click()


def error_badges(page) -> int:
    """Gradio's red "Error" status on components (a failed event marks every output)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.error'))
        .filter(e => /^\\s*Error\\s*$/.test(e.textContent || '')).length""")


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def open_accordion(page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id}").get_by_text(label, exact=True).first.click()


def fast_settings(page, duration: float, steps: int = 2) -> int:
    """Small, fast values through the tab's own controls; returns the planned frame count."""
    page.set_input_files("#fpk_image input[type=file]", str(Path(__file__).resolve().parents[1] / "assets/demo.png"))
    set_number(page, "fpk_resolution", 240)
    set_number(page, "fpk_duration", duration)
    if not page.locator("#fpk_steps input[type=number]").is_visible():
        open_accordion(page, "fpk_advanced_accordion", "Advanced")
    set_number(page, "fpk_steps", steps)
    set_number(page, "fpk_latent_window_size", 3)
    set_number(page, "fpk_seed", 7)
    return stable_plan(page, f"{duration:.2f} s")


def stable_plan(page, must_contain: str, timeout: float = 120) -> int:
    """The planned frame count once the plan shows `must_contain` and has stopped changing."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        text = page.inner_text("#fpk_plan").split("\n")[0]
        if text != last:
            last, since = text, time.monotonic()
        elif must_contain in text and time.monotonic() - since > 2:
            return planned_frames(page)
        time.sleep(0.3)
    raise AssertionError(f"the plan never settled on {must_contain!r}: {last!r}")


def planned_frames(page) -> int:
    text = page.inner_text("#fpk_plan")
    match = re.match(r"\s*(\d+) frames", text)
    assert match, text
    return int(match.group(1))


_RECORD_PROGRESS = """() => {
    const seen = window.fpkSeen = {progress: [], preview: false};
    const progress = document.querySelector('#fpk_progress');
    const preview = document.querySelector('#fpk_preview');
    const look = () => {
        seen.progress.push(progress.innerText);
        const img = preview.querySelector('img.fpk-live-image');
        if (img && (img.src || '').startsWith('data:image')) seen.preview = true;
    };
    look();
    new MutationObserver(look).observe(progress, {subtree: true, childList: true, characterData: true});
    new MutationObserver(look).observe(preview, {subtree: true, childList: true, attributes: true});
}"""


def record_progress(page) -> None:
    """From now on the page keeps every progress text it shows and whether a live preview appeared.

    Read by the page itself, not by polling from here: on a busy page each Playwright call can wait
    seconds, long enough for a short job to start and end between two looks.
    """
    page.evaluate(_RECORD_PROGRESS)


def progress_seen(page) -> dict:
    """What `record_progress` kept: {"progress": [texts...], "preview": bool}."""
    return page.evaluate("() => window.fpkSeen")


def status(page) -> str:
    return page.inner_text("#fpk_status")


# A tiny-model job in the tab takes ~15 s here; a check that fails must fail in minutes, not hold CI for half an hour
TAB_JOB_TIMEOUT = 180.0


def wait_for_status(page, pattern: str, timeout: float = TAB_JOB_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = status(page)
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"status never matched {pattern!r}; last: {status(page)!r}")


def click_like_a_person(page, selector: str) -> None:
    """One mouse click at the element's centre, as a person's click is: a single input event.

    Playwright's `click` first checks the element over several page round trips (visible,
    stable over two frames, not covered), each of which waits for a busy page; on two cores
    inside SD.Next that alone took seconds during a run. The element's place is read first.
    """
    where = box(page, selector)
    assert where and where["width"] > 0, f"{selector} is not on the page"
    page.mouse.click(where["x"] + where["width"] / 2, where["y"] + where["height"] / 2)


def box(page, selector: str) -> dict | None:
    return page.evaluate("""(s) => { const e = document.querySelector(s); if (!e) return null;
        const b = e.getBoundingClientRect(); return {x: b.x, y: b.y, width: b.width, height: b.height}; }""",
                         selector)


def colours(page, selector: str) -> tuple[str, str] | None:
    return page.evaluate("""(s) => { const e = document.querySelector(s); if (!e) return null;
        const c = getComputedStyle(e); return [c.color, c.backgroundColor]; }""", selector)


def video_state(page) -> dict | None:
    return page.evaluate("""() => { const v = document.querySelector('#fpk_video video'); if (!v) return null;
        return {src: v.currentSrc || v.src, ready: v.readyState, duration: v.duration, time: v.currentTime,
                paused: v.paused, error: v.error ? v.error.code : null}; }""")


def timed_click(page, selector: str, answered: str, timeout: float = 60) -> float:
    """Seconds from a click to `answered` (a JS expression) becoming true in the page."""
    page.evaluate("() => { const line = document.querySelector('#fpk_status > *'); if (line) line.textContent = ''; }")
    started = time.monotonic()
    page.evaluate("(s) => document.querySelector(s).click()", selector)
    page.wait_for_function(answered, timeout=timeout * 1000, polling=50)
    return time.monotonic() - started


def dump(value) -> str:
    return json.dumps(value, indent=1, default=str)


def frame_count(path: Path) -> int:
    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                           "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def saved_video(page) -> Path:
    match = re.search(r"video: (\S+\.mp4)", page.inner_text("#fpk_progress"))
    assert match, page.inner_text("#fpk_progress")
    return Path(match.group(1))


def video_plays(page) -> dict:
    from tests_sdnext.conftest import wait_until

    first = wait_until(lambda: (v := video_state(page)) and v["ready"] >= 2 and v, 60, message="video loaded")
    time.sleep(1.5)
    later = video_state(page)
    assert later["error"] is None and later["duration"] > 0 and not later["paused"], later
    assert later["time"] != first["time"] or later["time"] > 0, (first, later)
    return later


def check_first_screen(page) -> None:
    """Generate, the start image's drop zone, prompt, duration and the plan line on the first screen; the end
    image in its accordion (issue 14); the result boxes sized; readable help and plan."""
    generate = box(page, "#fpk_generate")
    assert generate["width"] > 0 and generate["y"] >= 0 and generate["y"] + generate["height"] <= 900, generate
    zone = box(page, "#fpk_image")
    assert zone["height"] >= 150 and zone["y"] + 100 <= 900, zone
    for control in ("#fpk_prompt", "#fpk_duration", "#fpk_plan .fpk-plan-line"):
        shown = box(page, control)
        assert shown["height"] > 0 and shown["y"] + shown["height"] <= 900, (control, shown)
    assert box(page, "#fpk_end_image")["height"] == 0  # in the closed "End image, keyframes, strengths" accordion
    assert box(page, "#fpk_video")["height"] >= 150
    assert box(page, "#fpk_preview")["height"] >= 100
    text, background = colours(page, "#fpk_section_help code")
    assert text != background, (text, background)
    header_text, header_background = colours(page, ".fpk-plan-table th")
    assert contrast(header_text, header_background) >= 3, (header_text, header_background)


def luminance(colour: str) -> float:
    channels = [float(v) for v in re.findall(r"[\d.]+", colour)[:3]]
    linear = [(c / 255 / 12.92) if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)
