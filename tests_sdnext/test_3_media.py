"""The real SD.Next's own media tools from FramePack: one generation interpolated by SD.Next's RIFE
and one upscaled by SD.Next's upscaler, submitted through our REST API (the tab's controls for
them come with the tab rewrite; the job path is the same one the tab uses).

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
