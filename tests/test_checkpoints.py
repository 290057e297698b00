"""Work folders, the frame log and the checkpoint files, without a model: ownership, the sweep's rule,
atomic writes, exact round trips and every kind of damage refused with a clear error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.errors import InputError, OutputError
from framepack.io.framelog import FrameLog
from framepack.io.workdir import WORK_DIR_NAME, WorkBusy, WorkFolder, live_owner, sweep
from framepack.jobs.checkpoint import (CheckpointError, JobCheckpoints, JobSpec, compact, is_resumable,
                                       sweep_output_folder, write_atomic)
from framepack.jobs.record import JobRecord
from framepack.request.model import build_request
from framepack.request.output import OutputOptions

ROOT = Path(__file__).resolve().parents[1]


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a digest of its bytes: what "nothing changed" compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def in_a_process_that_dies(code: str) -> None:
    """Run `code` in a Python process that ends without cleaning up (as a killed run would)."""
    script = "import os, sys\nfrom pathlib import Path\n" + textwrap.dedent(code) + "\nos._exit(0)\n"
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)


def spec(job_id: str = "job1", **fields) -> JobSpec:
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    request = build_request(image=image, prompt="a fox", resolution=32, steps=2, latent_window_size=3,
                            duration=1.2, seed=9, variant="f1", **fields)
    return JobSpec(job_id, "generate", request, OutputOptions(save_frames=True))


def state(position: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    context = {"variant": "f1", "window": 3, "anchor_strength": 1.0, "generated": 1 + 3 * position,
               "start_latent": torch.randn(1, 4, 1, 4, 4, generator=generator),
               "history": torch.randn(1, 4, 20, 4, 4, generator=generator)}
    assembler = {"overlap": 9, "reverse": False, "emitted": 4 + 12 * max(0, position - 1) if position else 0,
                 "pending": torch.rand(1, 3, 9, 32, 32) if position else None, "spill": None}
    return context, assembler


def saved_job(folder: Path, positions=(0, 1, 2)) -> JobCheckpoints:
    folder.mkdir(parents=True, exist_ok=True)
    checkpoints = JobCheckpoints(folder)
    checkpoints.write_spec(spec(folder.name))
    for position in positions:
        context, assembler = state(position, seed=position)
        checkpoints.save(position, context, assembler, 6 if position else 0, 10 * position, (32, 32))
    return checkpoints


# ------------------------------------------------------------------------------------------ work folders

def test_a_work_folder_is_named_by_its_job_and_says_who_owns_it(tmp_path):
    work = WorkFolder(tmp_path, "abc123")
    assert work.path == tmp_path / WORK_DIR_NAME / "abc123" and live_owner(work.path) == os.getpid()
    with pytest.raises(OutputError, match="already exists"):
        WorkFolder(tmp_path, "abc123")
    with pytest.raises(InputError, match="not a job id"):
        WorkFolder(tmp_path, "../escape")
    (work.path / "keep.bin").write_bytes(b"x")
    work.temp_path(tmp_path / "video.mp4").write_bytes(b"half")
    work.release()  # the job stops: its files stay, nobody owns it
    assert live_owner(work.path) is None and [p.name for p in work.path.iterdir()] == ["keep.bin"]
    again = WorkFolder.claim(work.path)
    assert live_owner(again.path) == os.getpid()
    again.close()
    assert not (tmp_path / WORK_DIR_NAME).exists()


def test_a_folder_owned_by_a_live_process_cannot_be_claimed_and_is_never_swept(tmp_path):
    ready = tmp_path / "ready"
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from framepack.io.workdir import WorkFolder
        WorkFolder({str(tmp_path)!r}, "busy")
        Path({str(ready)!r}).write_text("1")
        time.sleep(60)
        """)], cwd=ROOT)
    try:
        for _ in range(600):
            if ready.exists():
                break
            owner.poll()
            assert owner.returncode is None
            import time
            time.sleep(0.05)
        folder = tmp_path / WORK_DIR_NAME / "busy"
        assert live_owner(folder) == owner.pid
        with pytest.raises(WorkBusy, match=f"pid {owner.pid}"):
            WorkFolder.claim(folder)
        assert sweep(tmp_path, lambda path: False).removed == [] and folder.is_dir()
        assert [p.name for p in folder.iterdir()] == [f"owner-{owner.pid}-{p.name.split('-')[-1]}"
                                                      for p in folder.iterdir()]  # our claim was withdrawn
    finally:
        owner.kill()
        owner.wait()
    assert sweep(tmp_path, lambda path: False).removed == [folder]  # its owner is gone now


