"""The real SD.Next in ModernUI (its default theme), with --auth: the tab, its sidebar button, the
API's 401, and a generation whose progress the page fetches with SD.Next's credentials."""

from __future__ import annotations

import re
import time

import pytest

from tests_sdnext import pages
from tests_sdnext.conftest import AUTH, SCREENS
from tests_sdnext.pages import extension_problems

pytestmark = pytest.mark.sdnext


@pytest.fixture(scope="module")
def server(site):
    site.update_config(theme_type="Modern")
    with site.server(auth=AUTH) as running:
        yield running
    site.update_config(theme_type="Standard")


def test_api_refuses_requests_without_credentials(server):
    for method, path, body in (("GET", "/framepack/v1/jobs", None), ("GET", "/framepack/v1/codecs", None),
                               ("POST", "/framepack/v1/jobs", {"prompt": "x"}),
                               ("POST", "/framepack/v1/page/stop", {"job": "", "task": ""})):
        assert server.request(method, path, body, auth=False)[0] == 401, path
        assert server.request(method, path, body, auth=("tester", "wrong"))[0] == 401, path
    assert server.request("GET", "/framepack/v1/jobs")[0] == 200
    assert extension_problems(server.log()) == []


@pytest.fixture(scope="module")
def modern_page(server, playwright_instance, tmp_path_factory):
    from tests_sdnext.conftest import browser_context

    context = browser_context(playwright_instance, tmp_path_factory.mktemp("chromium"))
    yield pages.open_page(context, server, auth=AUTH, theme="Modern")
    context.close()


def test_tab_in_modernui(modern_page):
    page, watch = modern_page
    assert pages.modern(page)
    button = page.locator(pages.SIDEBAR_BUTTON)
    page.wait_for_function("(s) => { const b = document.querySelector(s); return b && b.dataset.fpkNamed === '1'; }",
                           arg=pages.SIDEBAR_BUTTON, timeout=120_000)
    assert button.locator("span").text_content().strip() == "FramePack" and button.get_attribute("title")
    assert button.locator(".fpk-sidebar-icon").count() == 1 and button.locator(".icon-video").count() == 0
    pages.open_framepack_tab(page)
    time.sleep(3)
    page.screenshot(path=str(SCREENS / "modern-tab.png"))
    pages.check_first_screen(page)
    assert pages.error_badges(page) == 0
    assert watch.failed_events == [] and watch.script_errors == []


def test_generate_in_modernui_with_auth(server, site, modern_page):
    page, watch = modern_page
    planned = pages.fast_settings(page, duration=2.0, steps=4)
    pages.record_progress(page)
    page.click("#fpk_generate")
    pages.wait_for_status(page, r"completed · seed 7")
    seen = pages.progress_seen(page)
    # drawn by the page from SD.Next's progress API, fetched with the logged-in user's token
    assert any(re.search(r"[1-9]\d*% · ", text) for text in seen["progress"]), seen["progress"][-5:]
    assert seen["preview"]
    video = pages.saved_video(page)
    assert pages.frame_count(video) == planned
    pages.video_plays(page)
    page.screenshot(path=str(SCREENS / "modern-tab-done.png"))
    assert watch.failed_events == [] and watch.script_errors == []
