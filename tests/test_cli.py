"""framepack_cli.py through real subprocesses: every subcommand, good and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framepack.io.raw import RawFrames, save_frames

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "framepack_cli.py"
SETTINGS = {"prompt": "a cat on a mat", "seed": 3}


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def ok(*args, **kwargs) -> subprocess.CompletedProcess:
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def refused(*args, match: str) -> str:
    """Bad input: exit 2, one clear error line, never a traceback (in-process: only the arguments matter)."""
    import contextlib
    import io

    import framepack_cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = framepack_cli.main([str(arg) for arg in args])
        except SystemExit as usage:  # argparse's own usage errors
            code = usage.code
    assert code == 2, (code, err.getvalue())
    assert "Traceback" not in err.getvalue()
    assert match in err.getvalue(), err.getvalue()
    return err.getvalue()


def make_frames() -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:48]
    return np.stack([np.stack([(xx * 5 + 7 * t) % 256, (yy * 7) % 256,
                               np.full_like(xx, 40 + t)], -1) for t in range(6)]).astype(np.uint8)


FRAMES = make_frames()


@pytest.fixture
def raw_file(tmp_path) -> Path:
    return save_frames(tmp_path / "clip.safetensors", FRAMES,
                       {"fps": 24, "settings": SETTINGS})


def decode(path) -> tuple[np.ndarray, float]:
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate)


# ------------------------------------------------------------------ help

@pytest.mark.parametrize("command", [[], ["info"], ["export"], ["encode"], ["interpolate"]])
def test_help(command):
    result = ok(*command, "--help")
    assert "usage:" in result.stdout


def test_no_command_is_a_usage_error():
    result = run()
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_help_does_not_import_heavy_modules():
    code = ("import sys; sys.argv=['framepack_cli.py','--help']; sys.path.insert(0, %r)\n"
            "import framepack_cli\n"
            "try:\n    framepack_cli.main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('av', 'cv2', 'numpy', 'torch') if m in sys.modules]\n"
            "print('HEAVY', heavy)") % str(ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in result.stdout


def test_companion_commands_do_not_import_torch(raw_file, tmp_path):
    """encode / export / interpolate / info work on frames; importing torch cost each run 2 s."""
    commands = [["encode", raw_file, "--out", tmp_path / "a.mkv", "--codec", "ffv1"],
                ["export", raw_file, "--out", tmp_path / "frames", "--format", "png"],
                ["interpolate", raw_file, "--factor", "2", "--out", tmp_path / "twice.safetensors"],
                ["info", tmp_path / "a.mkv"]]
    code = ("import sys; sys.path.insert(0, %r)\nimport framepack_cli\n"
            "for argv in %r:\n    assert framepack_cli.main(argv) == 0, argv\n"
            "print('TORCH', 'torch' in sys.modules)") % (str(ROOT), [[str(a) for a in c] for c in commands])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "TORCH False" in result.stdout, result.stdout + result.stderr


# ------------------------------------------------------------------ info

def test_info_raw(raw_file):
    text = ok("info", raw_file).stdout
    assert "frames:    6" in text and "48x32" in text and "fps:       24" in text
    assert "a cat on a mat" in text
    data = json.loads(ok("info", raw_file, "--json").stdout)
    assert data["frames"] == 6 and data["width"] == 48 and data["height"] == 32
    assert data["fps"] == 24 and data["settings"] == SETTINGS and data["kind"] == "raw"


def test_info_video(raw_file, tmp_path):
    video = tmp_path / "clip.mp4"
    ok("encode", raw_file, "--out", video)
    data = json.loads(ok("info", video, "--json").stdout)
    assert data["kind"] == "video" and data["codec"] == "h264" and data["pix_fmt"] == "yuv420p"
    assert data["frames"] == 6 and (data["width"], data["height"]) == (48, 32)
    assert data["fps"] == 24
    assert data["settings"]["prompt"] == SETTINGS["prompt"]


# ------------------------------------------------------------------ encode

def test_encode_lossless_gives_the_same_frames(raw_file, tmp_path):
    out = tmp_path / "clip.mkv"
    result = json.loads(ok("encode", raw_file, "--out", out, "--codec", "ffv1", "--json").stdout)
    assert result["path"] == str(out) and result["frames"] == 6
    frames, fps = decode(out)
    assert np.array_equal(frames, FRAMES) and fps == 24


def test_encode_options_fps_and_crf(raw_file, tmp_path):
    out = tmp_path / "clip.mp4"
    ok("encode", raw_file, "--out", out, "--crf", "0", "--options", "preset:ultrafast",
       "--fps", "30000/1001", "--pix-fmt", "yuv444p")
    frames, fps = decode(out)
    assert abs(fps - 30000 / 1001) < 1e-6
    assert np.abs(frames.astype(int) - FRAMES).mean() < 2


def test_encode_with_interpolation_keeps_duration(raw_file, tmp_path):
    out = tmp_path / "smooth.mkv"
    ok("encode", raw_file, "--out", out, "--codec", "ffv1", "--interpolate", "1")
    frames, fps = decode(out)
    assert len(frames) == 11 and fps == 48
    assert np.array_equal(frames[::2], FRAMES)


def test_encode_into_folder_picks_a_fresh_name(raw_file, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    first = json.loads(ok("encode", raw_file, "--out", folder, "--json").stdout)["path"]
    second = json.loads(ok("encode", raw_file, "--out", folder, "--json").stdout)["path"]
    assert Path(first).name == "clip.mp4" and Path(second).name == "clip-1.mp4"


def test_encode_cv2_backend(raw_file, tmp_path):
    out = tmp_path / "cv.mp4"
    ok("encode", raw_file, "--out", out, "--backend", "cv2")
    frames, fps = decode(out)
    assert frames.shape == FRAMES.shape and fps == 24
    refused("encode", raw_file, "--out", tmp_path / "cv2.mp4", "--backend", "cv2",
            "--codec", "libx264", match="cv2 backend")


def test_encode_video_input(raw_file, tmp_path):
    lossless = tmp_path / "a.mkv"
    ok("encode", raw_file, "--out", lossless, "--codec", "ffv1")
    again = tmp_path / "b.avi"
    ok("encode", lossless, "--out", again, "--codec", "ffv1")
    assert np.array_equal(decode(again)[0], FRAMES)


def test_codec_list():
    lines = ok("encode", "x.safetensors", "--out", "y.mp4", "--codec", "help").stdout.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith("(")]
    assert "libx264" in names and "none" not in names  # 'none' writes no video: not an encoder (issue 14)
    assert "h264" in lines[-1] and "av1" in lines[-1]  # the format names it maps


# ------------------------------------------------------------------ export

@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_export(raw_file, tmp_path, fmt):
    import cv2
    result = json.loads(ok("export", raw_file, "--out", tmp_path / "images", "--format", fmt,
                           "--json").stdout)
    folder = Path(result["folder"])
    assert folder.parent == tmp_path / "images" and result["frames"] == 6
    names = sorted(os.listdir(folder))
    assert names == [f"frame_{i:06d}.{fmt}" for i in range(1, 7)]
    first = cv2.cvtColor(cv2.imread(str(folder / names[0])), cv2.COLOR_BGR2RGB)
    if fmt == "png":
        assert np.array_equal(first, FRAMES[0])
    else:
        assert np.abs(first.astype(int) - FRAMES[0]).mean() < 12


def test_export_twice_never_mixes(raw_file, tmp_path):
    a = json.loads(ok("export", raw_file, "--out", tmp_path, "--json").stdout)["folder"]
    b = json.loads(ok("export", raw_file, "--out", tmp_path, "--json").stdout)["folder"]
    assert a != b and len(os.listdir(a)) == len(os.listdir(b)) == 6


# ------------------------------------------------------------------ interpolate

@pytest.mark.parametrize("method", ["flow", "blend"])
def test_interpolate(raw_file, tmp_path, method):
    out = tmp_path / "x3.safetensors"
    ok("interpolate", raw_file, "--factor", "2", "--out", out, "--method", method)
    with RawFrames(out) as raw:
        assert len(raw) == 16 and raw.fps == 72 and raw.generated_fps == 24
        assert raw.interpolation == 2 and raw.settings == SETTINGS
        assert np.array_equal(raw[::3], FRAMES)
    data = json.loads(ok("info", out, "--json").stdout)
    assert data["interpolation"] == 2


# ------------------------------------------------------------------ bad input

def test_missing_file(tmp_path):
    refused("info", tmp_path / "nope.safetensors", match="does not exist")
    refused("encode", tmp_path / "nope.safetensors", "--out", tmp_path / "a.mp4",
            match="does not exist")
    refused("export", tmp_path / "nope.mp4", "--out", tmp_path, match="does not exist")


def test_not_a_safetensors_file(tmp_path):
    bogus = tmp_path / "notes.safetensors"
    bogus.write_text("these are my notes, not frames\n" * 3)
    for command in (["info", bogus], ["encode", bogus, "--out", tmp_path / "a.mp4"],
                    ["export", bogus, "--out", tmp_path],
                    ["interpolate", bogus, "--factor", "1", "--out", tmp_path / "b.safetensors"]):
        refused(*command, match="not a usable raw frames file")
    assert sorted(os.listdir(tmp_path)) == ["notes.safetensors"]


def test_not_a_video(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"\0" * 100)
    refused("info", bogus, match="cannot read")


def test_wrong_tensor_name(tmp_path):
    from safetensors.numpy import save_file
    path = tmp_path / "latents.safetensors"
    save_file({"latents": FRAMES}, str(path))
    refused("info", path, match="no 'frames' tensor (found 'latents')")
    refused("encode", path, "--out", tmp_path / "a.mp4", match="no 'frames' tensor")


def test_wrong_dtype(tmp_path):
    from safetensors.numpy import save_file
    path = tmp_path / "float.safetensors"
    save_file({"frames": FRAMES.astype(np.float32)}, str(path))
    refused("encode", path, "--out", tmp_path / "a.mp4", match="uint8")


@pytest.mark.parametrize("args,match", [
    (["--codec", "nosuchcodec"], "unknown video codec 'nosuchcodec'"),
    (["--codec", "none"], "writes no video"),
    (["--options", "crf"], "codec option 'crf' has no value"),
    (["--options", "crff=10"], "did you mean 'crf'"),
    (["--options", "preset=warp9"], "refused option preset=warp9"),
    (["--fps", "-3"], "out of range"),
    (["--fps", "fast"], "--fps must be a number"),
    (["--crf", "80"], "out of range"),
    (["--pix-fmt", "rgb48"], "cannot encode pixel format"),
    (["--interpolate", "40"], "0 to 16"),
])
def test_encode_bad_settings(raw_file, tmp_path, args, match):
    refused("encode", raw_file, "--out", tmp_path / "a.mp4", *args, match=match)
    assert not (tmp_path / "a.mp4").exists()


def test_encode_incompatible_container(raw_file, tmp_path):
    refused("encode", raw_file, "--out", tmp_path / "a.webm", match="cannot be stored in a .webm")
    refused("encode", raw_file, "--out", tmp_path / "a.gif", match="is not a .mp4 / .m4v / .mkv")


def test_encode_refuses_to_overwrite(raw_file, tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    refused("encode", raw_file, "--out", out, match="--overwrite")
    assert out.read_bytes() == b"precious"
    ok("encode", raw_file, "--out", out, "--overwrite")
    assert out.stat().st_size > 8


def test_usage_errors_exit_2(raw_file, tmp_path):
    for args in (["encode", raw_file], ["export", raw_file, "--out", tmp_path, "--format", "bmp"],
                 ["interpolate", raw_file, "--factor", "x", "--out", tmp_path / "a.safetensors"],
                 ["frobnicate"]):
        refused(*args, match="error:")
    refused("interpolate", raw_file, "--factor", "1", "--out", tmp_path / "a.mp4",
            match="is not a .safetensors file")


# ------------------------------------------------------------------ unexpected failures

def test_unexpected_error_exit_1_traceback_only_with_debug(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT))
    import framepack_cli

    def broken(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(framepack_cli, "run_info", broken)
    assert framepack_cli.main(["info", "x"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: disk on fire" in err and "Traceback" not in err
    assert framepack_cli.main(["--debug", "info", "x"]) == 1
    assert "Traceback" in capsys.readouterr().err
