"""Resume, re-roll and extend through `framepack_cli.py`, end to end on the tiny model (issue 11).

- a real `generate` subprocess is SIGKILLed in the middle of a section, after checkpoints were
  saved, and `resume` finishes it: its raw frames equal an uninterrupted run's, bit for bit, for
  both variants;
- `reroll --from-section N` keeps the frames of the sections the model made before N and changes
  the rest, in a new file;
- `extend` continues a generated video and a video written here with PyAV: input frames + planned
  new frames, the input's frames first (exact in the raw frames, within codec tolerance in the
  video), and a clip of a size the model does not generate is fitted to a bucket and says so;
- a damaged or missing checkpoint is a clear error (exit 2) and nothing is overwritten.

The uninterrupted run of each variant keeps its checkpoints (`--keep-checkpoints`): it is the
reference of the resume test and the source of the re-roll and extend tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

import framepack_cli
from framepack.io.raw import RawFrames
from framepack.io.workdir import WORK_DIR_NAME
from framepack.jobs.checkpoint import JobCheckpoints
from framepack.jobs.extend import new_frames
from framepack.request.model import build_request
from test_cli_interrupts import IMAGE, Cli, count_frames

RUN = ["--resolution", "32", "--steps", "2", "--latent-window", "3", "--duration", "1.6", "--seed", "5",
       "--save-frames", "--json"]
"""Four sections of 12 frames (49 frames) at 32 px, two steps: seconds per run on the tiny model."""
SECTIONS, FRAMES, OVERLAP = 4, 49, 4 * 3 - 3
KILL_RUN = ["--resolution", "64", "--steps", "2", "--latent-window", "3", "--duration", "3.2", "--seed", "5",
            "--save-frames", "--json"]
"""The killed run: eight sections at 64 px, so that the kill after section 2 lands with six sections
(about two seconds) still to go; four 32 px sections left ~0.15 s, which a busy machine can miss."""
KILL_SECTIONS, KILL_FRAMES = 8, 97


def cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Run framepack_cli.py in this process: (exit code, its JSON summary or None, stderr)."""
    code = framepack_cli.main(list(argv))
    captured = capsys.readouterr()
    try:
        summary = json.loads(captured.out)
    except ValueError:
        summary = None
    return code, summary, captured.err


def raw_frames(path: str | Path) -> np.ndarray:
    with RawFrames(path) as raw:
        return np.concatenate(list(raw.iter_batches(64)))


