"""Issue 14, CLI items 6-9: the --out rule, common codec names, suggestions and one-line errors,
--section-prompts TEXT|@FILE, every default in --help, the plan line, generate --from, quiet output,
`info` on images and numbers. In-process: only the tiny generations need the model, and they run
in this process too (no subprocess behaviour is under test here)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import framepack_cli
from framepack.cli.args import OutputTarget, output_target
from framepack.errors import InputError
from framepack.io.raw import RawFrames, save_frames

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo.png"
FAST = ["--resolution", "32", "--steps", "2", "--latent-window", "3", "--duration", "0.8", "--seed", "3",
        "--prompt", "a boat", "--quiet"]


def cli(capsys, *args) -> tuple[int, str, str]:
    """main() in this process: (exit code, stdout, stderr); argparse's own exits count as codes."""
    try:
        code = framepack_cli.main([str(arg) for arg in args])
    except SystemExit as usage:
        code = usage.code
    out, err = capsys.readouterr()
    return code, out, err


def frames_of(path) -> np.ndarray:
    with RawFrames(path) as raw:
        return np.concatenate(list(raw.iter_batches(64)))


@pytest.fixture
def raw_file(tmp_path) -> Path:
    frames = (np.arange(4 * 16 * 16 * 3) % 251).astype(np.uint8).reshape(4, 16, 16, 3)
    return save_frames(tmp_path / "clip.safetensors", frames, {"fps": 24})


# ------------------------------------------------------------------ item 6: --out is a file or a folder

def test_out_rule_file_or_folder(tmp_path):
    suffixes = (".mp4", ".mkv")
    (tmp_path / "existing").mkdir()
    assert output_target(tmp_path / "existing", suffixes) == OutputTarget(tmp_path / "existing")
    assert output_target(f"{tmp_path}/new.d/", suffixes).name is None  # trailing separator: a folder
    assert output_target(tmp_path / "outputs", suffixes).name is None  # no extension: a folder
    target = output_target(tmp_path / "sub" / "clip.mp4", suffixes)
    assert (target.folder, target.name, target.stem) == (tmp_path / "sub", "clip.mp4", "clip")
    with pytest.raises(InputError, match="not a .mp4 / .mkv file"):
        output_target(tmp_path / "clip.mp5", suffixes)
    (tmp_path / "taken.mp4").write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        output_target(tmp_path / "taken.mp4", suffixes)
    assert output_target(tmp_path / "taken.mp4", suffixes, overwrite=True).name == "taken.mp4"
    # a folder gets fresh numbered names and is created on demand
    folder = output_target(tmp_path / "made" / "here", suffixes)
    first = folder.path("clip", ".mp4")
    first.write_bytes(b"x")
    assert folder.path("clip", ".mp4").name == "clip-1.mp4" and first.parent == tmp_path / "made" / "here"


def test_encode_creates_a_missing_folder_and_takes_a_file_or_a_folder(raw_file, tmp_path, capsys):
    deep = tmp_path / "new" / "sub" / "clip.mp4"
    assert cli(capsys, "encode", raw_file, "--out", deep, "--quiet")[0] == 0
    assert deep.is_file()
    code, out, _ = cli(capsys, "encode", raw_file, "--out", tmp_path / "videos", "--quiet", "--json")
    assert code == 0 and Path(json.loads(out)["path"]).parent == tmp_path / "videos"
    code, _, err = cli(capsys, "encode", raw_file, "--out", deep, "--quiet")
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_interpolate_follows_the_same_rule(raw_file, tmp_path, capsys):
    out = tmp_path / "more" / "x2.safetensors"
    assert cli(capsys, "interpolate", raw_file, "--factor", "1", "--method", "blend", "--out", out, "--quiet")[0] == 0
    assert len(RawFrames(out)) == 7


# ------------------------------------------------------------------ item 7: names, suggestions, errors, help

