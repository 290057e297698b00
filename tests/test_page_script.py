"""javascript/framepack.js in a real browser, on a bare page shaped like the tab inside SD.Next.

No server: the page's `fetch` is replaced by one the test answers by hand, so the order of a
control's answer and the job's final line is chosen exactly (inside SD.Next the final line comes
from the Generate event, the answer from the page routes of framepack/ui/routes.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCRIPT = Path(__file__).resolve().parents[1] / "javascript" / "framepack.js"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (`make system-deps`)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")

# Gradio 3.43 gives an HTML output's elem_id to its `.prose` div and sets the value as its innerHTML
TAB = """<div id="fpk_root" class="fpk-root fpk-host-sdnext">
  <button id="fpk_generate">Generate</button><button id="fpk_stop">Stop</button>
  <button id="fpk_skip">Skip section</button><button id="fpk_pause">Pause</button>
  <div id="fpk_status" class="prose">{status}</div>
  <div id="fpk_progress" class="prose"><div class="fpk-progress"></div></div>
  <div id="fpk_video"></div>
  <button id="fpk_page_news" onclick="window.fpkNews = (window.fpkNews || 0) + 1">page news</button>
</div>"""
FINAL = '<div data-fpk-final="{task}"><div class="fpk-info">Job 0123 completed · seed 7</div></div>'
HELD_FETCH = """() => {
  window.fpkSent = [];
  window.fetch = (url, options) => new Promise((resolve) => {
    window.fpkSent.push({url: String(url), body: options && options.body});
    window.fpkAnswer = (data) => resolve(new Response(JSON.stringify(data),
      {status: 200, headers: {'Content-Type': 'application/json'}}));
  });
}"""


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def tab_page(chromium, status: str, last_task: str):
    page = chromium.new_page()
    page.set_content(TAB.format(status=status))
    page.add_script_tag(content=SCRIPT.read_text(encoding="utf-8"))
    page.wait_for_function("() => window.fpkControlsBound === true")
    page.evaluate(HELD_FETCH)
    page.evaluate("(task) => { window.fpkLastTask = task; }", last_task)
    return page


def click_and_answer(page, selector: str, answer: dict, before_answer: str | None = None) -> str:
    page.click(selector)
    page.wait_for_function("() => window.fpkSent.length === 1 && !!window.fpkAnswer")
    if before_answer is not None:
        page.evaluate("(html) => { document.querySelector('#fpk_status').innerHTML = html; }", before_answer)
    page.evaluate("(data) => window.fpkAnswer(data)", answer)
    page.wait_for_timeout(300)
    return page.inner_text("#fpk_status")


def test_pause_after_a_finished_job_shows_its_answer(chromium):
    """The last job's final line is in the status line; Pause then says there is nothing to pause
    (it said nothing at all: every answer was taken for one that lost a race with the job's end)."""
    page = tab_page(chromium, FINAL.format(task="task(old)"), "task(old)")
    shown = click_and_answer(page, "#fpk_pause", {"status": '<div class="fpk-info">Nothing to pause</div>',
                                                  "label": "Pause"})
    assert shown == "Nothing to pause"
    sent = page.evaluate("() => window.fpkSent[0]")
    assert sent["url"].endswith("framepack/v1/page/pause") and '"task":"task(old)"' in sent["body"]


def test_stop_after_a_finished_job_shows_its_answer(chromium):
    page = tab_page(chromium, FINAL.format(task="task(old)"), "task(old)")
    assert click_and_answer(page, "#fpk_stop", {"status": '<div class="fpk-info">Nothing to stop</div>'}) \
        == "Nothing to stop"


def test_an_answer_that_lost_the_race_with_the_jobs_end_keeps_the_final_line(chromium):
    """Pause clicked during the run, the job's final line arrives before Pause's answer: it stays."""
    page = tab_page(chromium, '<div class="fpk-info">Job 0123 submitted · seed 7</div>', "task(run)")
    shown = click_and_answer(page, "#fpk_pause", {"status": '<div class="fpk-info">Job 0123 paused between steps</div>',
                                                  "label": "Resume"},
                             before_answer=FINAL.format(task="task(run)"))
    assert shown == "Job 0123 completed · seed 7"


def test_a_re_rendered_stop_button_still_posts_and_generate_names_the_new_task_at_the_click(chromium):
    """SD.Next's page re-renders our buttons now and then: the listener is the app's, not the node's.
    Generate's click makes the new task id at once, so a Stop right after it names the new job."""
    page = tab_page(chromium, '<div class="fpk-info">Job 0123 submitted · seed 7</div>', "task(previous)")
    page.evaluate("""() => { const old = document.querySelector('#fpk_stop');
                             const fresh = old.cloneNode(true); old.replaceWith(fresh); }""")
    page.click("#fpk_generate")  # Gradio's fpkSubmit has not run yet
    new_task = page.evaluate("() => window.fpkLastTask")
    assert new_task != "task(previous)" and new_task == page.evaluate("() => window.fpkPendingTask")
    shown = click_and_answer(page, "#fpk_stop", {"status": '<div class="fpk-info">Stopping: the job this page '
                                                           'started is cancelled as soon as it is submitted</div>'})
    assert shown.startswith("Stopping")
    assert f'"task":"{new_task}"' in page.evaluate("() => window.fpkSent[0].body")
    assert page.evaluate("() => window.fpkSubmit('', 'page', 1)[0]") == new_task  # Gradio's call takes that id


def test_the_follower_asks_for_news_when_a_waiting_job_starts_and_when_it_ends(chromium):
    """Inside SD.Next no Gradio event is held for the job: SD.Next's progress API says queued, active,
    completed, and the page clicks the hidden news button at the start of the run and at the end."""
    page = tab_page(chromium, '<div class="fpk-info">Job 0123 queued · Waiting, 1st in line</div>', "")
    page.evaluate("""() => {
      const answers = [{queued: true, active: false}, {queued: false, active: true, progress: 0.5, textinfo: 'x'},
                       {queued: false, active: true, progress: 0.7}, {queued: false, active: false, completed: true}];
      window.fpkProgressAsked = 0;
      window.fetch = (url) => Promise.resolve(new Response(JSON.stringify(answers[Math.min(window.fpkProgressAsked++, 3)]),
        {status: 200, headers: {'Content-Type': 'application/json'}}));
      fpkFollow('task(run)');
    }""")
    page.wait_for_function("() => window.fpkProgressAsked >= 2", timeout=10_000)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.fpkNews") == 1  # the run started after waiting: its line is news
    assert "50% · x" in page.inner_text("#fpk_progress")
    page.wait_for_function("() => window.fpkFollowing === null", timeout=10_000)
    assert page.evaluate("() => [window.fpkNews, window.fpkProgressAsked]") == [2, 4]  # and its end



def test_the_end_is_asked_for_even_when_stops_answer_brought_the_final_line(chromium):
    """Stop's answer can be the job's final line (it waits briefly for the end): the video still comes."""
    page = tab_page(chromium, '<div class="fpk-info">Job 0123 submitted · seed 7</div>', "")
    page.evaluate("""() => {
      window.fetch = () => Promise.resolve(new Response(JSON.stringify({queued: false, active: true, progress: 0.2}),
        {status: 200, headers: {'Content-Type': 'application/json'}}));
      fpkFollow('task(run)');
    }""")
    page.evaluate("(html) => { document.querySelector('#fpk_status').innerHTML = html; }",
                  FINAL.format(task="task(run)").replace("completed", "interrupted"))
    page.wait_for_function("() => window.fpkFollowing === null", timeout=10_000)
    assert page.evaluate("() => window.fpkNews") == 1


def test_a_refused_generate_asks_for_no_news(chromium):
    refused = '<div data-fpk-final="task(bad)"><div class="fpk-error">Resolution: must be a multiple of 16</div></div>'
    page = tab_page(chromium, refused, "")
    page.evaluate("() => fpkFollow('task(bad)')")
    page.wait_for_function("() => window.fpkFollowing === null", timeout=10_000)
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.fpkNews || 0") == 0