def video_frames(path: str | Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", params=["original", "f1"])
def reference(request, tiny_model_dir, tmp_path_factory):
    """An uninterrupted run of each variant, its checkpoints kept."""
    return uninterrupted(request.param, RUN, tiny_model_dir, tmp_path_factory.mktemp(f"reference-{request.param}"))


def uninterrupted(variant: str, run: list[str], tiny_model_dir, out: Path) -> SimpleNamespace:
    code = framepack_cli.main(["generate", "--model", str(tiny_model_dir), "--image", str(IMAGE), *run,
                               "--variant", variant, "--keep-checkpoints", "--out", str(out)])
    assert code == 0
    work = out / WORK_DIR_NAME
    (folder,) = list(work.iterdir())
    record = JobCheckpoints(folder).read_record()
    assert record.status == "completed" and not record.resumable
    return SimpleNamespace(variant=variant, out=out, folder=folder, frames=raw_frames(record.outputs["frames"]),
                           video=Path(record.outputs["video"]), raw=Path(record.outputs["frames"]), id=record.id)


# ------------------------------------------------------------------------------------------ resume

@pytest.mark.parametrize("variant", ["original", "f1"])
def test_a_killed_generate_resumed_gives_the_frames_of_an_uninterrupted_run(variant, tiny_model_dir, tmp_path,
                                                                           capsys):
    reference = uninterrupted(variant, KILL_RUN, tiny_model_dir, tmp_path / "reference")
    capsys.readouterr()  # its summary: the resume's is read below
    out = tmp_path / "out"
    run = Cli(tiny_model_dir, tmp_path, *KILL_RUN, "--variant", variant, "--out", str(out))
    run.wait_for(f"section 2/{KILL_SECTIONS} done")  # checkpoints after 0, 1 and 2 sections are on disk
    run.process.send_signal(signal.SIGKILL)  # now in the middle of section 3
    assert run.process.wait(30) == -signal.SIGKILL
    (folder,) = list((out / WORK_DIR_NAME).iterdir())
    done = JobCheckpoints(folder).positions()
    assert done[:3] == [0, 1, 2] and done[-1] < KILL_SECTIONS, done  # killed before its end
    assert not list(out.glob("*.safetensors")) and not list(out.glob("*.mp4"))  # nothing published

    code, summary, err = cli(capsys, "resume", str(out), "--model", str(tiny_model_dir), "--json")
    assert code == 0, err
    assert summary["status"] == "completed" and summary["id"] == folder.name and summary["frame_count"] == KILL_FRAMES
    resumed = raw_frames(summary["frames"])
    np.testing.assert_array_equal(resumed, reference.frames)  # bit-identical on CPU
    assert count_frames(Path(summary["video"])) == KILL_FRAMES
    assert not (out / WORK_DIR_NAME).exists()  # a completed job's checkpoints are removed

    code, _, err = cli(capsys, "resume", str(out), "--model", str(tiny_model_dir))
    assert code == 2 and "holds no interrupted job" in err


# ------------------------------------------------------------------------------------------ re-roll

def test_a_reroll_keeps_the_sections_before_n_and_changes_the_rest_in_a_new_file(reference, tiny_model_dir,
                                                                                 capsys):
    before = reference.raw.read_bytes()
    from_section = 3
    code, summary, err = cli(capsys, "reroll", str(reference.folder), "--from-section", str(from_section),
                             "--seed", "77", "--model", str(tiny_model_dir), "--json")
    assert code == 0, err
    assert summary["status"] == "completed" and summary["kind"] == "reroll" and summary["seed"] == 77
    assert Path(summary["frames"]) != reference.raw and "-from3" in Path(summary["frames"]).name
    assert reference.raw.read_bytes() == before  # the original is untouched
    rerolled = raw_frames(summary["frames"])
    assert rerolled.shape == reference.frames.shape

    plan = build_request(image=np.zeros((32, 32, 3), np.uint8), resolution=32, steps=2, latent_window_size=3,
                         duration=1.6, variant=reference.variant).plan()
    section = plan.sections[from_section - 1]
    if reference.variant == "f1":  # sections 1..N-1 were made first: kept up to the seam with section N
        kept, changed = slice(0, section.frame_start - OVERLAP), slice(section.frame_start, FRAMES)
        assert summary["source"]["reused_sections"] == [1, 2]
    else:  # the original model makes the end first: sections N+1..last are kept
        kept, changed = slice(section.frame_end + OVERLAP, FRAMES), slice(0, section.frame_end)
        assert summary["source"]["reused_sections"] == [4]
    np.testing.assert_array_equal(rerolled[kept], reference.frames[kept])
    different = (rerolled[changed] != reference.frames[changed]).any(axis=(1, 2, 3))
    assert different.all(), np.flatnonzero(~different)


def test_a_reroll_from_a_section_the_job_never_reached_is_refused(reference, tiny_model_dir, capsys):
    code, _, err = cli(capsys, "reroll", str(reference.folder), "--from-section", "9", "--model", str(tiny_model_dir))
    assert code == 2 and "from_section" in err.replace("-", "_") and "1 to 4" in err


# ------------------------------------------------------------------------------------------ extend

def test_extending_a_generated_video_adds_the_planned_frames_after_its_own(reference, tiny_model_dir, tmp_path,
                                                                          capsys):
    if reference.variant == "original":
        pytest.skip("one generated clip is enough; the F1 run is extended (the original model bridges, below)")
    code, summary, err = cli(capsys, "extend", str(reference.video), "--duration", "0.8", "--steps", "2",
                             "--latent-window", "3", "--seed", "3", "--model", str(tiny_model_dir), "--save-frames", "--out", str(tmp_path),
                             "--json")
    assert code == 0, err
    plan = build_request(image=np.zeros((32, 32, 3), np.uint8), resolution=32, steps=2, latent_window_size=3,
                         duration=0.8, fps=30, variant="f1").plan()
    expected = FRAMES + new_frames(plan)
    assert summary["frame_count"] == expected and summary["kind"] == "extend"
    assert summary["source"]["fitted"] is None  # a FramePack video already has a bucket's size
    extended, original = raw_frames(summary["frames"]), video_frames(reference.video)
    assert len(extended) == expected == count_frames(Path(summary["video"]))
    sent = FRAMES - OVERLAP  # the clip's last overlap frames are cross-faded with the first new section
    np.testing.assert_array_equal(extended[:sent], original[:sent])  # the input's frames, exactly as decoded
    encoded = video_frames(summary["video"])
    assert np.abs(encoded[:sent].astype(int) - original[:sent].astype(int)).mean() < 8  # one more lossy encode


def gradient_clip(path: Path, width: int, height: int, frames: int, fps: int = 24) -> np.ndarray:
    """A smooth moving gradient (what a codec keeps well), written with PyAV; returns what decodes."""
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        for index in range(frames):
            image = np.stack([(x * 4 + index * 3) % 256, (y * 4) % 256, np.full_like(x, 128 + index)], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return video_frames(path)


@pytest.mark.parametrize("variant", ["f1", "original"])
def test_extending_an_external_video(tiny_model_dir, tmp_path, capsys, variant):
    clip = tmp_path / "clip.mp4"
    decoded = gradient_clip(clip, 32, 32, 20)
    args = ["extend", str(clip), "--duration", "0.5", "--steps", "2", "--latent-window", "3", "--seed", "1",
            "--model", str(tiny_model_dir), "--save-frames", "--out", str(tmp_path / "out"), "--json"]
    if variant == "original":  # bridges the clip's last frame to an end image
        args += ["--end-image", str(IMAGE)]
    code, summary, err = cli(capsys, *args)
    assert code == 0, err
    plan = build_request(image=np.zeros((32, 32, 3), np.uint8), resolution=32, steps=2, latent_window_size=3,
                         duration=0.5, fps=24, variant=variant).plan()
    assert summary["frame_count"] == 20 + new_frames(plan) == count_frames(Path(summary["video"]))
    extended = raw_frames(summary["frames"])
    sent = 20 - OVERLAP if variant == "f1" else 20
    np.testing.assert_array_equal(extended[:sent], decoded[:sent])
    encoded = video_frames(summary["video"])
    assert np.abs(encoded[:sent].astype(int) - decoded[:sent].astype(int)).mean() < 8
    with av.open(summary["video"]) as container:
        assert container.streams.video[0].average_rate == 24  # the clip's fps


def test_a_clip_of_another_size_is_fitted_to_a_bucket_and_the_command_says_so(tiny_model_dir, tmp_path, capsys):
    clip = tmp_path / "odd.mp4"
    gradient_clip(clip, 50, 30, 12)
    code, summary, err = cli(capsys, "extend", str(clip), "--duration", "0.4", "--steps", "2", "--latent-window", "3",
                             "--resolution", "32", "--model", str(tiny_model_dir), "--out", str(tmp_path), "--json")
    assert code == 0, err
    fitted = summary["source"]["fitted"]
    assert "50x30" in fitted and "resized and cropped" in fitted
    frames = video_frames(summary["video"])
    assert frames.shape[1:3] != (30, 50) and frames.shape[1] % 16 == 0 and frames.shape[2] % 16 == 0

    code, _, err = cli(capsys, "extend", str(clip), "--duration", "0.4", "--steps", "2", "--latent-window", "3",
                       "--resolution", "32", "--model", str(tiny_model_dir), "--out", str(tmp_path / "text"))
    assert code == 0 and "note: the clip's frames are 50x30" in err


def test_extend_refuses_what_is_not_a_video(tiny_model_dir, tmp_path, capsys):
    playlist = tmp_path / "list.mp4"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    code, _, err = cli(capsys, "extend", str(playlist), "--duration", "1", "--model", str(tiny_model_dir),
                       "--out", str(tmp_path / "out"))
    assert code == 2 and "not a video this can continue" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*"))
    code, _, err = cli(capsys, "extend", str(tmp_path / "missing.mp4"), "--duration", "1", "--model",
                       str(tiny_model_dir))
    assert code == 2 and "no such file" in err


# ------------------------------------------------------------------------------------------ damage

def damage_sections(folder: Path) -> str:
    for section in (folder / "sections").iterdir():
        section.write_bytes(section.read_bytes()[:-64])
    return ".safetensors is damaged"


def remove_spec(folder: Path) -> str:
    (folder / "spec.json").unlink()
    return "spec.json is missing"


def change_spec(folder: Path) -> str:
    spec = folder / "spec.json"
    spec.write_text(spec.read_text().replace('"prompt":"', '"prompt":"not the same '))
    return "belongs to other settings"


def remove_sections(folder: Path) -> str:
    for section in (folder / "sections").iterdir():
        section.unlink()
    return "no checkpoint"


@pytest.mark.parametrize("damage", [damage_sections, remove_spec, change_spec, remove_sections])
def test_a_damaged_checkpoint_is_a_clear_error_and_nothing_is_overwritten(reference, tiny_model_dir, tmp_path, capsys,
                                                                          damage):
    out = tmp_path / "out"
    shutil.copytree(reference.out, out, symlinks=True)
    folder = out / WORK_DIR_NAME / reference.folder.name
    record_path = folder / "job.json"  # as if the job had been stopped: resumable
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "status": "interrupted"}))
    message = damage(folder)
    before = digests(out)
    for argv in (["resume", str(folder)], ["reroll", str(folder), "--from-section", "2"], ["resume", str(out)]):
        code, _, err = cli(capsys, *argv, "--model", str(tiny_model_dir))
        assert code == 2, err
        assert message in err, err  # also when the output folder is given: the job is named with its problem
        assert "Traceback" not in err
        assert digests(out) == before  # no output written, no checkpoint changed or removed
