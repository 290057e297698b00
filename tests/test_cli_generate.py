"""`framepack_cli.py generate` through a real subprocess on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "framepack_cli.py"
FAST = ["--resolution", "32", "--steps", "2", "--latent-window", "3", "--duration", "0.8", "--seed", "3"]


def run_cli(*args, env=None, timeout=240):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=environment, cwd=ROOT)


def test_generate_writes_a_playable_video_and_raw_frames(tiny_model_dir, tmp_path):
    result = run_cli("generate", "--model", "tiny", "--image", ROOT / "assets" / "demo.png", "--prompt", "a boat",
                     *FAST, "--save-frames", "--out", tmp_path, "--json",
                     env={"FRAMEPACK_TINY_DIR": str(tiny_model_dir)})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["frame_count"] == 25 and summary["seed"] == 3
    info = run_cli("info", summary["video"], "--json")
    assert info.returncode == 0, info.stderr
    details = json.loads(info.stdout)
    assert details["frames"] == 25 and details["settings"]["settings"]["prompt"] == "a boat"
    assert Path(summary["frames"]).stat().st_size > 25 * 32 * 32 * 3  # 3:2 image -> 32x32 bucket at this size


def test_generate_with_section_prompts_file_and_keyframe(tiny_model_dir, tmp_path):
    schedule = tmp_path / "sections.txt"
    schedule.write_text("1: rises\n2: falls\n")
    result = run_cli("generate", "--model", tiny_model_dir, "--image", ROOT / "assets" / "demo.png", *FAST,
                     "--section-prompts", schedule, "--keyframe", f"2={ROOT / 'assets' / 'demo.png'}",
                     "--codec", "none", "--save-frames", "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["video"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "missing.png"], "file not found"),
        (["--image", "assets/demo.png", "--duration", "0"], "duration"),
        (["--image", "assets/demo.png", "--variant", "f1", "--end-image", "assets/demo.png"], "end image needs"),
        (["--image", "assets/demo.png", "--codec", "nope264"], "unknown video codec"),
        (["--image", "assets/demo.png", "--section-prompts", "nowhere.txt"], "cannot read"),
        (["--image", "assets/demo.png", "--keyframe", "oops"], "WHEN=IMAGE"),
        ([], "blank start"),
        (["--image", "assets/demo.png", "--model", "/no/such/model"], "/no/such/model"),
        (["--image", "assets/demo.png", "--lora", "missing.safetensors:0.5"], "missing.safetensors"),
        (["--image", "assets/demo.png", "--quantization", "int3"], "--quantization 'int3'"),
        (["--image", "assets/demo.png", "--offload", "sometimes"], "--offload 'sometimes'"),
    ],
)
def test_generate_bad_input_exits_2_without_traceback(args, message):
    result = run_cli("generate", *args, "--resolution", "32", "--steps", "1", "--out", "/tmp/framepack-never")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
