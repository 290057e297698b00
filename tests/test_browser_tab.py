"""Issue 14's tab items in a real browser (Debian Chromium), at 1440x900 and at phone width (390 px).

Reuses the standalone app and browser of tests/test_browser.py (tiny model, fastest settings).
"""

from __future__ import annotations

import time

import pytest

from tests.test_browser import (DEMO_IMAGE, app_server, browser, open_tab, screenshot, set_number, upload_image,  # noqa: F401
                                wait_for_text)

pytestmark = [pytest.mark.slow]

BOX = """s => { const e = document.querySelector(s); if (!e || !e.offsetParent) return null;
                const b = e.getBoundingClientRect(); return {top: b.top, bottom: b.bottom, left: b.left, right: b.right}; }"""


def box(page, selector):
    return page.evaluate(f"({BOX})({selector!r})")


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_first_screen_and_phone_width(app_server, browser, width, height):
    page = open_tab(browser, app_server)
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no horizontal overflow
    for selector in ("#fpk_generate", "#fpk_stop", "#fpk_pause"):
        shown = box(page, selector)
        assert shown and shown["right"] <= width and shown["bottom"] <= 120, (selector, shown)  # the bar on top
    if width >= 1440:  # everything needed for a first video, without scrolling
        for selector in ("#fpk_image", "#fpk_prompt", "#fpk_duration", "#fpk_resolution", "#fpk_plan .fpk-plan-line"):
            shown = box(page, selector)
            assert shown and shown["bottom"] <= height, (selector, shown)
    else:  # stacked: the outputs below the inputs
        assert box(page, "#fpk_outputs")["top"] > box(page, "#fpk_plan")["bottom"]
    assert box(page, "#fpk_end_image") is None and box(page, "#fpk_start_strength") is None  # in the accordion
    assert box(page, "#fpk_blank_start") is not None and box(page, "#fpk_negative_prompt") is None
    upload_image(page)
    page.wait_for_function("!document.querySelector('#fpk_blank_start') || "
                           "!document.querySelector('#fpk_blank_start').offsetParent")
    page.click("#fpk_advanced_accordion > button, #fpk_advanced_accordion .label-wrap")
    set_number(page, "fpk_cfg", 2)
    page.wait_for_selector("#fpk_negative_prompt textarea", state="visible")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    screenshot(page, app_server, f"first-screen-{width}", publish=True)
    assert not page.errors, page.errors
    page.close()


def test_plan_shows_every_section_and_scrolls_past_twenty(app_server, browser):
    page = open_tab(browser, app_server)
    set_number(page, "fpk_duration", 12)  # 12 frames a section at 30 fps: 30 sections
    wait_for_text(page, "#fpk_plan", r"30 sections")
    assert page.locator("#fpk_plan tbody tr").count() == 30  # every section, scrolling inside
    assert page.evaluate("(e => e.scrollHeight > e.clientHeight)(document.querySelector('#fpk_plan .fpk-plan-scroll'))")
    set_number(page, "fpk_duration", 2)
    wait_for_text(page, "#fpk_plan", r"5 sections")
    assert not page.evaluate("(e => e.scrollHeight > e.clientHeight)(document.querySelector('#fpk_plan .fpk-plan-scroll'))")
    assert not page.errors, page.errors
    page.close()


@pytest.fixture
def stop_jobs_after(app_server):
    """However the test ends, no job it queued keeps the shared server busy for the next test."""
    yield
    for job in app_server.queue.list():
        if not job.status.finished:
            app_server.queue.cancel(job.id)
    for job in app_server.queue.list():
        job.wait(120)


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_queue_reload_history_and_settings(app_server, browser, stop_jobs_after, width, height):
    page = open_tab(browser, app_server)
    page.set_viewport_size({"width": width, "height": height})
    upload_image(page)
    page.fill("#fpk_prompt textarea", "a boat on the lake")
    set_number(page, "fpk_duration", 4)  # 10 sections: long enough to reload and queue behind it
    wait_for_text(page, "#fpk_plan", "10 sections")
    page.click("#fpk_generate")
    wait_for_text(page, "#fpk_status", "submitted")
    page.click("#fpk_generate")  # a second Generate while the first runs: queued, its place shown
    wait_for_text(page, "#fpk_status", "Waiting, 2nd in line")
    wait_for_text(page, "#fpk_progress", r"Sampling|Decoding|encoding", timeout=60)
    page.reload()  # the jobs stay visible and stoppable after a reload
    page.wait_for_selector("#fpk_generate")
    wait_for_text(page, "#fpk_jobs", "Waiting, 2nd in line")
    # the last settings came back from the browser's storage
    page.wait_for_function("document.querySelector('#fpk_prompt textarea').value === 'a boat on the lake'")
    assert page.locator("#fpk_jobs .fpk-jobs-active li").count() == 2
    screenshot(page, app_server, f"jobs-after-reload-{width}", publish=width >= 1440)
    page.locator("#fpk_jobs .fpk-jobs-active [data-fpk-job-action=stop]").last.click()  # the queued one
    wait_for_text(page, "#fpk_jobs", "cancelled")
    page.locator("#fpk_jobs .fpk-jobs-active [data-fpk-job-action=stop]").first.click()
    wait_for_text(page, "#fpk_jobs", "No job running", timeout=60)
    history = page.inner_text("#fpk_jobs .fpk-jobs-history")
    assert history.index("interrupted") < history.index("cancelled")  # newest first
    assert "seed" in history and "240 px" in history
    page.fill("#fpk_prompt textarea", "something else")
    page.locator("#fpk_jobs .fpk-jobs-history [data-fpk-job-action=load]").first.click()
    wait_for_text(page, "#fpk_settings_message", "loaded")
    assert page.input_value("#fpk_prompt textarea") == "a boat on the lake"
    assert not page.errors, page.errors
    page.close()


