"""`framepack_cli.py serve`: help, argument errors, and a real server process stopped with Ctrl-C."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import requests

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "framepack_cli.py")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def run(*args, timeout=60):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_help():
    result = run("serve", "--help")
    assert result.returncode == 0, result.stderr
    for words in ("--host", "127.0.0.1", "--port", "7870", "--model", "--output-dir", "--no-ui", "/framepack/v1"):
        assert words in result.stdout, words
    assert "serve" in run("--help").stdout


def test_serve_refuses_a_bad_port():
    result = run("serve", "--port", "70000")
    assert result.returncode == 2 and "port must be between 1 and 65535" in result.stderr


def test_serve_answers_and_stops_cleanly_on_ctrl_c(tiny_model_dir, tmp_path):
    port = free_port()
    process = subprocess.Popen([*CLI, "serve", "--no-ui", "--port", str(port), "--model", str(tiny_model_dir),
                                "--output-dir", str(tmp_path), "--log-level", "info"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                response = requests.get(f"{base}/framepack/v1/codecs", timeout=30)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start in 120 s"
                time.sleep(0.2)
        assert response.status_code == 200 and "libx264" in response.json()["codecs"]
        assert requests.get(base + "/", timeout=10).json()["api"] == "/framepack/v1"

        # Ctrl-C while a job runs and another waits: the running one stops and keeps its partial video
        image = base64.b64encode((ROOT / "assets" / "demo.png").read_bytes()).decode()
        body = {"image": image, "resolution": 32, "steps": 2, "latent_window_size": 3, "teacache": False,
                "variant": "f1", "duration": 12.0, "seed": 3}  # 30 sections: far longer than a clean shutdown
        running = requests.post(f"{base}/framepack/v1/jobs", json=body, timeout=30).json()["id"]
        waiting = requests.post(f"{base}/framepack/v1/jobs", json={**body, "seed": 4}, timeout=30).json()["id"]
        deadline = time.monotonic() + 120
        while requests.get(f"{base}/framepack/v1/jobs/{running}", timeout=10).json()["sections_done"] < 1:
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.05)
        assert waiting
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert f"API http://127.0.0.1:{port}/framepack/v1" in stderr and "FramePack: stopped" in stderr
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["framepack-3.mp4"], files  # partial video of the stopped job, no temp files, nothing else
    assert f"FramePack job {running} started" in stderr  # the job lines the server logs (issue 14)
    assert f"FramePack job {running} interrupted" in stderr and f"video {tmp_path / 'framepack-3.mp4'}" in stderr
    with av.open(str(tmp_path / "framepack-3.mp4")) as container:  # straight into --output-dir, as generate --out
        assert 13 <= sum(1 for _ in container.decode(video=0)) < 361  # at least one section, not all thirty
