"""Issues 11 and 15 in the tab, in a real browser (Debian Chromium): Resume a stopped job from the jobs
panel, Continue a video (an upload, and a finished job's Continue video button), a batch upload.

The standalone app as `serve` builds it (its queue keeps jobs in the output folder's job store, which
batches need), with the tiny model and the fast tab values of tests/test_browser.py.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from tests.test_browser import (DEMO_IMAGE, UI_DEFAULTS, browser, open_tab, record_texts,  # noqa: F401
                                running_app, screenshot, set_number, upload_image, wait_for_text,
                                wait_for_text_seen)

pytestmark = [pytest.mark.slow]

ACCORDION = "#fpk_continue_accordion > button, #fpk_continue_accordion .label-wrap"


@pytest.fixture(scope="module")
def app_server(tiny_model_dir, tmp_path_factory):
    with running_app(tiny_model_dir, tmp_path_factory.mktemp("browser-continue"), job_store=True) as app:
        yield app


def frame_count(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def wait_job(queue, predicate, timeout: float = 180.0):
    """The first job `predicate` accepts, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [job for job in queue.list() if predicate(job)]
        if jobs and jobs[0].wait(0.2):
            return jobs[0]
        time.sleep(0.2)
    raise AssertionError("the job did not finish")


def panel_row(page, job_id: str):
    return page.locator(f'#fpk_jobs li[data-fpk-job-id="{job_id}"]')


def test_stop_then_resume_in_the_jobs_panel_gives_the_whole_video(app_server, browser):
    from framepack.jobs.queue import JobQueue
    from framepack.jobs.store import JobStore
    from framepack.ui import logic

    page = open_tab(browser, app_server)
    upload_image(page)
    page.click("#fpk_variant label:has-text('F1')")  # forward: a re-roll from section 2 reuses section 1
    set_number(page, "fpk_duration", 1.6)
    planned = int(re.search(r"(\d+) frames .*4 sections", wait_for_text(page, "#fpk_plan", r"4 sections")).group(1))
    page.click("#fpk_generate")
    wait_for_text(page, "#fpk_progress", r"(?i)section [2-4]/4", timeout=120)  # a checkpoint exists
    page.click("#fpk_stop")
    wait_for_text(page, "#fpk_progress", "Stopped after", timeout=90)
    job = next(job for job in app_server.queue.list() if job.status == "interrupted")
    assert job.record.resumable and job.record.sections_done < 4

    # listed as resumable by a queue opened afresh on the folder (a server restart)
    again = JobQueue(app_server.host, store=JobStore.in_folder(app_server.host.video_dir()), run_here=False)
    try:
        assert f'data-fpk-job-action="resume" data-fpk-job="{job.id}"' in logic.jobs_html(again)
    finally:
        again.shutdown()

    resume = panel_row(page, job.id).locator("[data-fpk-job-action=resume]")
    resume.wait_for(timeout=10_000)
    screenshot(page, app_server, "resume-offered", publish=True)

    # Re-roll… fills the accordion's Job box; Re-roll queues a new job from section 2 with seed 77
    panel_row(page, job.id).locator("[data-fpk-job-action=reroll]").click()
    page.wait_for_function("(id) => { const box = document.querySelector('#fpk_reroll_job input, "
                           "#fpk_reroll_job textarea'); return box && box.value === id; }", arg=job.id)
    set_number(page, "fpk_reroll_section", 2)
    set_number(page, "fpk_reroll_seed", 77)
    page.click("#fpk_reroll")
    wait_for_text(page, "#fpk_continue_message", rf"queued: job {job.id} again from section 2 · seed 77 · "
                                                 r"reused sections: \[1\]")

    record_texts(page, "#fpk_status")  # the follower may replace the answer within moments
    resume.click()
    wait_for_text_seen(page, "#fpk_status", f"Job {job.id} resumed after")
    done = wait_job(app_server.queue, lambda j: j.id == job.id and j.record.resumes == 1)
    assert done.status == "completed", done.record.error
    assert done.record.frame_count == planned == frame_count(done.record.video)
    rerolled = wait_job(app_server.queue, lambda j: j.record.kind == "reroll" and j.record.source["job"] == job.id)
    assert rerolled.status == "completed" and rerolled.record.seed == 77, rerolled.record.error
    assert rerolled.record.frame_count == planned == frame_count(rerolled.record.video)
    wait_for_text(page, f'#fpk_jobs li[data-fpk-job-id="{job.id}"]', "completed", timeout=30)
    assert panel_row(page, job.id).locator("[data-fpk-job-action=resume]").count() == 0
    assert not page.errors, page.errors
    page.close()