def test_the_sweep_keeps_resumable_folders_without_their_unfinished_files_and_removes_the_rest(tmp_path):
    in_a_process_that_dies(f"""
        from framepack.io.workdir import WorkFolder
        from framepack.jobs.checkpoint import JobCheckpoints
        out = {str(tmp_path)!r}
        dead = WorkFolder(out, "nocheckpoint")
        (dead.path / "framepack-spill-x.raw").write_bytes(b"frames")
        kept = WorkFolder(out, "job1")
        (kept.path / "video.mp4.partial-1234.mp4").write_bytes(b"half a video")
        (kept.path / "sections").mkdir()
        (kept.path / "sections" / "000001.safetensors.tmp-99").write_bytes(b"half a checkpoint")
        staging = Path(out) / ".framepack-work" / f".new-{{os.getpid()}}-1-ab"
        staging.mkdir()
    """)
    saved_job(tmp_path / WORK_DIR_NAME / "job1")
    (tmp_path / WORK_DIR_NAME / "notours").mkdir()  # no owner file, no checkpoint: left by nobody we know
    (tmp_path / WORK_DIR_NAME / "notours.txt").write_text("a file")
    result = sweep_output_folder(tmp_path)
    root = tmp_path / WORK_DIR_NAME
    assert result.resumable == [root / "job1"]
    assert sorted(p.name for p in result.removed) == sorted(["nocheckpoint", "notours", next(
        p.name for p in result.removed if p.name.startswith(".new-"))])
    assert sorted(p.name for p in root.iterdir()) == ["job1", "notours.txt"]
    left = sorted(str(p.relative_to(root / "job1")) for p in (root / "job1").rglob("*"))
    assert left == ["sections", "sections/000000.safetensors", "sections/000001.safetensors",
                    "sections/000002.safetensors", "spec.json"]  # no partial video, no half checkpoint, no owner


def test_the_sweep_never_follows_a_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    (tmp_path / "out" / WORK_DIR_NAME).mkdir(parents=True)
    (tmp_path / "out" / WORK_DIR_NAME / "link").symlink_to(elsewhere)
    sweep_output_folder(tmp_path / "out")
    assert (elsewhere / "precious.txt").read_text() == "keep me"


# -------------------------------------------------------------------------------------------- frame log

def test_the_frame_log_reopens_at_the_count_a_checkpoint_recorded(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (7, 4, 6, 3), dtype=np.uint8)
    log = FrameLog(tmp_path / "frames.log", 4, 6)
    log.append(frames[:5])
    assert log.sync() == 5
    log.append(frames[5:])  # written after the checkpoint by a process that then died
    log.close()
    reopened = FrameLog.reopen(tmp_path / "frames.log", 4, 6, 5)
    assert os.path.getsize(tmp_path / "frames.log") == frames[:5].nbytes
    reopened.append(frames[6:])
    np.testing.assert_array_equal(np.concatenate(list(reopened.iter_batches(2))), np.concatenate([frames[:5], frames[6:]]))
    reopened.close()
    with pytest.raises(OutputError, match="cut short"):
        FrameLog.reopen(tmp_path / "frames.log", 4, 6, 9)
    (tmp_path / "link.log").symlink_to(tmp_path / "frames.log")
    with pytest.raises(OutputError, match="cannot reopen"):
        FrameLog.reopen(tmp_path / "link.log", 4, 6, 1)
    with pytest.raises(OutputError, match="uint8"):
        FrameLog(tmp_path / "other.log", 4, 6).append(frames[:, :, :5])


# ---------------------------------------------------------------------------------------- checkpoint files

