"""`framepack_cli.py plan`: the generate arguments plus --vram/--ram, in-process (it loads no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import framepack_cli
from framepack.models.resources import GiB

ROOT = Path(__file__).resolve().parents[1]
IMAGE = str(ROOT / "assets" / "demo.png")
RESOURCE_KEYS = {"vram_peak_bytes", "ram_peak_bytes", "disk_bytes", "seconds", "offload", "vae_tiling"}


def plan(capsys, *args) -> tuple[int, dict | str, str]:
    code = framepack_cli.main(["plan", "--image", IMAGE, "--prompt", "a boat", *map(str, args)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in args else out), err


@pytest.mark.parametrize("vram, offload, tiled", [(80, "none", False), (24, "group", False), (12, "group", True)])
def test_json_plan_for_another_machine(capsys, vram, offload, tiled):
    code, answer, err = plan(capsys, "--duration", "5", "--vram", vram, "--ram", 64, "--json")
    assert code == 0, err
    resources = answer["resources"]
    assert RESOURCE_KEYS <= set(resources)
    assert (resources["offload"], resources["vae_tiling"], resources["fits"]) == (offload, tiled, True)
    assert resources["seconds"] is None  # no measured speed for a GPU named by --vram
    assert 0 < resources["vram_peak_bytes"] <= vram * GiB and resources["ram_peak_bytes"] <= 64 * GiB
    assert resources["disk_bytes"] > 0 and (resources["height"], resources["width"]) == (512, 768)  # demo.png is 3:2
    assert answer["plan"]["num_sections"] == 4 and "4 sections" in answer["summary"]
    assert answer["resource_plan"]["vram_peak_bytes"] == resources["vram_peak_bytes"]


def test_quantization_and_forced_modes_change_the_plan(capsys):
    _, quantized, _ = plan(capsys, "--vram", 24, "--ram", 64, "--quantization", "quanto-int8", "--json")
    assert quantized["resources"]["offload"] == "model" and quantized["resources"]["quantization"] == "int8"
    _, tiled, _ = plan(capsys, "--vram", 80, "--ram", 64, "--vae-tiling", "on", "--json")
    assert tiled["resources"]["vae_tiling"] is True
    _, forced, _ = plan(capsys, "--vram", 80, "--ram", 64, "--offload", "sequential", "--json")
    assert forced["resources"]["offload"] == "sequential"


def test_a_run_that_does_not_fit_exits_2_saying_what_would(capsys):
    code, answer, err = plan(capsys, "--vram", 24, "--ram", 64, "--offload", "none", "--json")
    assert code == 2
    assert answer["resources"]["fits"] is False and "what would fit: offload 'group'" in answer["resources"]["refusal"]
    assert err.startswith("error: --resolution: this run does not fit") and "24.0 GiB" in err
    code, text, err = plan(capsys, "--vram", 3, "--ram", 64, "--resolution", 960)
    assert code == 2 and "VRAM" in text and "what would fit: resolution" in err


def test_text_output_names_the_resources(capsys):
    code, text, _ = plan(capsys, "--vram", 48, "--ram", 64)
    assert code == 0
    assert text.splitlines()[0].startswith("plan: ") and "frames" in text
    assert "resources: VRAM " in text and "RAM " in text and "disk " in text and "offload none, VAE tiled" in text


def test_the_tiny_model_on_this_cpu(capsys, tiny_model_dir):
    code, answer, err = plan(capsys, "--model", tiny_model_dir, "--device", "cpu", "--resolution", 32, "--json")
    assert code == 0, err
    resources = answer["resources"]
    assert resources["device"] == "cpu" and resources["vram_peak_bytes"] == 0 and resources["offload"] == "none"
    assert resources["ram_peak_bytes"] < 2 * GiB  # the tiny configs from the model folder, not the full size
    assert answer["resource_plan"]["parameters"]["transformer"] < 10_000_000


@pytest.mark.parametrize("args, message", [
    (["--vram", "-1"], "--vram -1.0: give the memory in GiB"),
    (["--ram", "0"], "--ram 0.0: give the memory in GiB"),
    (["--vae-tiling", "maybe"], "--vae-tiling 'maybe': choose one of auto, on, off"),
    (["--offload", "balanced"], "--offload 'balanced'"),
    (["--duration", "0"], "--duration: Input should be greater than 0"),
])
def test_bad_arguments_name_their_flag(capsys, args, message):
    code, _, err = plan(capsys, *args)
    assert code == 2 and message in err