def test_presets_and_load_from_video(app_server, browser, tmp_path):
    page = open_tab(browser, app_server)
    page.fill("#fpk_prompt textarea", "preset prompt")
    set_number(page, "fpk_duration", 0.8)
    page.click("#fpk_presets_accordion > button, #fpk_presets_accordion .label-wrap")
    page.fill("#fpk_preset_name input", "../My fast/preset")
    page.click("#fpk_preset_save")
    wait_for_text(page, "#fpk_settings_message", "saved")
    saved = list((app_server.host.video_dir() / "settings").glob("*.json"))
    assert [p.name for p in saved] == ["_My fast_preset.json"]  # sanitised, inside the settings folder
    page.fill("#fpk_prompt textarea", "changed")
    page.click("#fpk_preset_load")
    wait_for_text(page, "#fpk_settings_message", "loaded")
    assert page.input_value("#fpk_prompt textarea") == "preset prompt"
    videos = sorted(app_server.host.video_dir().glob("*.mp4"), key=lambda p: p.stat().st_mtime)
    if videos:  # a video made by an earlier test: its embedded settings fill the controls
        page.fill("#fpk_prompt textarea", "changed again")
        page.set_input_files("#fpk_settings_file input[type=file]", str(videos[-1]))
        wait_for_text(page, "#fpk_settings_message", "Settings loaded from")
        assert page.input_value("#fpk_prompt textarea") != "changed again"
        assert not page.errors, page.errors
        page.close()  # the file box now shows that video instead of its file input: a fresh page
        page = open_tab(browser, app_server)
    bad = tmp_path / "not-ours.mp4"
    bad.write_bytes(b"not a video")
    page.set_input_files("#fpk_settings_file input[type=file]", str(bad))
    wait_for_text(page, "#fpk_settings_message", "Load settings")
    assert not page.errors, page.errors
    page.close()


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_keyframes_refused_outside_the_video_added_and_removed_one_at_a_time(app_server, browser, width, height,
                                                                             tmp_path):
    page = open_tab(browser, app_server)
    page.set_viewport_size({"width": width, "height": height})
    set_number(page, "fpk_duration", 2)
    wait_for_text(page, "#fpk_plan", r"5 sections")
    page.click("#fpk_guides_accordion > button, #fpk_guides_accordion .label-wrap")

    def add(when: str) -> None:
        if not page.locator("#fpk_keyframe_image img").count():  # a refused keyframe keeps its image
            image = tmp_path / f"keyframe-{when}.png"  # a new file each time: the same one fires no change
            image.write_bytes(DEMO_IMAGE.read_bytes())
            page.set_input_files("#fpk_keyframe_image input[type=file]", str(image))
            page.wait_for_selector("#fpk_keyframe_image img")
        page.fill("#fpk_keyframe_when input", when)
        page.click("#fpk_keyframe_add")

    add("9")  # section 9 of a 5-section video: refused at once, nothing added
    wait_for_text(page, "#fpk_keyframe_message", r"section 9")
    assert page.locator("#fpk_keyframes .thumbnail-item, #fpk_keyframes .gallery-item").count() == 0
    add("2")  # the error goes when a keyframe is accepted, and the image box empties for the next one
    page.wait_for_function("!document.querySelector('#fpk_keyframe_message').innerText.trim()")
    page.wait_for_function("document.querySelectorAll('#fpk_keyframes .thumbnail-item').length === 1")
    page.wait_for_selector("#fpk_keyframe_image img", state="detached")
    add("4")
    page.wait_for_function("document.querySelectorAll('#fpk_keyframes .thumbnail-item').length === 2")
    assert "keyframe" in page.inner_text("#fpk_plan").lower()
    page.click("#fpk_keyframe_pick input")
    page.locator("#fpk_keyframe_pick li, ul.options li", has_text="#1 at 2").first.click()
    page.click("#fpk_keyframe_remove")  # only the chosen one goes
    page.wait_for_function("document.querySelectorAll('#fpk_keyframes .thumbnail-item').length === 1")
    assert "#1 at 4" in page.inner_text("#fpk_keyframes")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert not page.errors, page.errors
    page.close()
