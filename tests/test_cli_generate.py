"""`framepack_cli.py generate`: real runs in a subprocess on the tiny model, argument checks in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import framepack_cli

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
                     "--section-prompts", f"@{schedule}", "--keyframe", f"2={ROOT / 'assets' / 'demo.png'}",
                     "--codec", "none", "--save-frames", "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["video"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "missing.png"], "--image: file not found"),
        (["--image", "assets/demo.png", "--duration", "0"], "--duration: Input should be greater than 0"),
        (["--image", "assets/demo.png", "--variant", "f1", "--end-image", "assets/demo.png"],
         "--end-image: an end image needs"),
        (["--image", "assets/demo.png", "--codec", "nope264"], "--codec: unknown video codec"),
        (["--image", "assets/demo.png", "--crf", "99"], "--crf: Input should be less than or equal to 63"),
        (["--image", "assets/demo.png", "--section-prompts", "@nowhere.txt"], "cannot read"),
        (["--image", "assets/demo.png", "--keyframe", "oops"], "WHEN=IMAGE"),
        (["--image", "assets/demo.png", "--keyframe", "9=assets/demo.png"], "--keyframe #1: keyframe 1: section 9"),
        ([], "--image: give a start image, or choose a blank start"),
        (["--image", "assets/demo.png", "--model", "/no/such/model"], "/no/such/model"),
        (["--image", "assets/demo.png", "--lora", "missing.safetensors:0.5"], "--lora #1: LoRA file not found"),
        (["--image", "assets/demo.png", "--quantization", "int3"], "--quantization 'int3'"),
        (["--image", "assets/demo.png", "--offload", "sometimes"], "--offload 'sometimes'"),
    ],
)
def test_generate_bad_input_exits_2_naming_the_flag(args, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "never"
    assert framepack_cli.main(["generate", *args, "--resolution", "32", "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*.mp4"))


def test_generate_flags_are_the_request_fields():
    """Defaults, choices and help of the flags come from GenerationRequest / OutputOptions."""
    from framepack.cli.generate import OUTPUT_FLAGS, REQUEST_FLAGS
    from framepack.request import limits
    from framepack.request.model import GenerationRequest
    from framepack.request.output import OutputOptions

    parser = framepack_cli.build_parser()
    args = parser.parse_args(["generate"])
    generate = next(action for action in parser._subparsers._group_actions[0].choices.values()
                    if action.prog.endswith("generate"))
    actions = {action.dest: action for action in generate._actions}
    for model, names in ((GenerationRequest, [n for group in REQUEST_FLAGS.values() for n in group]),
                         (OutputOptions, OUTPUT_FLAGS)):
        for name in names:
            field = model.model_fields[name]
            assert getattr(args, name) == field.default, name
            assert field.description.split(" (")[0] in (actions[name].help or ""), name
    assert actions["variant"].choices == list(limits.VARIANTS)
    assert actions["sampler"].choices == list(limits.SAMPLERS)
    assert actions["blank_start"].choices == list(limits.BLANK_STARTS)
    assert actions["container"].choices == list(limits.CONTAINERS)
    assert actions["interpolation_method"].choices == list(limits.INTERPOLATION_METHODS)
    assert actions["interpolation"].option_strings == ["--interpolate"]
    assert actions["teacache"].option_strings == ["--no-teacache"] and args.teacache is True
    assert actions["keep_incomplete"].option_strings == ["--no-keep-incomplete"]
    assert parser.parse_args(["generate", "--no-teacache", "--cfg-zero-star"]).teacache is False
