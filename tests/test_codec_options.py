"""Encoder options (issue 8, item 1): only allowlisted options reach an encoder, and checking them
writes nothing anywhere: no encoder is opened with the user's options while validating."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import framepack_cli
from framepack.errors import InputError
from framepack.io import codec_options, codecs
from framepack.io.writer import VideoWriter
from framepack.jobs.checks import check_output
from framepack.request.output import OutputOptions


def hostile(target: Path) -> list[tuple[str, str]]:
    """(codec, options) that make libx264 / libx265 / SVT-AV1 create or overwrite `target`."""
    return [
        ("libx264", f"x264-params=stats={target}:pass=1"),
        ("libx264", f"x264opts=stats={target}:pass=1"),
        ("libx264", f"passlogfile={target}"),
        ("libx264", f"stats={target}"),
        ("libx264", "flags=+pass1"),  # libx264 then writes x264_2pass.log in the working directory
        ("libx264", f"x264-params=keyint=60\\:stats={target}"),  # FFmpeg unescapes \: ... we refuse it
        ("libx264", f"x264-params='stats'={target}"),
        ("libx265", f"x265-params=csv={target}"),
        ("libx265", f"x265-params=analysis-save={target}"),
        ("libx265", f"x265-stats={target}"),
        ("libsvtav1", f"svtav1-params=recon={target}"),
    ]


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch):
    """Work in an empty folder so any file an encoder writes by a relative name is seen."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_file_writing_option_is_refused_naming_it_and_nothing_is_written(in_empty_folder):
    target = in_empty_folder / "owned"
    for codec, text in hostile(target):
        if codec not in codecs.available_encoders():
            continue
        with pytest.raises(InputError) as refused:
            check_output(OutputOptions(codec=codec, container="mkv", codec_options=text, crf=None))
        assert [problem.field for problem in refused.value.problems()] == [("output", "codec_options")]
        message = str(refused.value)
        named = text.split("=", 1)[0]
        assert named in message, message
        assert "refused" in message or "not allowed" in message, message
        with pytest.raises(InputError):  # the writer and the CLI `encode` take the same path
            VideoWriter(in_empty_folder / "x.mkv", 30, codec=codec, options=text)
    assert sorted(os.listdir(in_empty_folder)) == [], "validation wrote a file"


@pytest.mark.parametrize("name", ["passlogfile", "stats", "x265-stats", "multipass", "2pass"])
def test_refusals_say_why_for_option_names_that_touch_files(name):
    codec = "h264_nvenc" if "pass" in name and name != "passlogfile" else (
        "libx265" if name == "x265-stats" else "libx264")
    with pytest.raises(InputError, match=rf"codec option '{name}' is refused: options that name files"):
        codec_options.check_options(codec, {name: "1"})


def test_validation_never_opens_an_encoder_with_the_users_options(monkeypatch):
    opened: list[dict] = []
    real = codecs._test_encode

    def recording(codec, pix_fmt, options):
        opened.append(dict(options))
        return real(codec, pix_fmt, options)

    monkeypatch.setattr(codecs, "_test_encode", recording)
    check_output(OutputOptions(codec="libx264",
                               codec_options="preset=veryslow,tune=film,g=48,bf=2,b=4M,maxrate=6M,bufsize=8M"))
    assert all("preset" not in options and "g" not in options for options in opened), opened


@pytest.mark.parametrize("codec, text", [
    ("libx264", "preset=veryslow,tune=film+fastdecode,profile=high,level=4.1"),
    ("libx264", "x264-params=keyint=60:min-keyint=30:bframes=3:log-level=error"),
    ("libx264", "g=60,bf=2,keyint_min=30,refs=4,b=2M,maxrate=4M,bufsize=8M"),
    ("libx264", "aq-mode=autovariance,psy-rd=1.0:0.15,deblock=-1:-1,partitions=all,psy=auto"),
    ("libx265", "preset=ultrafast,x265-params=log-level=error:keyint=48"),
    ("libvpx-vp9", "deadline=realtime,cpu-used=8,row-mt=1,tile-columns=2"),
    ("libsvtav1", "preset=12,svtav1-params=tune=0:film-grain=8"),
    ("mpeg4", "q=2"),
    ("ffv1", "level=3,slices=4,slicecrc=1"),
    ("prores_ks", "profile=hq,vendor=apl0"),
])
def test_real_options_still_pass(codec, text):
    if codec not in codecs.available_encoders():
        pytest.skip(f"{codec} does not open here")
    options = codecs.expand_aliases(codecs.parse_options(text))
    codecs.check_options(codec, options)


@pytest.mark.parametrize("text, message", [
    ("preset=warp9", "refused option preset=warp9: choose one of ultrafast"),
    ("crf=abc", "refused option crf=abc: expected a number"),
    ("crf=-5", "refused option crf=-5: out of range"),
    ("bf=1.5", "refused option bf=1.5: expected a whole number"),
    ("aq-mode=sideways", "one of: none, variance"),
    ("psy=perhaps", "expected true or false or auto"),
    ("flags=+qscale+psnr", "flag 'psnr' is not allowed"),
    ("x264-params=keyint=/etc/passwd", "must be a plain word or number"),
    ("x264-params=keyint", "key=value"),
    ("x264-params=frobnicate=1", "parameter 'frobnicate' is not allowed"),
    ("ssim=1", "'ssim' is not allowed for libx264"),
    ("crff=16", "unknown option 'crff' for codec libx264 (did you mean 'crf'?)"),
])
def test_bad_values_are_refused_statically(text, message):
    with pytest.raises(InputError) as refused:
        codecs.check_options("libx264", codecs.parse_options(text))
    assert message in str(refused.value)


def test_cli_options_are_refused_with_exit_2(tmp_path, capsys):
    from framepack.io.raw import save_frames
    import numpy as np

    raw = save_frames(tmp_path / "clip.safetensors", np.zeros((2, 16, 16, 3), np.uint8))
    target = tmp_path / "owned"
    code = framepack_cli.main(["encode", str(raw), "--out", str(tmp_path / "a.mp4"),
                               "--options", f"x264-params=stats={target}:pass=1"])
    assert code == 2 and "'stats' is refused" in capsys.readouterr().err
    assert not target.exists() and not (tmp_path / "a.mp4").exists()
