"""The REST API over real HTTP: a uvicorn server in a thread, the standalone host, the tiny model.

Lifecycle, cancel (queued and in flight), 20 concurrent submissions, malformed payloads (422 with
field-level messages and nothing written), 404/409/413, /codecs and /plan.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import requests
from safetensors.numpy import load as load_safetensors

from framepack.api import API_PREFIX, register_routes
from framepack.app import create_app
from framepack.host.standalone import StandaloneHost
from framepack.models.resources import GiB
from test_api_helpers import (API, FINISHED, LiveServer, b64, data_url, job_body, png_bytes, png_header,
                              wait_finished, wait_until)


@pytest.fixture(scope="module")
def api(tiny_model_dir, tmp_path_factory):
    host = StandaloneHost(output_dir=tmp_path_factory.mktemp("api-out"), model=str(tiny_model_dir))
    app = create_app(host, ui=False)
    with LiveServer(app) as server:
        yield SimpleNamespace(url=server.url, base=server.url + API, host=host, queue=app.state.framepack_queue,
                              app=app, port=server.port)
    # leaving the server ran the app's shutdown handler: the queue is closed
    assert app.state.framepack_queue._closed


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# ------------------------------------------------------------------------------ lifecycle

def test_job_lifecycle_submit_poll_download(api, tmp_path):
    body = job_body(seed=42, duration=0.8, end_image=data_url(png_bytes(7)), negative_prompt="blur",
                    section_prompts="1: calm water\n2: a wave rises", output={"save_frames": True, "filename": "life"})
    response = requests.post(f"{api.base}/jobs", json=body, timeout=30)
    assert response.status_code == 202, response.text
    created = response.json()
    job_id = created["id"]
    assert created["status"] in ("queued", "running") and created["seed"] == 42 and created["sections"] == 2
    assert response.headers["location"] == f"{API}/jobs/{job_id}"

    state = wait_finished(api.url, job_id)
    assert state["status"] == "completed", state
    assert state["error"] is None and state["progress"] == 1.0 and state["sections_done"] == 2
    assert state["step"] == state["steps"] == 2 and state["frame_count"] == 25
    assert state["video"] and state["frames"] and state["video_url"] == f"{API}/jobs/{job_id}/video"
    assert "25 frames" in state["plan"] and state["timings"]

    video = requests.get(api.url + state["video_url"], timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert "life-42.mp4" in video.headers["content-disposition"]
    (tmp_path / "v.mp4").write_bytes(video.content)
    assert count_frames(tmp_path / "v.mp4") == 25

    frames = requests.get(api.url + state["frames_url"], timeout=30)
    assert frames.status_code == 200 and frames.headers["content-type"] == "application/octet-stream"
    assert "life-42.safetensors" in frames.headers["content-disposition"]
    array = load_safetensors(frames.content)["frames"]
    assert array.dtype == np.uint8 and array.shape == (25, 32, 32, 3)

    preview = requests.get(f"{api.base}/jobs/{job_id}/preview", timeout=10)
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"

    listed = requests.get(f"{api.base}/jobs", timeout=10).json()["jobs"]
    assert job_id in [job["id"] for job in listed]
    assert [j["id"] for j in requests.get(f"{api.base}/jobs?status=completed", timeout=10).json()["jobs"]].count(job_id) == 1
    assert requests.get(f"{api.base}/jobs?status=bogus", timeout=10).status_code == 422

    late_cancel = requests.delete(f"{api.base}/jobs/{job_id}", timeout=10)
    assert late_cancel.status_code == 409 and "already finished" in late_cancel.json()["detail"]


def test_cancel_queued_and_in_flight(api):
    long = requests.post(f"{api.base}/jobs", json=job_body(seed=5, duration=3.2), timeout=30).json()  # 8 sections
    waiting = requests.post(f"{api.base}/jobs", json=job_body(seed=6), timeout=30).json()
    assert waiting["status"] == "queued" and waiting["ahead"] == 1

    running = wait_until(lambda: (s := requests.get(f"{api.base}/jobs/{long['id']}", timeout=10).json())["step"] > 0
                         and s, what="the long job to make a step")
    assert running["status"] == "running" and running["sections"] == 8
    not_ready = requests.get(f"{api.base}/jobs/{long['id']}/video", timeout=10)
    assert not_ready.status_code == 409 and "running" in not_ready.json()["detail"]

    cancelled = requests.delete(f"{api.base}/jobs/{waiting['id']}", timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stopping = requests.delete(f"{api.base}/jobs/{long['id']}", timeout=10)
    assert stopping.status_code == 202 and stopping.json()["cancel_requested"] is True

    final = wait_finished(api.url, long["id"])
    assert final["status"] == "interrupted" and final["sections_done"] < 8
    never = requests.get(f"{api.base}/jobs/{waiting['id']}", timeout=10).json()
    assert never["status"] == "cancelled" and never["started"] is None
    nothing = requests.get(f"{api.base}/jobs/{waiting['id']}/video", timeout=10)
    assert nothing.status_code == 404 and "before it started" in nothing.json()["detail"]
    again = requests.delete(f"{api.base}/jobs/{waiting['id']}", timeout=10)  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_twenty_concurrent_submissions_run_in_order_and_none_is_lost(api):
    count, barrier, responses = 20, threading.Barrier(20), [None] * 20

    def submit(index: int) -> None:
        barrier.wait()
        responses[index] = requests.post(f"{api.base}/jobs", json=job_body(seed=100 + index), timeout=60)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None and r.status_code == 202 for r in responses), [getattr(r, "text", r) for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == count

    def all_finished():
        jobs = [j for j in requests.get(f"{api.base}/jobs", timeout=10).json()["jobs"] if j["id"] in ids]
        return jobs if all(j["status"] in FINISHED for j in jobs) else None

    jobs = wait_until(all_finished, timeout=240, what="20 jobs")  # listed in submission (= run) order
    assert len(jobs) == count and [j["status"] for j in jobs] == ["completed"] * count
    assert [j["created"] for j in jobs] == sorted(j["created"] for j in jobs)
    assert all(a["started"] < b["started"] for a, b in zip(jobs, jobs[1:]))
    assert all(a["finished"] <= b["started"] for a, b in zip(jobs, jobs[1:]))  # one at a time, in order
    assert sorted(j["seed"] for j in jobs) == list(range(100, 120))

    digests = set()
    for job in jobs:
        video = requests.get(api.url + job["video_url"], timeout=30)
        assert video.status_code == 200
        digests.add(hashlib.sha256(video.content).hexdigest())
    assert len(digests) == count  # 20 distinct videos
    on_disk = [p for p in api.host.video_dir().glob("framepack-1[01][0-9].mp4")]
    assert len(on_disk) == count

    frames = requests.get(f"{api.base}/jobs/{jobs[0]['id']}/frames", timeout=10)
    assert frames.status_code == 404 and "save_frames" in frames.json()["detail"]


# ------------------------------------------------------------------------------ bad input

HUGE = b64(png_header(20000, 20000))
MALFORMED = {
    # name: (body changes, or a raw body string, expected loc after "body", words in the message)
    "server lora paths": ({"loras": ["/etc/passwd"]}, ["loras", 0], "not a path"),
    "lora traversal": ({"loras": ["../../x.safetensors:1"]}, ["loras", 0], "not a path"),
    "upscaler path": ({"output": {"upscale": 2, "upscaler": "/tmp/x.safetensors"}}, ["output", "upscaler"],
                      "not a path"),
    "missing image, no blank start": ({"image": None}, ["image"], "blank start"),
    "image not base64": ({"image": "this is not base64 image data!!"}, ["image"], "not valid base64"),
    "image not an image": ({"image": b64(b"hello, I am a text file, not a picture" * 4)}, ["image"],
                           "not a readable image"),
    "image huge dimensions": ({"image": HUGE}, ["image"], "too large"),
    "end image huge (data url)": ({"end_image": data_url(png_header(9000, 9000))}, ["end_image"], "9000x9000 is too large"),
    "image wrong type": ({"image": 12345}, ["image"], "base64 string"),
    "data url not base64": ({"image": "data:image/png,abc"}, ["image"], "base64"),
    "steps wrong type": ({"steps": "many"}, ["steps"], "valid integer"),
    "prompt wrong type": ({"prompt": ["a", "b"]}, ["prompt"], "valid string"),
    "duration wrong type": ({"duration": {"s": 1}}, ["duration"], "valid number"),
    "fps out of range": ({"fps": 1000}, ["fps"], "less than or equal to 240"),
    "resolution not multiple of 16": ({"resolution": 40}, ["resolution"], "multiple of 16"),
    "blank start unknown": ({"image": None, "blank_start": "purple"}, ["blank_start"], "'black'"),
    "unknown codec": ({"output": {"codec": "nope"}}, ["output", "codec"], "unknown video codec 'nope'"),
    "codec container mismatch": ({"output": {"container": "webm"}}, ["output", "container"], "cannot be stored"),
    "codec option unknown": ({"output": {"codec_options": "wobble=3"}}, ["output", "codec_options"], "wobble"),
    "output not an object": ({"output": [1, 2]}, ["output"], "expected an object"),
    "output unknown option": ({"output": {"codex": "libx264"}}, ["output", "codex"], "did you mean 'codec'"),
    "nothing to save": ({"output": {"save_video": False}}, ["output"], "nothing to save"),
    "section syntax: section 0": ({"section_prompts": "0: a quiet lake"}, ["section_prompts"], "no section 0"),
    "section syntax: reversed": ({"section_prompts": "2-1: waves"}, ["section_prompts"], "reversed"),
    "section beyond the video": ({"section_prompts": "5: late"}, ["section_prompts"], "does not exist"),
    "keyframe when": ({"keyframes": [{"image": b64(png_bytes(3)), "when": "9"}]}, ["keyframes", 0, "when"],
                      "does not exist"),
    "keyframe image not base64": ({"keyframes": [{"image": "%%%", "when": "1"}]}, ["keyframes", 0, "image"],
                                  "not valid base64"),
    "keyframes not a list": ({"keyframes": "1"}, ["keyframes"], "valid list"),
    "f1 with end image": ({"variant": "f1", "end_image": b64(png_bytes(2))}, ["end_image"], "original"),
    "unknown field": ({"durration": 2}, ["durration"], "did you mean 'duration'"),
    "output option at top level": ({"codec": "libx264"}, ["codec"], 'under "output"'),
    "not json": ("{\"prompt\": ", [], "not valid JSON"),
    "not an object": ("[1, 2, 3]", [], "JSON object"),
    "empty body": ("", [], "empty"),
    "NaN names its field": ("{\"duration\": NaN}", ["duration"], "finite number"),
    # strict types at the boundary (issue 8, item 5): nothing is coerced
    "steps as text": ({"steps": "8"}, ["steps"], "valid integer"),
    "duration as text": ({"duration": "5"}, ["duration"], "valid number"),
    "teacache as text": ({"teacache": "yes"}, ["teacache"], "valid boolean"),
    "steps as a float": ({"steps": 8.0}, ["steps"], "valid integer"),
    "crf as text": ({"output": {"crf": "16"}}, ["output", "crf"], "valid integer"),
    "fps denormal": ({"fps": 1e-320}, ["fps"], "greater than or equal to 1"),
    "section number past the int limit": ({"section_prompts": "9" * 4301 + ": x"}, ["section_prompts"],
                                          "too long"),
    "images too large together": ({"image": b64(png_header(8000, 8000)), "end_image": b64(png_header(8000, 8000))},
                                  ["end_image"], "too large together"),
    "too many keyframes": ({"keyframes": [{"image": "%%%", "when": str(i + 1)} for i in range(40)]},
                           ["keyframes"], "at most 32"),
    "lone surrogate in the prompt": ({"prompt": "a \ud800 b"}, ["prompt"], "unicode"),
    "lone surrogate in a field name": ({"\ud800": 1}, ["\ud800"], "unknown field"),
    "deeply nested": ("[" * 100000, [], "nested too deeply"),
    "Infinity names its field": ("{\"fps\": Infinity}", ["fps"], "finite number"),
    "integer beyond the int limit": ("{\"steps\": " + "9" * 5000 + "}", ["steps"], "valid integer"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_payloads_get_field_level_422_and_nothing_is_written(api, case):
    change, loc, words = MALFORMED[case]
    before_files, before_jobs = tree(api.host.output_dir), len(api.queue.list())
    if isinstance(change, str):
        response = requests.post(f"{api.base}/jobs", data=change, headers={"content-type": "application/json"},
                                 timeout=30)
    else:
        body = {key: value for key, value in {**job_body(seed=9), **change}.items() if value is not None}
        response = requests.post(f"{api.base}/jobs", json=body, timeout=30)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    matching = [entry for entry in detail if entry["loc"] == ["body", *loc]]
    assert matching, f"no error at {['body', *loc]}: {detail}"
    assert any(words.lower() in entry["msg"].lower() for entry in matching), detail
    assert all(set(entry) == {"loc", "msg", "type"} for entry in detail)  # the input is never echoed back
    assert tree(api.host.output_dir) == before_files and len(api.queue.list()) == before_jobs


def test_every_problem_is_reported_at_once(api):
    body = job_body(steps="x", fps=-1, image="!!", output={"codec": "nope", "crf": 99})
    detail = requests.post(f"{api.base}/jobs", json=body, timeout=30).json()["detail"]
    locs = {tuple(entry["loc"][1:]) for entry in detail}
    assert {("steps",), ("fps",), ("image",), ("output", "codec"), ("output", "crf")} <= locs


def test_body_size_limit_413(api, tiny_model_dir, tmp_path):
    # a declared length over 64 MB is refused before any of the body is read
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as conn:
        conn.sendall(f"POST {API}/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {100 * 1024 * 1024}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert "too large (100.0 MB); the limit is 64 MB" in json.loads(payload)["detail"]

    # a streamed (chunked) body is counted as it arrives: a small limit on a second app, same queue
    small = create_app(api.host, api.queue, ui=False, max_body_bytes=4096)
    with LiveServer(small) as server:
        chunks = (b" " * 1024 for _ in range(8))
        response = requests.post(f"{server.url}{API}/jobs", data=chunks, timeout=30,
                                 headers={"content-type": "application/json"})
        assert response.status_code == 413 and "limit is 0.00390625 MB" in response.json()["detail"]
        fits = requests.post(f"{server.url}{API}/plan", json={"duration": 1}, timeout=30)
        assert fits.status_code == 200


def test_unknown_jobs_are_404_with_a_clear_message(api):
    for method, path in (("get", ""), ("delete", ""), ("get", "/video"), ("get", "/frames"), ("get", "/preview")):
        response = getattr(requests, method)(f"{api.base}/jobs/deadbeef0000{path}", timeout=10)
        assert response.status_code == 404, (method, path)
        assert response.json()["detail"].startswith("no job with id 'deadbeef0000'")


# ------------------------------------------------------------------------------ codecs, plan, docs

def test_codecs_lists_working_encoders(api):
    data = requests.get(f"{api.base}/codecs", timeout=60).json()
    assert "libx264" in data["codecs"] and data["codecs"][-1] == "none"
    assert data["default"] == "libx264" and "mp4" in data["containers"] and data["hardware"] == []


def test_plan_returns_summary_table_and_plan(api):
    response = requests.post(f"{api.base}/plan", json={"duration": 2, "fps": 30, "latent_window_size": 3,
                                                       "prompt": "a cat", "section_prompts": "1: sits\n2-5: jumps",
                                                       "keyframes": ["3", {"when": "1.5s"}]}, timeout=30)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["summary"].startswith("61 frames") and "5 sections" in data["summary"]
    assert [row["number"] for row in data["table"]] == [1, 2, 3, 4, 5]
    assert data["table"][0]["prompt"].endswith("sits") and data["table"][4]["prompt"].endswith("jumps")
    assert data["plan"]["num_sections"] == 5 and data["plan"]["total_frames"] == 61
    assert sorted(row["keyframe"] for row in data["table"] if row["keyframe"]) == [1, 2]

    # the same body as POST /jobs is accepted (images are not needed, nor decoded)
    same = requests.post(f"{api.base}/plan", json=job_body(duration=0.8, image="not decoded here"), timeout=30)
    assert same.status_code == 200 and same.json()["plan"]["num_sections"] == 2


def test_plan_reports_resources_on_the_hosts_machine(api):
    """The tiny model on this CPU: everything in RAM, the model folder's own (tiny) configs."""
    data = requests.post(f"{api.base}/plan", json={"duration": 2, "resolution": 64}, timeout=60).json()
    resources = data["resources"]
    assert {"vram_peak_bytes", "ram_peak_bytes", "disk_bytes", "seconds", "offload", "vae_tiling"} <= set(resources)
    assert (resources["device"], resources["vram_peak_bytes"], resources["offload"]) == ("cpu", 0, "none")
    assert resources["fits"] and resources["refusal"] is None and 0 < resources["ram_peak_bytes"] < 2 * GiB
    more = requests.post(f"{api.base}/plan", json={"duration": 2, "resolution": 64, "output": {"save_frames": True}},
                         timeout=60).json()["resources"]
    assert more["disk_bytes"] > resources["disk_bytes"]  # raw frames are planned too