def test_a_section_checkpoint_round_trips_exactly_and_leaves_the_pending_frames_out(tmp_path):
    checkpoints = saved_job(tmp_path / "job1")
    assert checkpoints.positions() == [0, 1, 2] and is_resumable(checkpoints.folder)
    for position in (0, 1, 2):
        context, assembler = state(position, seed=position)
        loaded = checkpoints.at(position)
        assert loaded.position == position and loaded.log_frames == 10 * position and loaded.frame_size == (32, 32)
        for key in ("start_latent", "history"):
            assert torch.equal(loaded.context_state[key], context[key])
        assert loaded.assembler_state["pending"] is None  # decoded again from the context
        assert loaded.assembler_state["emitted"] == assembler["emitted"]
    assert checkpoints.latest().position == 2
    read = checkpoints.read_spec()
    assert read.request.to_dict() == spec().request.to_dict() and read.options == OutputOptions(save_frames=True)


def test_before_the_first_section_a_continued_clips_pending_frames_are_kept(tmp_path):
    checkpoints = JobCheckpoints(tmp_path)
    checkpoints.write_spec(spec())
    context, assembler = state(0)
    pending = torch.from_numpy(np.arange(9 * 32 * 32 * 3, dtype=np.float32).reshape(1, 3, 9, 32, 32) % 255 / 127.5 - 1)
    checkpoints.save(0, context, {**assembler, "pending": pending}, 0, 30, (32, 32))
    assert torch.equal(checkpoints.at(0).assembler_state["pending"], pending)


def test_tensors_are_stored_in_the_smallest_exact_type():
    exact = torch.randn(1000).to(torch.bfloat16).float()
    small, name = compact(exact)
    assert name == "bfloat16" and torch.equal(small.float(), exact)
    halves = torch.tensor([0.1, 65504.0], dtype=torch.float16).float()
    assert compact(halves)[1] == "float16"
    full = torch.randn(1000)
    assert compact(full)[1] == "float32" and torch.equal(compact(full)[0], full)


def test_an_atomic_write_that_fails_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.bin"
    write_atomic(target, b"previous checkpoint")

    def no_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_disk)
    with pytest.raises(OutputError, match="No space left"):
        write_atomic(target, b"next checkpoint")
    assert target.read_bytes() == b"previous checkpoint" and [p.name for p in tmp_path.iterdir()] == [target.name]


def corrupt_garbage(folder: Path) -> None:
    (folder / "sections" / "000002.safetensors").write_bytes(os.urandom(500))


def corrupt_truncated(folder: Path) -> None:
    path = folder / "sections" / "000002.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def corrupt_spec_changed(folder: Path) -> None:
    text = (folder / "spec.json").read_text()
    (folder / "spec.json").write_text(text.replace('"a fox"', '"a cat"'))


def corrupt_version(folder: Path) -> None:
    text = (folder / "spec.json").read_text()
    (folder / "spec.json").write_text(text.replace('"version":1', '"version":99'))


def corrupt_request(folder: Path) -> None:
    text = (folder / "spec.json").read_text()
    (folder / "spec.json").write_text(text.replace('"steps":2', '"steps":-5'))


def missing_spec(folder: Path) -> None:
    (folder / "spec.json").unlink()


def missing_sections(folder: Path) -> None:
    for path in (folder / "sections").iterdir():
        path.unlink()


@pytest.mark.parametrize("damage, message", [
    (corrupt_garbage, "000002.safetensors is damaged"),
    (corrupt_truncated, "000002.safetensors is damaged"),
    (corrupt_spec_changed, "belongs to other settings"),
    (corrupt_version, "format version 99"),
    (corrupt_request, "saved settings are not valid: .*steps"),
    (missing_spec, "spec.json is missing"),
    (missing_sections, "holds no checkpoint"),
])
def test_a_damaged_or_missing_checkpoint_is_a_clear_error_and_changes_nothing(tmp_path, damage, message):
    checkpoints = saved_job(tmp_path / "job1")
    damage(checkpoints.folder)
    before = files(checkpoints.folder)
    with pytest.raises(CheckpointError, match=message):
        fresh = JobCheckpoints(checkpoints.folder)
        fresh.read_spec()
        fresh.latest()
    assert files(checkpoints.folder) == before


def test_a_record_is_saved_beside_the_checkpoints(tmp_path):
    checkpoints = saved_job(tmp_path / "job1")
    record = JobRecord(id="job1", seed=9, sections=3, sections_done=2)
    checkpoints.write_record(record)
    assert checkpoints.read_record() == record
    (checkpoints.folder / "job.json").write_text("{broken")
    assert checkpoints.read_record() is None  # a broken record only loses the history, never the checkpoint
