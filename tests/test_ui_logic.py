"""The tab's rules without a browser: plan box, validation messages, generation stream, controls."""

from __future__ import annotations

import html
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from framepack.host.standalone import StandaloneHost
from framepack.jobs.queue import JobQueue
from framepack.jobs.record import JobRecord
from framepack.request.events import Status
from framepack.request.model import DEFAULT_SYSTEM_PROMPT
from framepack.ui import logic

FAST = {"resolution": 32, "steps": 2, "latent_window_size": 3, "duration": 0.4, "fps": 30, "teacache": False,
        "variant": "f1"}


def image(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def values(host=None, **changes) -> dict:
    data = logic.default_values(host) if host is not None else dict(logic.BASE_DEFAULTS)
    data.update(changes)
    return data


@pytest.fixture(scope="module")
def host(tiny_model_dir, tmp_path_factory):
    return StandaloneHost(output_dir=tmp_path_factory.mktemp("ui"), model=str(tiny_model_dir))


@pytest.fixture(scope="module")
def job_queue(host):
    queue = JobQueue(host)
    yield queue
    queue.shutdown()


# ----------------------------------------------------------------------------- plan box

def plan_args(**changes):
    base = dict(duration=2.0, fps=30, interpolation=0, latent_window_size=9, variant="original", prompt="a boat",
                section_prompts="", keyframes=[])
    base.update(changes)
    return [base[name] for name in logic.PLAN_NAMES]


def test_plan_line_and_table_follow_the_settings():
    view = logic.plan_view(*plan_args())
    assert view.error is None
    assert view.summary.startswith("73 frames (2.43 s at 30 fps), 2 sections, all 73 generated")
    assert "(asked 2.00 s)" in view.summary and "sampled end first" in view.summary
    assert [row["order"] for row in view.rows] == [2, 1]  # the original model samples the end first
    assert [row["time"] for row in view.rows] == ["0.00-1.23 s", "1.23-2.43 s"]

    longer = logic.plan_view(*plan_args(duration=5.0))
    assert longer.summary.startswith("145 frames (4.83 s at 30 fps), 4 sections")
    forward = logic.plan_view(*plan_args(duration=5.0, variant="f1"))
    assert [row["order"] for row in forward.rows] == [1, 2, 3, 4] and "end first" not in forward.summary
    window = logic.plan_view(*plan_args(latent_window_size=3, duration=1.2))
    assert window.summary.startswith("37 frames (1.23 s at 30 fps), 3 sections")
    interpolated = logic.plan_view(*plan_args(interpolation=1))
    assert "generated + 1 interpolated per gap" in interpolated.summary


def test_plan_shows_which_prompt_each_section_gets():
    html = logic.plan_html(*plan_args(duration=5.0, section_prompts="1: waves rise\n3s-4.5s: the sun sets"))
    view = logic.plan_view(*plan_args(duration=5.0, section_prompts="1: waves rise\n3s-4.5s: the sun sets"))
    assert [row["prompt"] for row in view.rows] == [
        "a boat waves rise", "a boat", "a boat the sun sets", "a boat the sun sets"]
    assert html.count("<tr>") == 5  # header + 4 sections
    assert "a boat <b>waves rise</b>" in html and "fpk-plan-error" not in html


def test_plan_reports_schedule_errors_in_red():
    missing = logic.plan_html(*plan_args(section_prompts="5: jumps"))
    assert "fpk-plan-error" in missing
    assert "section prompt line 1: section 5 does not exist; the video has 2 sections (1-2)" in missing
    reversed_range = logic.plan_view(*plan_args(section_prompts="\n2-1: falls"))
    assert reversed_range.error == "section prompt line 2: section range 2-1 is reversed; write 1-2"
    late = logic.plan_view(*plan_args(section_prompts="9s: later"))
    assert "past the end of the 2.43s video" in late.error
    keyframe = logic.plan_view(*plan_args(keyframes=[{"image": image(), "when": "7"}]))
    assert "keyframe 1: section 7 does not exist" in keyframe.error
    assert logic.plan_view(*plan_args(duration=None)).error == "duration must be a number, not None"


def test_plan_escapes_prompt_html():
    html = logic.plan_html(*plan_args(prompt="<script>alert(1)</script>"))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_mode_line():
    assert "Text-to-video from a noise start frame" in logic.mode_html(None, None, "noise", "original")
    assert "Image-to-video" in logic.mode_html(image(), None, "black", "f1")
    assert "FLF2V" in logic.mode_html(image(), image(1), "black", "original", [{"when": "2"}]) \
        and "1 keyframe." in logic.mode_html(image(), image(1), "black", "original", [{"when": "2"}])
    assert "fpk-error" in logic.mode_html(image(), image(1), "black", "f1")


# ----------------------------------------------------------------------------- defaults and validation

def test_defaults_come_from_the_host_and_ui_defaults(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logic.log, "propagate", True)  # the SD.Next host bridge may have turned it off
    host = StandaloneHost(output_dir=tmp_path, model="unused", settings={
        "framepack_codec": "mpeg4", "framepack_variant": "f1",
        "ui_defaults": {"steps": 2, "resolution": 240, "no_such_control": 1}})
    defaults = logic.default_values(host)
    assert defaults["codec"] == "mpeg4" and defaults["variant"] == "f1"  # host settings
    assert defaults["steps"] == 2 and defaults["resolution"] == 240  # ui_defaults
    assert defaults["system_prompt"] == DEFAULT_SYSTEM_PROMPT and defaults["seed"] == -1
    assert "no_such_control" not in defaults and "no_such_control" in caplog.text
    assert set(defaults) == set(logic.VALUE_NAMES)


def test_request_fields_map_the_controls():
    fields = logic.request_fields(values(image=None, blank_start="white", shift=0, seed=None, steps=4.0))
    assert fields["image"] is None and fields["blank_start"] == "white"  # empty image = text-to-video
    assert fields["shift"] is None and fields["seed"] == -1 and fields["steps"] == 4
    fields = logic.request_fields(values(image=image(), shift=3.5, seed=12,
                                         keyframes=[{"image": image(1), "when": "2"}]))
    assert fields["blank_start"] is None and fields["shift"] == 3.5 and fields["seed"] == 12
    assert fields["keyframes"][0]["when"] == "2"


def test_validation_messages_use_the_tab_labels(host):
    def message(**changes):
        with pytest.raises(logic.InputError) as error:
            logic.validate(values(host, **{**FAST, "image": image(), **changes}), host)
        return str(error.value)

    assert message(resolution=250) == "Resolution: resolution must be a multiple of 16 (got 250); try 256"
    assert message(end_image=image(1), variant="f1").startswith("End image: an end image needs the original")
    assert message(section_prompts="1-: runs") == (
        "Section prompts: section prompt line 1: '1-' is not a section or time; write a section (3), "
        "a section range (2-4), a time (1.5s) or a time range (1s-2.5s)")
    assert message(keyframes=[{"image": image(2), "when": "9"}]).startswith(
        "Keyframes: keyframe 1: section 9 does not exist")
    assert message(latent_window_size=40) == "Latent window: Input should be less than or equal to 33"
    assert message(codec="no-such-codec").startswith("Codec: ")
    assert "nothing to save" in message(save_video=False)
    both = message(steps=0, crf=99)
    assert both == ("Steps: Input should be greater than or equal to 1; "
                    "Quality (CRF): Input should be less than or equal to 63")
    request, options = logic.validate(values(host, **{**FAST, "image": None, "seed": 7}), host)
    assert request.blank_start == "black" and request.seed == 7 and options.keep_incomplete is True


def test_labels_come_from_the_error_field_not_its_message():
    from framepack.errors import InputError

    assert logic.labelled(InputError("latent_window_size: too big", ("latent_window_size",))) == \
        "Latent window: latent_window_size: too big"
    assert logic.labelled(InputError("bad", ("output", "codec_options"))) == "Codec options: bad"
    assert logic.labelled(InputError("bad", ("keyframes", 0, "when"))) == "Keyframes: bad"
    assert logic.labelled(InputError("nothing to save", ("output",))) == "nothing to save"
    assert logic.labelled(InputError("resolution: looks like a field", None)) == "resolution: looks like a field"


# ----------------------------------------------------------------------------- keyframes

def test_keyframes_are_checked_when_added():
    items, error = logic.add_keyframe([], None, "2")
    assert items == [] and error == "Keyframes: choose an image first"
    items, error = logic.add_keyframe([], image(), "")
    assert "write WHEN" in error
    items, error = logic.add_keyframe([], image(), "2-x")
    assert error.startswith("keyframe 1: '2-x' is not a section or time")
    items, error = logic.add_keyframe([], image(), "2:")
    items, error = logic.add_keyframe(items, image(1), "1.5s")
    assert error is None and [item["when"] for item in items] == ["2", "1.5s"]
    assert [caption for _, caption in logic.keyframe_gallery(items)] == ["#1 at 2", "#2 at 1.5s"]


# ----------------------------------------------------------------------------- generation

def run_stream(host, job_queue, **changes):
    updates = list(logic.generate_stream(host, job_queue, values(host, **{**FAST, **changes}), poll=0.05))
    return updates, updates[-1]


def test_generate_streams_progress_and_ends_with_the_video(host, job_queue):
    updates, last = run_stream(host, job_queue, image=image(), prompt="rain", seed=5)
    first = updates[0]
    assert first.job_id and first.seed == 5 and "submitted · seed 5" in first.status
    assert first.video is None and first.preview is None  # the previous result is cleared
    assert all("fpk-progress" in u.progress for u in updates[:-1])  # every refresh carries the progress box
    assert last.finished and last.job_id == ""
    assert last.video and last.video.endswith(".mp4") and Path(last.video).parent == host.video_dir()
    assert "completed · seed 5" in last.status
    assert "Done in" in last.progress and "13 frames" in last.progress and "Timings: " in last.progress
    assert "sample" in last.progress and "vae_decode" in last.progress and "RAM" in last.progress
    assert isinstance(last.preview, np.ndarray) and last.preview.dtype == np.uint8
    assert 'data-fpk-final=""' in last.status  # tells the page's script the job is over
    job = job_queue.get(first.job_id)
    assert job.status == "completed" and job.record.video == last.video


def test_preview_html_is_an_inline_jpeg_or_a_placeholder():
    import base64
    import io

    from PIL import Image

    assert "fpk-live-empty" in logic.preview_html(None) and "hidden" in logic.preview_html(None)
    shown = logic.preview_html(image(size=24))
    data = shown.split('src="data:image/jpeg;base64,')[1].split('"')[0]
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (24, 24)


def test_random_seed_is_reported_back(host, job_queue):
    updates, last = run_stream(host, job_queue, image=image(), seed=-1, save_video=False, save_frames=True)
    seed = updates[0].seed
    assert isinstance(seed, int) and seed >= 0 and f"seed {seed}" in last.progress
    assert last.video is None and "raw frames: " in last.progress  # no video asked for, raw frames saved


def test_bad_input_is_reported_and_nothing_is_queued(host):
    queue = JobQueue(host)
    updates = list(logic.generate_stream(host, queue, values(host, **FAST, image=image(), section_prompts="9: x")))
    assert len(updates) == 1 and updates[0].finished
    assert "fpk-error" in updates[0].status and "section 9 does not exist" in updates[0].status
    assert updates[0].video is logic.KEEP and queue.list() == []
    queue.shutdown()


def test_stop_keeps_a_partial_video(host, job_queue):
    many = values(host, **{**FAST, "image": image(), "duration": 20.0})  # 50 sections: stopped long before the end
    stream = logic.generate_stream(host, job_queue, many, poll=0.05)
    job_id = next(stream).job_id
    job = job_queue.get(job_id)
    stopped = None
    for update in stream:
        if stopped is None and job.record.sections_done >= 1:
            stopped = logic.stop_job(job_queue, job_id)
        last = update
    # Stop waits a moment for the job to end: its line is then the final one, the same as the stream's
    assert f"Job {job_id} interrupted" in last.status
    assert f"Job {job_id} interrupted" in stopped or stopped == logic.stopping_line(job)  # a busy machine: "Stopping"
    assert job.status == "interrupted" and job.record.sections_done < job.record.sections
    assert "Stopped after" in last.progress and "partial outputs kept" in last.progress
    assert last.video and Path(last.video).exists()
    assert logic.stop_job(job_queue, job_id) == logic.info_html("Nothing to stop")


def test_the_stream_says_stopping_once_then_ends_with_stopped(host, job_queue):
    many = values(host, **{**FAST, "image": image(), "duration": 20.0})
    stream = logic.generate_stream(host, job_queue, many, poll=0.05, stream=False)
    first = next(stream)
    job = job_queue.get(first.job_id)
    while job.record.sections_done < 1:
        threading.Event().wait(0.05)
    assert logic.stop_job(job_queue, job.id, wait=0) == logic.stopping_line(job)  # not waited for: still running
    rest = list(stream)
    statuses = [u.status for u in rest if u.status is not logic.KEEP]
    assert statuses[-1].count(f"Job {job.id} interrupted") == 1 and 'data-fpk-final=""' in statuses[-1]
    assert all("Stopping job" in line for line in statuses[:-1]) and len(statuses) <= 2
    # without streaming, nothing but the stop line and the end goes to the page
    assert all(u.progress is logic.KEEP and u.preview is logic.KEEP for u in rest[:-1])


def test_stop_finds_the_job_by_the_page_task_before_the_page_knows_its_id(host, job_queue):
    many = values(host, **{**FAST, "image": image(), "duration": 20.0})
    stream = logic.generate_stream(host, job_queue, many, task_id="task(page1)", poll=0.05, stream=False)
    job = job_queue.get(next(stream).job_id)
    while job.status == "queued":
        threading.Event().wait(0.05)
    line = logic.stop_job(job_queue, "", "task(page1)")  # the page has not received the job id yet
    assert job.wait(60) and job.status == "interrupted"
    assert (f"Job {job.id} interrupted" in line and 'data-fpk-final="task(page1)"' in line) \
        or line == logic.stopping_line(job)  # the step outlasted Stop's one-second wait (a busy machine)
    assert 'data-fpk-final="task(page1)"' in list(stream)[-1].status


def test_a_stop_before_the_job_exists_cancels_it_or_never_submits_it(host, job_queue):
    before = len(job_queue.list())
    line = logic.stop_job(job_queue, "", "task(early)")  # Generate clicked, its request not yet served
    assert "cancelled as soon as it is submitted" in line
    updates = list(logic.generate_stream(host, job_queue, values(host, **FAST, image=image()),
                                         task_id="task(early)", poll=0.05))
    assert len(updates) == 1 and "Stopped before the job was submitted" in updates[0].status
    assert len(job_queue.list()) == before  # nothing was queued
    # a stop that arrives between submission and binding cancels the job when it is bound
    tasks = logic.PageTasks()
    tasks.stop_before_start("task(x)")
    cancelled = []
    tasks.bind("task(x)", SimpleNamespace(id="j9"), SimpleNamespace(cancel=cancelled.append))
    assert cancelled == ["j9"] and tasks.job_id("task(x)") == "j9"


def test_stop_without_a_page_job_stops_the_running_one():
    control = SimpleNamespace(should_stop=lambda: False)
    running = SimpleNamespace(id="r1", status="running", control=control, wait=lambda timeout: False)
    cancelled = []
    fake_queue = SimpleNamespace(get=lambda job_id: None, list=lambda: [running], cancel=cancelled.append)
    assert "Stopping job r1" in logic.stop_job(fake_queue, "", None)
    assert cancelled == ["r1"]
    fake_queue.list = lambda: []
    assert logic.stop_job(fake_queue, "", None) == logic.info_html("Nothing to stop")


def test_page_tasks_are_bounded():
    tasks = logic.PageTasks(size=3)
    for n in range(5):
        tasks.bind(f"t{n}", SimpleNamespace(id=f"j{n}"), None)
        tasks.stop_before_start(f"s{n}")
    assert tasks.job_id("t0") is None and tasks.job_id("t4") == "j4"
    assert not tasks.stopped_before_start("s1") and tasks.stopped_before_start("s4")


def test_closing_the_page_leaves_the_job_running(host, job_queue):
    stream = logic.generate_stream(host, job_queue, values(host, **{**FAST, "image": image(), "duration": 1.2}))
    job = job_queue.get(next(stream).job_id)
    stream.close()  # what Gradio does when the browser goes away
    assert job.wait(120) and job.status == "completed" and Path(job.record.video).exists()


def test_a_failed_job_is_shown_in_red(tiny_model_dir, tmp_path):
    from framepack.errors import ModelError

    class BrokenHost(StandaloneHost):
        def pipeline(self, variant):
            raise ModelError("transformer: /models/x is missing config.json")

    broken = BrokenHost(output_dir=tmp_path, model=str(tiny_model_dir))
    queue = JobQueue(broken)
    updates = list(logic.generate_stream(broken, queue, values(broken, **FAST, image=image()), poll=0.05))
    assert "fpk-error" in updates[-1].status and "missing config.json" in updates[-1].status
    assert "Failed after" in updates[-1].progress and updates[-1].video is None
    queue.shutdown()


def test_controls_without_a_job(job_queue):
    assert "Nothing to skip" in logic.skip_section(job_queue, "")
    assert logic.toggle_pause(job_queue, "nope")[0] == "Pause"


def test_pause_and_skip_reach_the_running_job():
    control = SimpleNamespace(paused=False, skipped=0)
    control.pause = lambda: setattr(control, "paused", True)
    control.resume = lambda: setattr(control, "paused", False)
    control.skip = lambda: setattr(control, "skipped", control.skipped + 1)
    job = SimpleNamespace(id="j1", status="running", control=control)
    fake_queue = SimpleNamespace(get=lambda job_id: job if job_id == "j1" else None)
    assert logic.toggle_pause(fake_queue, "j1")[0] == "Resume" and control.paused
    assert logic.toggle_pause(fake_queue, "j1")[0] == "Pause" and not control.paused
    assert "Skipping" in logic.skip_section(fake_queue, "j1") and control.skipped == 1


def test_progress_box_texts():
    stats = {"ram": 3 * 2**30, "ram_peak": 4 * 2**30, "gpu_peak": 2**29}
    queued = SimpleNamespace(status="queued", record=JobRecord(status=Status.QUEUED))
    fake_queue = SimpleNamespace(ahead_of=lambda job: 1)
    assert "Waiting in the queue (position 2)" in logic.progress_html(queued, fake_queue, stats)
    record = JobRecord(status=Status.RUNNING, started=0, steps=25, step=5, sections_done=1, sections=4, section=3,
                       it_per_s=1.25, eta=75, progress=0.3)
    running = SimpleNamespace(status=record.status, record=record, control=SimpleNamespace(paused=True))
    text = logic.progress_html(running, None, stats)
    assert "Section 2/4 (#3) · step 5/25 · 1.25 it/s · ETA 1m 15s" in text and "PAUSED" in text
    assert "RAM 3.00 GB · peak 4.00 GB · GPU peak 512 MB" in text and 'width:30.0%' in text
    assert "RAM" in logic.memory_text()


def test_the_host_task_follows_the_job_and_no_thread_submits_behind_the_page(host, job_queue):
    """The queue opens the progress task at submission and closes it when the job ends: the tab
    starts no thread of its own, so nothing can be submitted after the page gave up waiting."""
    events = []

    class TaskHost:
        def __getattr__(self, name):
            return getattr(host, name)

        def task_queued(self, task_id):
            events.append(("queued", task_id, threading.current_thread()))

        def task_finished(self, task_id):
            events.append(("finished", task_id))

    task_queue = JobQueue(TaskHost())
    stream = logic.generate_stream(TaskHost(), task_queue, values(host, **FAST, image=image()), task_id="task(abc)",
                                   poll=0.05)
    job = task_queue.get(next(stream).job_id)
    assert events == [("queued", "task(abc)", threading.current_thread())]  # on the caller's thread, at once
    for _ in stream:
        pass
    assert job.wait(0) and events[-1] == ("finished", "task(abc)")
    task_queue.shutdown()


# ----------------------------------------------------------------------------- video, model, settings

def test_codec_choices_are_the_working_encoders():
    choices, value, note = logic.codec_choices("libx264")
    assert "libx264" in choices and choices[-1] == "none" and value == "libx264" and "working encoders" in note
    choices, value, note = logic.codec_choices("no-such-codec", refresh=True)
    assert value == "libx264" and "does not work here" in note


def test_model_load_status_and_unload(host, job_queue):
    assert "ready" in logic.load_model(host, job_queue, "f1")
    assert "Loaded: f1" in logic.model_status_html(host)
    assert "unloaded" in logic.unload_model(host, job_queue)
    assert "No model loaded" in logic.model_status_html(host)


def test_settings_are_stored_in_the_host(tmp_path):
    host = StandaloneHost(output_dir=tmp_path, model="unused")
    assert "used from the next model load" in logic.change_setting(host, logic.QUANT_KEY, "quanto-int8", "Quantization")
    assert host.option(logic.QUANT_KEY) == "quanto-int8"
    readonly = SimpleNamespace(name="sdnext", option=lambda key, default=None: default)
    assert not logic.settings_writable(readonly)
    message = logic.change_setting(readonly, logic.OFFLOAD_KEY, "none", "Offload")
    assert "Settings -> FramePack" in html.unescape(message)
    assert "quanto-int8" in logic.quantization_choices() and "default" in logic.attention_choices()
    assert logic.with_current(["a", "b"], "c") == ["c", "a", "b"]


def test_recipe_view_edit_reset(tmp_path):
    from framepack.host.sdnext import parse_recipe_setting

    class RecipeHost(StandaloneHost):  # a host that reads the recipe setting, as SdnextHost does
        def recipe(self, variant):
            return parse_recipe_setting(self.option(logic.RECIPE_KEY), variant)

    host = RecipeHost(output_dir=tmp_path, model="unused")
    shown = json.loads(logic.recipe_json(host, "original"))
    assert shown["transformer"] == "lllyasviel/FramePackI2V_HY" and len(shown) == 8
    text, message = logic.apply_recipe(host, "original", "{not json")
    assert text == "{not json" and "not valid JSON" in message
    assert "unknown role(s) unet" in logic.apply_recipe(host, "original", '{"unet": "a/b"}')[1]
    assert "neither an existing folder" in logic.apply_recipe(host, "original", '{"vae": "just-a-name"}')[1]
    text, message = logic.apply_recipe(host, "original", json.dumps({**shown, "transformer": "me/my-framepack"}))
    assert "Recipe stored" in message and json.loads(text)["transformer"] == "me/my-framepack"
    assert json.loads(host.option(logic.RECIPE_KEY))["transformer_original"] == "me/my-framepack"
    assert json.loads(logic.recipe_json(host, "f1"))["transformer"] == "lllyasviel/FramePack_F1_I2V_HY_20250503"
    text, message = logic.reset_recipe(host, "original")
    assert "reset" in message and json.loads(text)["transformer"] == "lllyasviel/FramePackI2V_HY"


def test_recipe_edit_on_a_host_that_ignores_the_setting(tmp_path, tiny_model_dir):
    host = StandaloneHost(output_dir=tmp_path, model=str(tiny_model_dir))
    shown = json.loads(logic.recipe_json(host, "original"))
    text, message = logic.apply_recipe(host, "original", json.dumps({**shown, "vae": "me/other-vae"}))
    if "does not read" in message:  # the standalone host takes its model from --model
        assert json.loads(text)["vae"] == shown["vae"]
    else:
        assert json.loads(text)["vae"] == "me/other-vae"


def test_the_plan_line_shows_the_resources_on_the_hosts_machine():
    from framepack.jobs.resources import Machine
    from framepack.models.resources import GiB

    class Host:
        def __init__(self, vram):
            self.vram = vram

        def resource_machine(self, variant):
            return Machine(device="cuda", vram_bytes=self.vram * GiB, ram_bytes=64 * GiB)

    values = (5, 30, 0, 9, "original", "a boat", "")
    fits = logic.host_plan_html(Host(24), *values, None, 640)
    assert "4 sections" in fits and "· VRAM " in fits and "RAM " in fits and "disk " in fits
    assert "(offload group)" in fits
    short = logic.host_plan_html(Host(2), *values, None, 960)
    assert "needs VRAM" in short and "this run does not fit" in short
    assert logic.host_plan_html(object(), *values, None, 640) == logic.plan_html(*values, None)  # no machine
    assert "VRAM" not in logic.host_plan_html(Host(24), *values, None, "abc")  # not plannable yet: no line
    assert 'role="alert"' in logic.host_plan_html(Host(24), 0, 30, 0, 9, "original", "", "", None, 640)
