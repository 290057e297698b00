"""The REST API's resume, re-roll and extend routes (issue 11), over real HTTP with the tiny model.

POST /jobs/{id}/resume continues a stopped job to the frames of a run never stopped; POST
/jobs/{id}/reroll makes a new job reusing the first sections; POST /extend continues a finished
job or an uploaded video. Hostile input: extend never takes a server path, only real video
containers within the body limit, bad job ids and bodies get 404 / 409 / 422 naming the field,
never a 500, and a refused request writes nothing.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import requests
from safetensors.numpy import load as load_safetensors

from framepack.app import create_app
from framepack.host.standalone import StandaloneHost
from framepack.io.workdir import WORK_DIR_NAME
from test_api_helpers import API, LiveServer, b64, data_url, job_body, wait_finished, wait_until

FOUR_SECTIONS = dict(duration=1.6, output={"save_frames": True})
"""49 frames in four sections of the tiny settings."""


@pytest.fixture(scope="module")
def api(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("api-resume")
    host = StandaloneHost(output_dir=out, model=str(tiny_model_dir))
    app = create_app(host, ui=False)
    with LiveServer(app) as server:
        yield SimpleNamespace(url=server.url, base=server.url + API, host=host, queue=app.state.framepack_queue,
                              app=app, out=Path(host.video_dir()))


def post(api, path: str, body=None, **kwargs) -> requests.Response:
    if body is None:
        return requests.post(f"{api.base}{path}", headers={"content-type": "application/json"}, timeout=30, **kwargs)
    return requests.post(f"{api.base}{path}", json=body, timeout=30, **kwargs)


def submit(api, **fields) -> dict:
    response = post(api, "/jobs", job_body(**fields))
    assert response.status_code == 202, response.text
    return response.json()


def finished(api, job_id: str) -> dict:
    return wait_finished(api.url, job_id, timeout=300)


def frames_of(api, state: dict) -> np.ndarray:
    response = requests.get(api.url + state["frames_url"], timeout=60)
    assert response.status_code == 200, response.text
    return load_safetensors(response.content)["frames"]


def files(api) -> set[str]:
    """What the output folder holds once no job runs (a refused request must add nothing)."""
    wait_until(lambda: all(job.status.finished for job in api.queue.list()), timeout=300, what="the queue to be idle")
    return {str(p.relative_to(api.out)) for p in api.out.rglob("*")}


@pytest.fixture(scope="module")
def kept(api):
    """A completed four-section job whose checkpoints are kept (re-roll and extend it)."""
    state = submit(api, seed=11, duration=1.6, variant="f1", output={"save_frames": True, "keep_checkpoints": True})
    state = finished(api, state["id"])
    assert state["status"] == "completed" and state["checkpoints"] and not state["resumable"], state
    return state


def mp4_bytes(width: int = 32, height: int = 32, frames: int = 16) -> bytes:
    buffer = io.BytesIO()
    y, x = np.mgrid[0:height, 0:width]
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.stack([(x * 5 + index * 4) % 256, (y * 5) % 256, np.full_like(x, 100)], -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ resume

def test_a_stopped_job_resumed_through_the_api_gives_the_frames_of_an_unstopped_one(api):
    stopped = submit(api, seed=21, **FOUR_SECTIONS)
    wait_until(lambda: requests.get(f"{api.base}/jobs/{stopped['id']}", timeout=10).json()["sections_done"] >= 1,
               timeout=300, what="a section to finish")
    assert requests.delete(f"{api.base}/jobs/{stopped['id']}", timeout=10).status_code == 202
    state = finished(api, stopped["id"])
    assert state["status"] == "interrupted" and state["sections_done"] < 4, state
    assert state["resumable"] and state["resume_url"] == f"{API}/jobs/{stopped['id']}/resume"

    resumed = post(api, f"/jobs/{stopped['id']}/resume")
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["id"] == stopped["id"] and resumed.headers["location"] == f"{API}/jobs/{stopped['id']}"
    twice = post(api, f"/jobs/{stopped['id']}/resume")
    assert twice.status_code == 409 and "when it has finished" in twice.json()["detail"]
    state = finished(api, stopped["id"])
    assert state["status"] == "completed" and state["resumes"] == 1 and state["frame_count"] == 49, state
    assert not state["resumable"] and not state["checkpoints"]

    reference = finished(api, submit(api, seed=21, **FOUR_SECTIONS)["id"])
    np.testing.assert_array_equal(frames_of(api, state), frames_of(api, reference))

    done = post(api, f"/jobs/{stopped['id']}/resume")
    assert done.status_code == 409 and "completed" in done.json()["detail"]


def test_resume_refuses_bodies_ids_and_requests_a_web_page_could_send(api, kept):
    assert post(api, "/jobs/deadbeef0000/resume").status_code == 404
    assert post(api, "/jobs/..%2F..%2Fetc/resume").status_code == 404
    with_settings = post(api, f"/jobs/{kept['id']}/resume", {"seed": 3})
    assert with_settings.status_code == 422 and with_settings.json()["detail"][0]["loc"] == ["body", "seed"]
    plain = requests.post(f"{api.base}/jobs/{kept['id']}/resume", data="", timeout=10,
                          headers={"content-type": "text/plain"})
    assert plain.status_code == 415  # a cross-site form post cannot start anything
    completed = post(api, f"/jobs/{kept['id']}/resume")
    assert completed.status_code == 409 and "re-roll it" in completed.json()["detail"]


# ------------------------------------------------------------------------------------------ re-roll

def test_a_reroll_through_the_api_is_a_new_job_keeping_the_first_sections(api, kept):
    response = post(api, f"/jobs/{kept['id']}/reroll", {"from_section": 3, "seed": 5})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["id"] != kept["id"] and job["kind"] == "reroll" and job["seed"] == 5
    assert job["source"] == {"job": kept["id"], "from_section": 3, "reused_sections": [1, 2]}
    state = finished(api, job["id"])
    assert state["status"] == "completed" and state["frames_url"] != kept["frames_url"], state
    original, rerolled = frames_of(api, kept), frames_of(api, state)
    seam = 25 - 9  # section 3 starts at frame 25; its first 9 frames are cross-faded with section 2's last
    np.testing.assert_array_equal(rerolled[:seam], original[:seam])
    assert (rerolled[25:] != original[25:]).any(axis=(1, 2, 3)).all()


@pytest.mark.parametrize("body, loc, words", [
    ({}, ["body", "from_section"], "give the first section"),
    ({"from_section": "2"}, ["body", "from_section"], "whole number"),
    ({"from_section": 0}, ["body", "from_section"], "from 1 to 4"),
    ({"from_section": 5}, ["body", "from_section"], "from 1 to 4"),
    ({"from_section": 2, "seed": 2 ** 70}, ["body", "seed"], "whole number"),
    ({"from_section": 2, "prompt": "x"}, ["body", "prompt"], "unknown field"),
    ({"from_section": 2, "section_prompts": "9: beyond the end"}, ["body", "section_prompts"], "section"),
    ({"from_section": 2, "output": {"codec_options": "-i /etc/passwd"}}, ["body", "output", "codec_options"], ""),
    ({"from_section": 2, "output": {"filename": "../../escape"}}, None, ""),
    ([1, 2], ["body"], "JSON object"),
])
def test_reroll_bodies_are_checked_field_by_field(api, kept, body, loc, words):
    before = files(api)
    response = post(api, f"/jobs/{kept['id']}/reroll", body)
    if loc is None:  # a file name is made safe, never a path
        assert response.status_code in (202, 422), response.text
        if response.status_code == 202:
            state = finished(api, response.json()["id"])
            assert state["status"] == "completed" and not (api.out.parent / "escape").exists()
        return
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(entry["loc"] == loc and words in entry["msg"] for entry in detail), detail
    assert files(api) == before


def test_reroll_of_unknown_or_checkpointless_jobs(api):
    assert post(api, "/jobs/deadbeef0000/reroll", {"from_section": 1}).status_code == 404
    plain = finished(api, submit(api, seed=31)["id"])  # checkpoints removed when it completed
    response = post(api, f"/jobs/{plain['id']}/reroll", {"from_section": 1})
    assert response.status_code == 409 and "keep_checkpoints" in response.json()["detail"]



def test_a_job_with_reference_noise_cannot_be_rerolled(api):
    state = submit(api, seed=13, duration=0.8, variant="f1", noise="reference", output={"keep_checkpoints": True})
    state = finished(api, state["id"])
    assert state["status"] == "completed" and state["checkpoints"], state
    before = files(api)
    response = post(api, f"/jobs/{state['id']}/reroll", {"from_section": 2, "seed": 3})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(entry["loc"] == ["body", "from_section"] and "per-section noise" in entry["msg"] for entry in detail)
    assert files(api) == before


# ------------------------------------------------------------------------------------------ extend

def test_extend_a_finished_job_and_an_uploaded_video(api, kept):
    response = post(api, "/extend", {"job": kept["id"], "duration": 0.4, "steps": 2, "latent_window_size": 3,
                                     "resolution": 32, "seed": 4, "output": {"save_frames": True}})
    assert response.status_code == 202, response.text
    state = finished(api, response.json()["id"])
    assert state["status"] == "completed" and state["kind"] == "extend", state
    assert state["frame_count"] == 49 + 12 and state["source"]["job"] == kept["id"]
    np.testing.assert_array_equal(frames_of(api, state)[:40], frames_of(api, kept)[:40])  # raw frames: exact

    upload = post(api, "/extend", {"video": data_url(mp4_bytes(), "video/mp4"), "duration": 0.4, "steps": 2,
                                   "latent_window_size": 3, "seed": 4})
    assert upload.status_code == 202, upload.text
    state = finished(api, upload.json()["id"])
    assert state["status"] == "completed" and state["frame_count"] == 16 + 12, state
    assert not any(name.endswith("clip.input") for name in files(api))  # the upload went with its job


@pytest.mark.parametrize("body, loc, words", [
    ({"video": "/etc/passwd", "duration": 1}, ["body", "video"], "base64"),
    ({"video": b64(b"/etc/passwd"), "duration": 1}, ["body", "video"], "not a video this can continue"),
    ({"video": b64(b"#EXTM3U\n#EXTINF:1,\nhttp://example.com/a.ts\n"), "duration": 1}, ["body", "video"], "not a video"),
    ({"video": b64(b"ffconcat version 1.0\nfile /etc/passwd\n"), "duration": 1}, ["body", "video"], "not a video"),
    ({"video_path": "/tmp/a.mp4", "duration": 1}, ["body", "video_path"], "unknown field"),
    ({"path": "/tmp/a.mp4", "duration": 1}, ["body", "path"], "unknown field"),
    ({"duration": 1}, ["body"], "either \"job\""),
    ({"job": "x", "video": "AAAA", "duration": 1}, ["body"], "either \"job\""),
    ({"job": 5, "duration": 1}, ["body", "job"], "job id"),
    ({"video": "AAAA", "image": "AAAA", "duration": 1}, ["body", "image"], "takes it from the clip"),
    ({"video": "AAAA", "fps": 24, "duration": 1}, ["body", "fps"], "takes it from the clip"),
    ({"video": "AAAA", "duration": "long"}, ["body", "duration"], ""),
    ({"video": "AAAA", "duration": 1, "output": {"codec_options": "-f hls"}}, ["body", "output", "codec_options"], ""),
])
def test_extend_refuses_paths_and_what_is_not_a_video(api, body, loc, words):
    before = files(api)
    response = post(api, "/extend", body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    text = str(detail)
    if loc is not None:
        assert any(entry["loc"] == loc and words in entry["msg"] for entry in detail), detail
    else:
        assert words in text
    assert "Traceback" not in text and files(api) == before


def test_extend_by_job_id_refuses_unknown_and_unfinished_jobs(api):
    for job_id in ("deadbeef0000", "../../etc/passwd", "x" * 500):
        response = post(api, "/extend", {"job": job_id, "duration": 1})
        assert response.status_code == 404, (job_id, response.text)
    long = submit(api, seed=41, duration=3.2)
    response = post(api, "/extend", {"job": long["id"], "duration": 1})
    assert response.status_code == 409 and "when it has finished" in response.json()["detail"]
    requests.delete(f"{api.base}/jobs/{long['id']}", timeout=10)
    finished(api, long["id"])


def test_an_upload_over_the_body_limit_is_413_and_writes_nothing(api):
    small = create_app(api.host, api.queue, ui=False, max_body_bytes=64 * 1024)
    before = files(api)
    with LiveServer(small) as server:
        video = b64(mp4_bytes(frames=16) + b"\0" * 100_000)
        response = requests.post(f"{server.url}{API}/extend", json={"video": video, "duration": 1}, timeout=30)
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    assert files(api) == before


def test_a_video_of_frames_too_small_is_refused(api):
    small = mp4_bytes(width=8, height=8, frames=2)  # under the smallest side a clip may have
    response = post(api, "/extend", {"video": b64(small), "duration": 1})
    assert response.status_code == 422, response.text
    assert "8x8" in str(response.json()["detail"])


# ------------------------------------------------------------------------------------------ discard

def test_a_damaged_checkpoint_is_409_naming_the_file_and_delete_still_discards_it(api):
    state = finished(api, submit(api, seed=51, variant="f1", output={"keep_checkpoints": True})["id"])
    folder = api.out / WORK_DIR_NAME / state["id"]
    assert state["checkpoints"] and folder.is_dir()
    for section in (folder / "sections").iterdir():
        section.write_bytes(section.read_bytes()[:-64])
    before = files(api)
    damaged = post(api, f"/jobs/{state['id']}/reroll", {"from_section": 1})
    assert damaged.status_code == 409 and "000000.safetensors is damaged" in damaged.json()["detail"]
    assert files(api) == before  # nothing written, nothing removed
    response = requests.delete(f"{api.base}/jobs/{state['id']}", timeout=10)
    assert response.status_code == 200 and response.json()["checkpoints"] is False
    assert not folder.exists()
    gone = post(api, f"/jobs/{state['id']}/reroll", {"from_section": 1})
    assert gone.status_code == 409 and "checkpoints were removed" in gone.json()["detail"]
