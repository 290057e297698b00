"""Ctrl-C and kills (issue 8, items 7, 8 and 10): the real CLI in a subprocess, signals sent by the test.

A process started from a non-interactive shell ignores SIGINT, so each CLI is started with the
default SIGINT handler restored; PYTHONUNBUFFERED lets the test read progress lines as they come.

The rule since jobs have checkpoints (issue 11): nothing is written to the system temp folder,
nothing half-written ever has a final name, and what an interrupted run leaves is its own work
folder holding a valid checkpoint (resumable, never deleted automatically, its unfinished files
removed); an unowned work folder without a valid checkpoint is removed by the next run.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

import framepack_cli
from framepack.app import create_app
from framepack.host.standalone import StandaloneHost
from framepack.io.raw import RawFrames, RawFramesWriter, save_frames
from framepack.io.workdir import STALE_MARKERS, WORK_DIR_NAME
from framepack.jobs.checkpoint import is_resumable

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "demo.png"
LONG_RUN = ["--resolution", "32", "--steps", "4", "--latent-window", "3", "--duration", "6", "--seed", "5",
            "--save-frames", "--json"]


class Cli:
    """`framepack_cli.py generate` in a subprocess whose stderr lines arrive on a queue."""

    def __init__(self, tiny_model_dir, tmp_path: Path, *args: str):
        self.system_temp = tmp_path / "system-temp"
        self.system_temp.mkdir()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(self.system_temp),
               "FRAMEPACK_TINY_DIR": str(tiny_model_dir)}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "framepack_cli.py"), "generate", "--model", "tiny", "--image", str(IMAGE),
             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.5):
                    return
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.stderr)
        raise AssertionError(f"no {text!r} in {timeout} s: {''.join(self.stderr)}")

    def finish(self, timeout: float = 120.0) -> tuple[int, str]:
        stdout = self.process.stdout.read()
        self.process.wait(timeout)
        time.sleep(0.1)  # the reader thread drains stderr
        return self.process.returncode, stdout


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def left_outside_work(folder: Path) -> list[str]:
    """Files outside the work folder, besides the job store a server keeps there (issue 15)."""
    from framepack.jobs.store import STORE_NAME

    return [name for name in files_in(folder) if not name.startswith((WORK_DIR_NAME, STORE_NAME))]


def assert_only_a_resumable_checkpoint(out: Path) -> Path:
    """What an interrupted run may leave besides its published outputs: one resumable work folder."""
    jobs = list((out / WORK_DIR_NAME).iterdir())
    assert len(jobs) == 1 and is_resumable(jobs[0]), files_in(out)
    unfinished = [name for name in files_in(jobs[0]) if any(marker in name for marker in STALE_MARKERS)]
    assert unfinished == [], unfinished
    return jobs[0]


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_first_ctrl_c_keeps_a_valid_partial_video_and_exits_130(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    cli = Cli(tiny_model_dir, tmp_path, *LONG_RUN, "--out", str(out))
    cli.wait_for("section 2/15 done")
    cli.process.send_signal(signal.SIGINT)
    code, stdout = cli.finish()
    stderr = "".join(cli.stderr)
    assert code == 130, stderr
    assert "Traceback" not in stderr and "terminate called" not in stderr and "KeyError" not in stderr
    summary = json.loads(stdout)
    assert summary["status"] == "interrupted" and 12 < summary["frame_count"] < 15 * 12
    video, frames = Path(summary["video"]), Path(summary["frames"])
    assert count_frames(video) == summary["frame_count"]  # a finished, playable file
    with RawFrames(frames) as raw:
        assert len(raw) == summary["frame_count"] and raw.settings["seed"] == 5
    assert left_outside_work(out) == sorted([video.name, frames.name])  # no partial file with a final name
    work = assert_only_a_resumable_checkpoint(out)  # the stopped job can be resumed
    assert summary["resumable"] and summary["checkpoint"] == str(work)
    assert files_in(cli.system_temp) == []


def test_second_ctrl_c_quits_at_once_and_leaves_no_temp_files(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    # interpolation makes the stop's final write long (flow frames), so the second Ctrl-C lands in it
    cli = Cli(tiny_model_dir, tmp_path, *LONG_RUN, "--interpolate", "6", "--fps", "60", "--out", str(out))
    cli.wait_for("section 1/")
    cli.process.send_signal(signal.SIGINT)
    cli.wait_for("stopping after the current step")
    cli.process.send_signal(signal.SIGINT)
    code, stdout = cli.finish(timeout=30)
    stderr = "".join(cli.stderr)
    assert code == 130, stderr
    assert "interrupted again" in stderr and "Traceback" not in stderr and stdout == ""
    # Usually the second Ctrl-C lands in the stop's final write and nothing is published. On a fast
    # machine the write can finish first: then what has a final name must be whole, never half-written.
    for name in left_outside_work(out):
        path = out / name
        if path.suffix == ".mp4":
            assert count_frames(path) > 12, name
        else:
            with RawFrames(path) as raw:
                assert len(raw) > 12 and raw.settings["seed"] == 5, name
    work = assert_only_a_resumable_checkpoint(out)  # the sections already made are kept to resume
    assert f"resume with: framepack_cli.py resume {work}" in stderr
    assert files_in(cli.system_temp) == []
    assert framepack_cli.main(["resume", str(out), "--discard", "--model", str(tiny_model_dir)]) == 0
    assert files_in(out) == []


@pytest.mark.parametrize("variant, after", [("original", "section 2/"), ("f1", "section 2/")])
def test_a_killed_run_leaves_its_files_only_in_its_work_folder_and_the_next_start_keeps_only_its_checkpoint(
        tiny_model_dir, tmp_path, variant, after):
    out = tmp_path / "outputs"  # where `serve --output-dir outputs` writes too
    cli = Cli(tiny_model_dir, tmp_path, *LONG_RUN, "--variant", variant, "--out", str(out))
    cli.wait_for(after)
    cli.process.send_signal(signal.SIGKILL)
    cli.process.wait(30)
    assert files_in(cli.system_temp) == []  # no framepack-spill-*.raw in the system temp folder
    left = files_in(out)
    assert left and all(name.startswith(WORK_DIR_NAME) for name in left), left
    spilled_or_partial = [name for name in left if "framepack-spill-" in name or ".partial-" in name]
    assert spilled_or_partial, left

    if variant == "original":  # a server start tidies what the killed run left, and lists the job
        app = create_app(StandaloneHost(output_dir=out, videos=out, model=str(tiny_model_dir)), ui=False)
        jobs = app.state.framepack_queue.list()
        assert [(job.status, job.record.resumable) for job in jobs] == [("interrupted", True)]
        app.state.framepack_queue.shutdown()
    else:  # the next run in that folder tidies it
        clip = save_frames(tmp_path / "clip.safetensors", np.zeros((2, 16, 16, 3), np.uint8))
        assert framepack_cli.main(["export", str(clip), "--out", str(out), "--quiet"]) == 0
    exported = ["clip_frames", "clip_frames/frame_000001.png", "clip_frames/frame_000002.png"]
    assert left_outside_work(out) == ([] if variant == "original" else exported)
    assert_only_a_resumable_checkpoint(out)  # the spill / partial files are gone, the checkpoint stays


# ------------------------------------------------------------------------------ item 10

@pytest.fixture
def empty_raw(tmp_path) -> Path:
    with RawFramesWriter(tmp_path / "empty.safetensors", 16, 16, {"fps": 30}) as raw:
        pass
    return raw.path


@pytest.mark.parametrize("command, extra", [
    ("export", []), ("encode", []), ("interpolate", ["--factor", "1"]),
])
def test_a_file_without_frames_is_refused_before_anything_is_created(empty_raw, tmp_path, capsys, command, extra):
    target = tmp_path / "made"
    out = target if command == "export" else target / "x.safetensors" if command == "interpolate" else target
    if command != "export":
        target.mkdir()
    assert framepack_cli.main([command, str(empty_raw), "--out", str(out), *extra]) == 2
    assert "holds no frames" in capsys.readouterr().err
    assert not target.exists() or files_in(target) == []


def test_info_says_a_file_holds_no_frames(empty_raw, capsys):
    assert framepack_cli.main(["info", str(empty_raw)]) == 2
    captured = capsys.readouterr()
    assert "frames:    0" in captured.out and "holds no frames" in captured.out + captured.err
    assert framepack_cli.main(["info", str(empty_raw), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["problem"] == "the file holds no frames"