def test_common_codec_names_map_to_an_encoder_that_opens():
    from framepack.io import codecs

    assert codecs.resolve_codec("h264") == "libx264" and codecs.resolve_codec("AVC") == "libx264"
    for name in ("hevc", "h265", "av1", "vp9"):
        try:
            encoder = codecs.resolve_codec(name)
        except InputError as error:  # this FFmpeg build has none: the message lists what works
            assert "available here: " in str(error) and "libx264" in str(error)
            continue
        family = codecs.CODEC_FAMILIES[codecs.CODEC_ALIASES.get(name, name)]
        assert encoder in family and encoder in codecs.encoder_names() + list(family)
    assert codecs.resolve_codec("libx264") == "libx264" and codecs.resolve_codec("mpeg4") == "mpeg4"


def test_a_family_with_no_working_encoder_lists_the_ones_that_work(monkeypatch):
    from framepack.io import codecs

    monkeypatch.setattr(codecs, "_opens_cached", lambda name: False)
    with pytest.raises(InputError, match=r"no av1 encoder works on this machine .*available here: .*libx264"):
        codecs.resolve_codec("av1")


def test_the_option_allowlist_applies_to_the_mapped_encoder(raw_file, tmp_path, capsys):
    code, _, err = cli(capsys, "encode", raw_file, "--out", tmp_path / "a.mp4", "--codec", "h264",
                       "--options", "stats=/etc/passwd")
    assert code == 2 and "refused" in err and not (tmp_path / "a.mp4").exists()
    code, out, _ = cli(capsys, "encode", raw_file, "--out", tmp_path / "b.mp4", "--codec", "h264",
                       "--options", "preset=fast", "--json", "--quiet")
    assert code == 0 and json.loads(out)["codec"] == "libx264"


def test_generate_maps_the_codec_name_before_checking(capsys, monkeypatch, tmp_path):
    from framepack.cli.generate import build_job

    monkeypatch.chdir(ROOT)
    args = framepack_cli.build_parser().parse_args(["generate", "--image", str(DEMO), "--codec", "h264"])
    assert build_job(args)[1].codec == "libx264"


def test_codec_help_does_not_list_none(capsys):
    code, out, _ = cli(capsys, "encode", "x.safetensors", "--out", "y.mp4", "--codec", "help")
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith("(")]
    assert code == 0 and "libx264" in names and "none" not in names


@pytest.mark.parametrize("argv, wrong, right", [
    (["generate", "--durasion", "3"], "--durasion", "--duration"),
    (["generate", "--seeed=4"], "--seeed", "--seed"),
    (["export", "x.safetensors", "--out", "d", "--fromat", "png"], "--fromat", "--format"),
])
def test_a_misspelt_flag_prints_the_usage_and_a_suggestion(capsys, argv, wrong, right):
    code, _, err = cli(capsys, *argv)
    prog = f"framepack_cli.py {argv[0]}"
    assert code == 2 and err.startswith(f"usage: {prog}") and f"unknown option {wrong} (did you mean {right}?)" in err
    assert "unexpected value" not in err  # the misspelt flag's own value is not a second problem


@pytest.mark.parametrize("argv, words", [
    (["generate", "--fps", "fast"], "argument --fps: invalid float value: 'fast'"),
    (["generate", "--sampler", "unipcc"], "did you mean 'unipc'?"),
    (["encode", "x.safetensors"], "required: --out"),
    (["export", "x.safetensors", "--out", "d", "--batch", "0"], "expected a number >= 1"),
])
def test_a_bad_value_is_one_line(capsys, argv, words):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "usage:" not in err


def test_help_shows_every_default():
    parser = framepack_cli.build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    for name, sub in subparsers.items():
        text = " ".join(sub.format_help().split())  # undo the line wrapping
        for action in sub._actions:
            if action.option_strings and action.default not in (None, "", [], "==SUPPRESS==") \
                    and action.help != "==SUPPRESS==" and action.nargs != 0:
                assert "default" in (action.help or "") or f"(default: {str(action.default)[:10]}" in text, \
                    (name, action.dest)
    generate = subparsers["generate"].format_help()
    assert "(default: 25)" in generate and "(default: outputs)" in generate and "(default: off)" in generate