def test_plan_and_jobs_on_a_small_gpu(api, monkeypatch):
    """The full-size model on a described 12 GiB / 3 GiB GPU: /plan shows the choice or the refusal,
    POST /jobs refuses what does not fit with 422 at the resolution, naming what would fit."""
    from framepack.jobs.resources import Machine

    budget = {"vram": 12 * GiB}
    monkeypatch.setattr(api.host, "resource_machine",
                        lambda variant: Machine(device="cuda", vram_bytes=budget["vram"], ram_bytes=64 * GiB))
    resources = requests.post(f"{api.base}/plan", json={"duration": 5}, timeout=60).json()["resources"]
    assert (resources["offload"], resources["vae_tiling"], resources["fits"]) == ("group", True, True)
    assert resources["vram_peak_bytes"] < 12 * GiB
    budget["vram"] = 3 * GiB
    resources = requests.post(f"{api.base}/plan", json={"duration": 5, "resolution": 960}, timeout=60).json()[
        "resources"]
    assert resources["fits"] is False and "what would fit: resolution" in resources["refusal"]
    response = requests.post(f"{api.base}/jobs", json=job_body(resolution=960), timeout=60)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "resolution"] and "does not fit" in detail[0]["msg"]
    assert "what would fit: resolution" in detail[0]["msg"]


