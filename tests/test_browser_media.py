"""Issue 13's tab controls in a real browser (Debian Chromium): pick a LoRA made here from the LoRA
folder, upscale 2x with Lanczos, interpolate, generate on the tiny model, and check the decoded video.

Reuses the standalone app and browser of tests/test_browser.py (tiny model, fastest settings).
"""

from __future__ import annotations

import re

import pytest

from tests.test_browser import (app_server, browser, open_tab, screenshot, set_number,  # noqa: F401
                                upload_image, wait_for_text)
from tests.test_ui_media import decoded, generated, write_tiny_lora

pytestmark = [pytest.mark.slow]


def open_accordion(page, elem_id: str) -> None:
    page.click(f"#{elem_id} > button, #{elem_id} .label-wrap")


def test_lora_upscale_and_interpolation_from_the_tab(app_server, browser, tmp_path):
    page = open_tab(browser, app_server)
    upload_image(page)
    open_accordion(page, "fpk_media_accordion")
    page.wait_for_selector("#fpk_lora_refresh", state="visible")
    # the LoRA folder gets its file after the page was built: Refresh lists it
    write_tiny_lora(tmp_path / "loras" / "style.safetensors")
    app_server.host.settings["framepack_lora_dir"] = str(tmp_path / "loras")
    page.click("#fpk_lora_refresh")
    page.click("#fpk_loras input")
    page.locator("#fpk_loras ul.options li", has_text="style.safetensors").click(timeout=30_000)
    page.wait_for_function("document.querySelector('#fpk_lora_weights textarea').value === 'style.safetensors: 1'")
    page.keyboard.press("Escape")
    page.fill("#fpk_lora_weights textarea", "style.safetensors: 0.7")
    set_number(page, "fpk_upscale", 2)
    assert page.input_value("#fpk_upscaler input") == "lanczos"
    set_number(page, "fpk_interpolation", 1)
    open_accordion(page, "fpk_video_accordion")
    page.check("#fpk_save_frames input[type=checkbox]")
    planned = int(re.match(r"\s*(\d+) frames", wait_for_text(page, "#fpk_plan", r"^\s*\d+ frames")).group(1))
    screenshot(page, app_server, "media-controls", publish=True)

    before = set(app_server.host.video_dir().glob("*.mp4"))
    page.click("#fpk_generate")
    final = wait_for_text(page, "#fpk_progress", "Done in|Failed|Stopped", timeout=180)
    assert "Done in" in final, final
    assert "completed · seed" in page.inner_text("#fpk_status")
    new = set(app_server.host.video_dir().glob("*.mp4")) - before
    assert len(new) == 1
    video = new.pop()
    job = next(j for j in app_server.queue.list() if j.record.video == str(video))
    count, height, width = generated(job.record.frames)  # raw frames keep the generated size
    assert decoded(video) == (planned, 2 * height, 2 * width) and planned == (count - 1) * 2 + 1
    assert [(lora["path"], lora["weight"]) for lora in job.record.settings["loras"]] == \
        [(str(tmp_path / "loras" / "style.safetensors"), 0.7)]
    assert not page.errors, page.errors
    page.close()
