"""The real SD.Next's own media tools from FramePack: one generation interpolated by SD.Next's RIFE
and one upscaled by SD.Next's upscaler, each submitted once through our REST API and once from the
tab (Playwright: the Interpolation method / RIFE model and Upscale / Upscaler controls), then the
tab's Send to Process.

Offline there is no RIFE download: the test puts a RIFE weights file where SD.Next looks for it
(`models/RIFE/flownet_v4.25.pkl`, `modules.rife.load` uses a present file as it is). It holds no
weights, so SD.Next's RIFE runs with its random initialisation: the frame count, sizes and the
host's log line are what is checked, not the look of the in-betweens.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests_sdnext import pages
from tests_sdnext.conftest import DEMO_IMAGE, wait_until
from tests_sdnext.test_1_standard import tab  # noqa: F401 - one page with the tab open, on this module's server

pytestmark = pytest.mark.sdnext
API = "/framepack/v1"


@pytest.fixture(scope="module")
def server(site):
    import torch

    rife = site.data / "models" / "RIFE" / "flownet_v4.25.pkl"
    rife.parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, rife)  # RifeModel.load_model keeps only "module.*" keys: random weights
    with site.server() as running:
        yield running


def generate(server, tmp_path: Path, name: str, output: dict, **fields) -> tuple[dict, Path]:
    body = {"image": base64.b64encode(DEMO_IMAGE.read_bytes()).decode(), "prompt": "a paper boat",
            "resolution": 240, "duration": 0.4, "steps": 2, "latent_window_size": 3, "seed": 3,
            "teacache": False, **fields, "output": output}
    status, answer = server.request("POST", f"{API}/jobs", body)
    assert status == 202, answer
    job_id = answer["id"]

    def finished():
        state = server.request("GET", f"{API}/jobs/{job_id}")[1]
        return state if state["status"] in ("completed", "interrupted", "failed", "cancelled") else None

    state = wait_until(finished, 900, message=f"job {job_id} finished")
    assert state["status"] == "completed", state
    status, data = server.request("GET", f"{API}/jobs/{job_id}/video", raw=True)
    assert status == 200, data[:300]
    video = tmp_path / f"{name}.mp4"
    video.write_bytes(data)
    return state, video


def _size(path: Path) -> tuple[int, int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.height, stream.codec_context.width


def test_interpolated_by_sdnext_rife(server, tmp_path):
    mark = len(server.log())
    state, video = generate(server, tmp_path, "rife", {"interpolation_method": "rife",
                                                       "interpolation_model": "sdnext:RIFE"}, interpolation=1)
    # frame_count: the generated frames; the video has one RIFE frame in every gap between them
    assert pages.frame_count(video) == (state["frame_count"] - 1) * 2 + 1
    assert "Video interpolation: type=numpy" in server.log()[mark:]  # SD.Next's own RIFE ran


def test_upscaled_by_sdnext_upscaler(server, tmp_path):
    status, upscalers = server.request("GET", "/sdapi/v1/upscalers")
    assert status == 200 and any(u["name"] == "Resize Lanczos" for u in upscalers), upscalers
    plain, plain_video = generate(server, tmp_path, "plain", {}, seed=4)
    state, video = generate(server, tmp_path, "upscaled", {"upscale": 2, "upscaler": "sdnext:Resize Lanczos"}, seed=4)
    height, width = _size(plain_video)
    assert _size(video) == (height * 2, width * 2)
    assert pages.frame_count(video) == pages.frame_count(plain_video)
    status, answer = server.request("POST", f"{API}/jobs", {
        "image": base64.b64encode(DEMO_IMAGE.read_bytes()).decode(), "prompt": "x",
        "output": {"upscale": 2, "upscaler": "sdnext:No Such Upscaler"}})
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "output", "upscaler"], answer


# ----------------------------------------------------------------------------- the same from the tab

def tab_generate(page, seed: int) -> Path:
    """Generate with the tab's current values; the saved video once the status says completed."""
    pages.set_number(page, "fpk_seed", seed)
    page.evaluate("() => { const line = document.querySelector('#fpk_status > *'); if (line) line.textContent = ''; }")
    page.click("#fpk_generate")  # (the line is cleared first: an earlier run's words must not answer the wait)
    pages.wait_for_status(page, rf"completed · seed {seed}|failed|Failed", timeout=900)
    assert f"completed · seed {seed}" in pages.status(page), pages.status(page)
    return pages.saved_video(page)


def open_media_accordion(page) -> None:
    if not page.locator("#fpk_upscale input[type=number]").is_visible():
        pages.open_accordion(page, "fpk_media_accordion", "LoRA, upscaling, Tiny VAE")
    page.wait_for_selector("#fpk_upscale input[type=number]", state="visible")


def test_tab_interpolates_with_sdnext_rife(server, tab):
    page, watch = tab
    assert page.locator("#fpk_enhance").is_visible()  # SD.Next has a prompt enhancer: its button is shown
    pages.fast_settings(page, duration=0.4)
    pages.set_number(page, "fpk_interpolation", 1)
    if not page.locator("#fpk_interpolation_method").is_visible():
        pages.open_accordion(page, "fpk_video_accordion", "Video")
    page.locator("#fpk_interpolation_method label", has_text="rife").click()
    open_media_accordion(page)
    assert page.locator("#fpk_interpolation_model input").input_value() == "sdnext:RIFE"  # the default inside SD.Next
    planned = pages.stable_plan(page, "1 interpolated per gap")
    mark = len(server.log())
    video = tab_generate(page, seed=7)
    assert pages.frame_count(video) == planned  # the plan counts the RIFE frames
    assert "Video interpolation: type=numpy" in server.log()[mark:]  # SD.Next's own RIFE ran
    assert watch.failed_events == [] and watch.script_errors == []


def test_tab_upscales_with_an_sdnext_upscaler(server, tab, tmp_path):
    page, watch = tab
    plain, plain_video = generate(server, tmp_path, "plain-size", {}, seed=5)  # the generated size, via the API
    pages.fast_settings(page, duration=0.4)
    pages.set_number(page, "fpk_interpolation", 0)
    open_media_accordion(page)
    page.click("#fpk_models_refresh")
    pages.set_number(page, "fpk_upscale", 2)
    page.click("#fpk_upscaler input")
    page.locator("#fpk_upscaler ul.options li", has_text="sdnext:Resize Lanczos").first.click()
    page.wait_for_function("document.querySelector('#fpk_upscaler input').value === 'sdnext:Resize Lanczos'")
    planned = pages.stable_plan(page, "(asked 0.40 s)")
    video = tab_generate(page, seed=8)
    height, width = _size(plain_video)
    assert _size(video) == (height * 2, width * 2)
    assert pages.frame_count(video) == planned == plain["frame_count"]
    assert watch.failed_events == [] and watch.script_errors == []


def test_send_to_process(tab):
    """The tab's last video goes to SD.Next's Process -> Process Video input."""
    page, watch = tab
    if not (pages.video_state(page) or {}).get("src"):
        pytest.skip("no video in the tab (the generations above failed)")
    page.click("#fpk_send_to_process")
    page.wait_for_selector("#extras_video video[src]", state="attached", timeout=120_000)
    assert page.locator("#extras_video").is_visible()  # SD.Next switched to its Process tab
    assert watch.failed_events == [] and watch.script_errors == []