def test_section_prompts_take_text_or_a_file(tmp_path, monkeypatch):
    from framepack.cli.generate import section_prompts
    from framepack.request.limits import MAX_SCHEDULE_CHARS

    assert section_prompts("1: rises\n2: falls") == "1: rises\n2: falls"
    schedule = tmp_path / "sections.txt"
    schedule.write_text("1: rises\n", encoding="utf-8")
    assert section_prompts(f"@{schedule}") == "1: rises\n"
    with pytest.raises(InputError, match="is a file; write @"):
        section_prompts(str(schedule))
    with pytest.raises(InputError, match="cannot read"):
        section_prompts(f"@{tmp_path / 'nowhere.txt'}")
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"x" * (MAX_SCHEDULE_CHARS * 4 + 1))
    with pytest.raises(InputError, match="larger than"):
        section_prompts(f"@{huge}")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        section_prompts(f"@{tmp_path / 'binary.txt'}")


def test_section_prompts_text_reaches_the_request_and_when_limits_apply(capsys, monkeypatch, tmp_path):
    from framepack.cli.generate import build_job

    monkeypatch.chdir(ROOT)
    args = framepack_cli.build_parser().parse_args(
        ["generate", "--image", str(DEMO), "--duration", "3", "--section-prompts", "1: rises\n2: falls"])
    request, _ = build_job(args)
    assert request.section_prompts == "1: rises\n2: falls"
    code, _, err = cli(capsys, "generate", "--image", DEMO, "--section-prompts", "99: never", "--out", tmp_path)
    assert code == 2 and err.startswith("error: --section-prompts") and len(err.strip().splitlines()) == 1


def test_the_plan_line_says_what_was_asked():
    from framepack.cli.generate import plan_line
    from framepack.request.model import build_request

    asked = build_request(image=DEMO.read_bytes(), duration=3)
    line = plan_line(asked)
    assert f"{asked.plan().duration:.2f} s, asked 3 s: a video is a whole number of sections" in line
    exact = build_request(image=DEMO.read_bytes(), duration=asked.plan().duration)
    assert "asked" not in plan_line(exact)


# ------------------------------------------------------------------ items 6 + 8: real tiny runs