def test_continue_a_video_makes_it_longer(app_server, browser, tmp_path):
    from framepack.jobs.extend import new_frames
    from framepack.request.model import build_request

    page = open_tab(browser, app_server)
    upload_image(page)
    set_number(page, "fpk_duration", 0.4)  # the browser keeps the last test's settings
    wait_for_text(page, "#fpk_plan", r"13 frames .*1 section")
    page.click("#fpk_generate")  # one section, 13 frames
    wait_for_text(page, "#fpk_progress", "Done in", timeout=120)
    source = next(job for job in reversed(app_server.queue.list())
                  if job.status == "completed" and job.record.kind == "generate")
    clip = tmp_path / "my clip.mp4"
    shutil.copy(source.record.video, clip)
    before = frame_count(clip)

    set_number(page, "fpk_duration", 0.8)
    page.fill("#fpk_prompt textarea", "the boat sails on")
    page.click(ACCORDION)
    page.set_input_files("#fpk_continue_video input[type=file]", str(clip))
    page.wait_for_timeout(500)
    page.click("#fpk_continue")
    line = wait_for_text(page, "#fpk_continue_message", r"queued|Continue:")
    assert "continues my clip.mp4" in line, line
    extended = wait_job(app_server.queue, lambda j: j.record.kind == "extend" and "upload" in j.record.source)
    assert extended.status == "completed", extended.record.error
    asked = {**UI_DEFAULTS, "duration": 0.8, "variant": "f1", "blank_start": "black"}
    added = new_frames(build_request(**asked).plan())
    assert frame_count(extended.record.video) == before + added > before
    assert extended.record.settings["prompt"] == "the boat sails on"

    # a finished job's Continue video button in the history
    button = panel_row(page, source.id).locator("[data-fpk-job-action=extend]")
    record_texts(page, "#fpk_status")
    button.click()
    wait_for_text_seen(page, "#fpk_status", f"continues job {source.id}")
    from_job = wait_job(app_server.queue,
                        lambda j: j.record.kind == "extend" and j.record.source.get("job") == source.id)
    assert from_job.status == "completed", from_job.record.error
    assert frame_count(from_job.record.video) == before + added

    screenshot(page, app_server, "continue-video", publish=True)
    assert not page.errors, page.errors
    page.close()  # the file box now shows the clip instead of its file input: a fresh page
    page = open_tab(browser, app_server)
    page.click(ACCORDION)
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"not a video at all")
    page.set_input_files("#fpk_continue_video input[type=file]", str(bad))
    page.wait_for_timeout(500)
    page.click("#fpk_continue")
    wait_for_text(page, "#fpk_continue_message", r"Continue: Video to continue: .*notes\.mp4")
    assert not page.errors, page.errors
    page.close()


def test_a_batch_of_two_images_makes_two_videos_and_a_batch_cancels_as_one(app_server, browser, tmp_path):
    for name in ("harbour.png", "meadow.png"):
        shutil.copy(DEMO_IMAGE, tmp_path / name)
    (tmp_path / "harbour.txt").write_text("boats rock in the harbour\n", encoding="utf-8")
    page = open_tab(browser, app_server)
    set_number(page, "fpk_duration", 0.4)  # the browser keeps the last test's settings: one section, 13 frames
    wait_for_text(page, "#fpk_plan", r"13 frames .*1 section")
    page.fill("#fpk_prompt textarea", "grass waves in the wind")
    page.click(ACCORDION)
    page.set_input_files("#fpk_batch_files input[type=file]",
                         [str(tmp_path / name) for name in ("harbour.png", "harbour.txt", "meadow.png")])
    page.wait_for_timeout(500)
    page.fill("#fpk_batch_name input", "two places")
    page.click("#fpk_batch")
    line = wait_for_text(page, "#fpk_continue_message", r"queued|Batch:")
    assert "queued: 2 job(s)" in line, line
    batch = next(job.batch for job in reversed(app_server.queue.list()) if job.batch)
    jobs = [job for job in app_server.queue.list() if job.batch == batch]
    wait_for_text(page, "#fpk_jobs", "harbour.png")
    for job in jobs:
        job.wait(180)
    assert [job.status for job in jobs] == ["completed", "completed"], [job.record.error for job in jobs]
    assert {job.record.source["item"]: job.record.settings["prompt"] for job in jobs} == {
        "harbour.png": "boats rock in the harbour", "meadow.png": "grass waves in the wind"}
    videos = [Path(job.record.video) for job in jobs]
    assert len(set(videos)) == 2 and all(video.is_file() and frame_count(video) == 13 for video in videos)

    # a longer batch, cancelled as one from the jobs panel (a fresh page: the file box shows the last files)
    assert not page.errors, page.errors
    page.close()
    page = open_tab(browser, app_server)
    page.click(ACCORDION)
    set_number(page, "fpk_duration", 4)
    page.set_input_files("#fpk_batch_files input[type=file]",
                         [str(tmp_path / name) for name in ("harbour.png", "meadow.png")])
    page.wait_for_timeout(500)
    page.click("#fpk_batch")
    wait_for_text(page, "#fpk_continue_message", r"Batch \w+ queued")
    cancel = page.locator("#fpk_jobs [data-fpk-job-action=cancel-batch]")
    cancel.wait_for(timeout=10_000)
    second = cancel.get_attribute("data-fpk-job")
    assert second != batch
    screenshot(page, app_server, "batch", publish=True)
    cancel.click()
    wait_for_text(page, "#fpk_status", f"Batch {second} cancelled")
    cancelled = [job for job in app_server.queue.list() if job.batch == second]
    for job in cancelled:
        job.wait(120)
    assert len(cancelled) == 2 and all(job.status in ("cancelled", "interrupted") for job in cancelled)
    assert any(job.status == "cancelled" for job in cancelled)

    page.close()
    page = open_tab(browser, app_server)
    page.click(ACCORDION)
    page.set_input_files("#fpk_batch_files input[type=file]", str(Path(__file__)))
    page.wait_for_timeout(500)
    page.click("#fpk_batch")
    wait_for_text(page, "#fpk_continue_message", r"Batch: Batch files: test_browser_continue\.py: not an image")
    assert not page.errors, page.errors
    page.close()


def test_the_accordion_fits_a_phone(app_server, browser):
    page = open_tab(browser, app_server)
    page.set_viewport_size({"width": 390, "height": 844})
    page.click(ACCORDION)
    page.wait_for_selector("#fpk_batch", state="visible")
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no horizontal overflow
    for selector in ("#fpk_continue", "#fpk_reroll", "#fpk_batch"):
        right = page.evaluate(f"document.querySelector({selector!r}).getBoundingClientRect().right")
        assert right <= 390, (selector, right)
    screenshot(page, app_server, "continue-accordion-390", publish=True)
    assert not page.errors, page.errors
    page.close()
