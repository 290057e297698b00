"""The Gradio tab itself (no browser): element ids, assets, and the Generate handler end to end."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from framepack.host.standalone import StandaloneHost  # noqa: E402
from framepack.jobs.queue import JobQueue  # noqa: E402
from framepack.ui import create_ui, logic  # noqa: E402
from framepack.ui.tab import SCRIPT_FILE, STYLE_FILE  # noqa: E402

BUILT_IN_IDS = {  # the built-in Video -> FramePack sub-tab of SD.Next (docs/HOST.md)
    "framepack_settings", "framepack-output-column", "framepack_generate_btn", "framepack_init_image",
    "framepack_last_image", "framepack_result_video", "framepack_preview_image", "framepack_progress_desc",
    "framepack_section_html", "framepack_section_prompt", "framepack_btn_load", "framepack_btn_unload",
}
FAST = {"resolution": 32, "steps": 2, "latent_window_size": 3, "duration": 0.4, "teacache": False, "variant": "f1"}


@pytest.fixture(scope="module")
def host(tiny_model_dir, tmp_path_factory):
    return StandaloneHost(output_dir=tmp_path_factory.mktemp("tab"), model=str(tiny_model_dir),
                          settings={"ui_defaults": FAST})


@pytest.fixture(scope="module")
def tab(host):
    queue = JobQueue(host)
    yield create_ui(host, queue), queue
    queue.shutdown()


def element_ids(blocks) -> list[str]:
    return [block.elem_id for block in blocks.blocks.values() if getattr(block, "elem_id", None)]


def choice_values(component) -> list:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in component.choices]


def dependency(blocks, api_name: str):
    for index, dep in enumerate(blocks.dependencies):
        if dep.get("api_name") == api_name:
            return dep, blocks.fns[index].fn
    raise AssertionError(f"no event named {api_name}")


def test_every_id_is_ours(tab):
    ids = element_ids(tab[0])
    assert len(ids) == len(set(ids)) > 60
    assert all(i.startswith("fpk_") for i in ids), [i for i in ids if not i.startswith("fpk_")]
    assert not BUILT_IN_IDS & set(ids)
    for needed in ("fpk_image", "fpk_end_image", "fpk_keyframes", "fpk_prompt", "fpk_quick_prompts",
                   "fpk_section_prompts", "fpk_plan", "fpk_codec", "fpk_codec_refresh", "fpk_seed", "fpk_recipe",
                   "fpk_quantization", "fpk_offload", "fpk_attention", "fpk_generate", "fpk_stop", "fpk_skip",
                   "fpk_pause", "fpk_video", "fpk_preview", "fpk_progress"):
        assert needed in ids


def test_javascript_and_css_use_our_prefix():
    script, style = SCRIPT_FILE.read_text(), STYLE_FILE.read_text()
    functions = re.findall(r"^function (\w+)", script, re.M)
    assert "fpkSubmit" in functions and all(name.startswith("fpk") for name in functions)
    assert "submit_framepack" not in script
    selectors = re.findall(r"([#.][A-Za-z_-][\w-]*)", re.sub(r"/\*.*?\*/|\{[^}]*\}", "", style, flags=re.S))
    assert selectors and all(s.startswith(("#fpk_", ".fpk-")) for s in selectors), selectors


def test_initial_values_and_plan(tab, host):
    blocks, _ = tab
    components = blocks.fpk_components
    assert components["steps"].value == 2 and components["latent_window_size"].value == 3  # ui_defaults
    assert components["plan"].value.count("<tr>") == 2 and "13 frames" in components["plan"].value
    assert components["codec"].value == "libx264" and "none" in choice_values(components["codec"])


def test_only_following_a_job_uses_the_queue(tab):
    blocks, _ = tab
    queued = [dep for dep in blocks.dependencies if dep.get("queue") is not False and dep.get("backend_fn")]
    assert {dep.get("api_name") for dep in queued} <= {"fpk_follow", None}
    generate, _ = dependency(blocks, "fpk_generate")
    # Generate answers at once (a click on a running event is dropped by Gradio's page)
    assert generate["queue"] is False and "fpkSubmit" in generate["js"]
    follow, _ = dependency(blocks, "fpk_follow")
    assert follow["queue"] is not False and follow["trigger_after"] == blocks.dependencies.index(generate)
    # the follower, its second look, load / unload (minutes with real models) stay on the queue
    assert len(queued) <= 4


def test_generate_submits_at_once_and_the_page_follows_its_jobs(tab, host):
    blocks, _ = tab
    dep, submit = dependency(blocks, "fpk_generate")
    follow_dep, follow = dependency(blocks, "fpk_follow")
    values = {**logic.default_values(host), "image": np.full((40, 40, 3), 90, np.uint8), "seed": 3}
    first = submit("", "", *[values[name] for name in logic.VALUE_NAMES])
    assert len(first) == len(dep["outputs"]) == 8
    status, _, _, _, job_id, seed, _, page = first
    assert "submitted · seed 3" in status and job_id and seed == 3 and page  # a page id is made for the page
    second = submit("", page, *[{**values, "seed": 4}[name] for name in logic.VALUE_NAMES])
    assert second[7] == page and "seed 4" in second[0]
    outputs = list(follow(page))
    assert all(len(out) == len(follow_dep["outputs"]) == 6 for out in outputs)
    finals = [out for out in outputs if isinstance(out[0], str) and "completed" in out[0]]
    assert len(finals) == 2 and "seed 3" in finals[0][0] and "seed 4" in finals[1][0]  # both followed, in order
    status, progress, preview, video, job_id, pause_label = outputs[-1]
    assert pause_label == gr.update(value="Pause") and "Timings:" in progress
    assert Path(video).exists() and Path(video).parent == host.video_dir() and job_id == ""
    bad = submit("", page, *[{**values, "resolution": 33}[name] for name in logic.VALUE_NAMES])
    assert "Resolution: resolution must be a multiple of 16" in bad[0]
    assert bad[3] is None  # a new error replaces the previous result
    assert len(list(follow(page))) == 1  # nothing left to follow: one empty update


def test_assets_are_added_only_outside_sdnext(tab, tmp_path):
    blocks, _ = tab
    assert any("fpkScriptLoaded" in (dep.get("js") or "") for dep in blocks.dependencies)
    assert "#fpk_tab" in (blocks.css or "")

    sdnext_like = SimpleNamespace(name="sdnext", option=lambda key, default=None: default,
                                  keep_incomplete=lambda: True, loaded_variant=lambda: None,
                                  request_defaults=lambda: {"variant": "f1"}, output_defaults=lambda: {"crf": 20},
                                  video_dir=lambda: tmp_path)
    blocks = create_ui(sdnext_like, SimpleNamespace(list=lambda: []))
    assert not any("fpkScriptLoaded" in (dep.get("js") or "") for dep in blocks.dependencies)
    components = blocks.fpk_components
    assert components["variant"].value == "f1" and components["crf"].value == 20  # the host's settings
    # no event held for a whole job there (each pending one animates timers on SD.Next's page): the page asks
    queued = [dep for dep in blocks.dependencies if dep.get("queue") is not False and dep.get("backend_fn")]
    assert {dep.get("api_name") for dep in queued} == {None} and len(queued) <= 2  # model load / unload
    news, _ = dependency(blocks, "fpk_page_news")
    assert news["queue"] is False and len(news["outputs"]) == 6
    quantization = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "fpk_quantization")
    assert quantization.interactive is False  # settings live in SD.Next's Settings page there
    offload = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "fpk_offload")
    assert "host" in choice_values(offload)


def test_load_settings_reads_only_a_file_this_page_uploaded(tab, tmp_path):
    """Gradio 3 lets a client name any server path as the uploaded file: Load settings refuses it."""
    blocks, _ = tab
    handler = next(fn.fn for fn in blocks.fns if getattr(fn.fn, "__name__", "") == "on_settings_file")
    outside = tmp_path / "someone-elses.mp4"
    outside.write_bytes(b"\0" * 64)
    *updates, message = handler(SimpleNamespace(name=str(outside), orig_name="someone-elses.mp4"))
    assert "not a file uploaded to this page" in message and "Load settings" in message
    assert all(update == gr.update() for update in updates)  # no control changed