def test_out_file_from_video_and_overwrite(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRAMEPACK_TINY_DIR", str(tiny_model_dir))
    clip = tmp_path / "clips" / "clip.mp4"
    code, out, err = cli(capsys, "generate", "--model", "tiny", "--image", DEMO, *FAST, "--save-frames",
                         "--out", clip, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["video"] == str(clip) and summary["frames"] == str(clip.with_suffix(".safetensors"))
    assert sorted(p.name for p in clip.parent.iterdir()) == ["clip.mp4", "clip.safetensors"]  # no temp, no folder
    before = clip.read_bytes()

    code, _, err = cli(capsys, "generate", "--model", "tiny", "--image", DEMO, *FAST, "--out", clip)
    assert code == 2 and "already exists; pass --overwrite" in err and clip.read_bytes() == before

    # --from: every embedded setting (seed, prompt, duration, steps...) again: the same frames
    again = tmp_path / "again.mkv"
    code, out, err = cli(capsys, "generate", "--model", "tiny", "--from", clip, "--image", DEMO, "--save-frames",
                         "--quiet", "--out", again, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["seed"] == 3 and summary["video"] == str(again)
    assert np.array_equal(frames_of(clip.with_suffix(".safetensors")), frames_of(again.with_suffix(".safetensors")))

    code, _, err = cli(capsys, "generate", "--model", "tiny", "--image", DEMO, *FAST, "--steps", "1",
                       "--out", clip, "--overwrite")
    assert code == 0, err
    assert clip.read_bytes() != before


def test_from_flags_given_win_and_images_are_asked_for(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from framepack.cli.generate import build_job
    from framepack.io.writer import VideoWriter

    video = tmp_path / "made.mp4"
    settings = {"prompt": "a fox", "seed": 77, "steps": 7, "duration": 2.0, "image": "384x256 RGB",
                "loras": [{"path": "/etc/passwd", "weight": 1.0}]}
    with VideoWriter(video, 30, metadata={"settings": settings, "output": {"crf": 20}}) as writer:
        writer.write(np.zeros((2, 16, 16, 3), np.uint8))
    parser = framepack_cli.build_parser()
    request, options = build_job(parser.parse_args(["generate", "--from", str(video), "--image", str(DEMO),
                                                    "--steps", "25", "--crf", "16"]))
    assert (request.prompt, request.seed, request.duration) == ("a fox", 77, 2.0)
    assert request.steps == 25 and options.crf == 16  # given explicitly (even at their defaults): they win
    assert request.loras == ()  # LoRA paths are never taken from a file
    code, _, err = cli(capsys, "generate", "--from", video, "--out", tmp_path)
    assert code == 2 and "--image:" in err and "384x256" in err


@pytest.mark.parametrize("settings, words", [
    ({"duration": 1e12}, "embedded setting 'duration'"),
    ({"prompt": "x" * 200_000}, "embedded setting 'prompt'"),
    ({"steps": "many"}, "embedded setting 'steps'"),
    ({"seed": [1, 2]}, "embedded setting 'seed'"),
    ("not an object", "holds no FramePack settings"),
])
def test_from_a_forged_video_names_the_field(tmp_path, capsys, settings, words):
    from framepack.io.writer import VideoWriter

    video = tmp_path / "forged.mkv"
    with VideoWriter(video, 30, codec="ffv1", metadata={"settings": settings}) as writer:
        writer.write(np.zeros((1, 16, 16, 3), np.uint8))
    code, _, err = cli(capsys, "generate", "--from", video, "--image", DEMO, "--out", tmp_path / "out")
    assert code == 2 and words in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_from_a_video_with_absurd_tags_is_refused_cleanly(tmp_path, capsys):
    import av

    video = tmp_path / "nested.mkv"
    with av.open(str(video), "w", format="matroska") as container:
        container.metadata["framepack_settings"] = "[" * 100_000 + "]" * 100_000
        stream = container.add_stream("ffv1", rate=30)
        stream.width = stream.height = 16
        stream.pix_fmt = "bgr0"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    code, _, err = cli(capsys, "generate", "--from", video, "--image", DEMO, "--out", tmp_path / "out")
    assert code == 2 and "holds no FramePack settings" in err


# ------------------------------------------------------------------ item 9: quiet output, info

def test_only_the_torchvision_fallback_message_is_filtered():
    import importlib.util

    from framepack.models.recipe import quiet_image_processor_fallback

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: nothing falls back")
    quiet_image_processor_fallback()
    quiet_image_processor_fallback()  # once is enough, twice is harmless
    logger = logging.getLogger("transformers.utils.import_utils")
    assert len([f for f in logger.filters if type(f).__name__ == "_ImageProcessorFallbackFilter"]) == 1
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    library = logging.getLogger("transformers")  # transformers' own root logger (it does not propagate)
    library.addHandler(handler)
    level = library.level
    library.setLevel(logging.WARNING)  # a generation earlier in this process may have quieted it
    try:
        logger.warning("`SiglipImageProcessor` requires torchvision (not installed); falling back to "
                       "`SiglipImageProcessorPil` for backward compatibility.")
        logger.warning("something else that matters")
    finally:
        library.removeHandler(handler)
        library.setLevel(level)
    assert seen == ["something else that matters"]


def test_info_calls_an_image_an_image(capsys):
    code, out, _ = cli(capsys, "info", DEMO, "--json")
    data = json.loads(out)
    assert code == 0 and data["kind"] == "image" and (data["width"], data["height"]) == (384, 256)
    assert "fps" not in data and "duration" not in data
    assert "kind:      image (png" in cli(capsys, "info", DEMO)[1]


def test_info_json_numbers_are_numbers(tmp_path, capsys):
    raw = save_frames(tmp_path / "ntsc.safetensors", np.zeros((3, 16, 16, 3), np.uint8), {"fps": "30000/1001"})
    data = json.loads(cli(capsys, "info", raw, "--json")[1])
    assert data["fps"] == pytest.approx(29.97003) and data["fps_fraction"] == "30000/1001"
    assert isinstance(data["frames"], int) and isinstance(data["duration"], float)