def test_plan_resource_fields_are_validated(api):
    response = requests.post(f"{api.base}/plan", json={"duration": 2, "resolution": "big"}, timeout=30)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "resolution"]


@pytest.mark.parametrize("body, loc, words", [
    ({"duration": 2, "section_prompts": "0: nothing"}, ["section_prompts"], "no section 0"),
    ({"duration": 2, "section_prompts": "1s-0.5s: back"}, ["section_prompts"], "ends before it starts"),
    ({"duration": 1, "latent_window_size": 3, "keyframes": ["9"]}, ["keyframes", 0, "when"], "does not exist"),
    ({"duration": "long"}, ["duration"], "valid number"),
    ({"durration": 2}, ["durration"], "did you mean 'duration'"),
])
def test_plan_errors_are_422(api, body, loc, words):
    response = requests.post(f"{api.base}/plan", json=body, timeout=30)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(entry["loc"] == ["body", *loc] and words in entry["msg"] for entry in detail), detail


def test_openapi_documents_the_routes_and_bodies(api):
    spec = requests.get(f"{api.url}/openapi.json", timeout=30).json()
    paths = spec["paths"]
    assert {"post", "get"} <= set(paths[f"{API}/jobs"]) and "delete" in paths[f"{API}/jobs/{{job_id}}"]
    body = paths[f"{API}/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"image", "end_image", "prompt", "section_prompts", "keyframes", "output"} <= set(body["properties"])
    assert "codec" in body["properties"]["output"]["properties"] and "$defs" not in json.dumps(body)
    assert requests.get(f"{api.url}/docs", timeout=30).status_code == 200
    assert requests.get(api.url + "/", timeout=10).json()["api"] == API_PREFIX  # no tab: a JSON index


def test_register_routes_needs_only_the_fastapi_signature(api):
    calls = []

    def add_api_route(path, endpoint, methods=None, response_model=None, status_code=None):
        calls.append((path, tuple(methods), status_code))

    registered = register_routes(add_api_route, api.host, api.queue, prefix="/x/v2")
    assert len(calls) == len(registered) == 12
    assert ("/x/v2/jobs", ("POST",), 202) in calls and ("/x/v2/jobs/{job_id}", ("DELETE",), 200) in calls
    assert {("/x/v2/jobs/{job_id}/resume", ("POST",), 202), ("/x/v2/jobs/{job_id}/reroll", ("POST",), 202),
            ("/x/v2/extend", ("POST",), 202)} <= set(calls)
    assert all(path.startswith("/x/v2/") for path, _, _ in calls)


def test_server_file_paths_are_never_read_as_images(api, tmp_path):
    secret = tmp_path / "on-the-server.png"
    secret.write_bytes(png_bytes(11))
    for value in (str(secret), f"file://{secret}", "/etc/hostname"):
        response = requests.post(f"{api.base}/jobs", json=job_body(image=value), timeout=30)
        assert response.status_code == 422, value
        assert response.json()["detail"][0]["loc"] == ["body", "image"]
