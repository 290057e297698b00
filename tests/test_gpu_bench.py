"""benchmarks/gpu.py --tiny: the GPU benchmark's code path, run on the CPU with the tiny configs.

The full-size run needs a CUDA GPU (see benchmarks/README.md); this runs the same functions
(meta build + to_empty + on-device init, our loop and diffusers' pipeline on the same modules,
stage meters, FLOP accounting, the planner comparison, the JSON report) in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_results(gpu_bench, tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "tiny.json"
    results = gpu_bench.main(["--tiny", "--json", str(path)])
    return results, json.loads(path.read_text())


def test_tiny_run_reports_every_field(tiny_results):
    results, written = tiny_results
    assert written["device"] == "cpu" and written["tiny"] is True
    assert written["settings"] == {"resolution": 64, "height": 64, "width": 64, "window": 3, "steps": 3}
    runs = {run["name"]: run for run in written["runs"]}
    assert set(runs) == {"ours, TeaCache off", "ours, TeaCache on", "diffusers", "diffusers, TeaCache on",
                         "compiled runs"}
    for name in ("ours, TeaCache off", "ours, TeaCache on", "diffusers"):
        run = runs[name]
        for key in ("seconds_per_frame", "seconds_sampling", "seconds_decode", "achieved_tflops"):
            assert run[key] > 0, (name, key)
        assert run["mfu"] is None  # no peak TFLOP/s for a CPU
        assert run["frames"] == 4 * 3 + 1  # one section of window 3 plus the start frame
    assert runs["ours, TeaCache off"]["transformer_calls"] == 3 == runs["diffusers"]["transformer_calls"]
    assert 2 <= runs["ours, TeaCache on"]["transformer_calls"] <= 3  # first and last step always run
    assert "no TeaCache" in runs["diffusers, TeaCache on"]["skipped"]
    assert "off CUDA" in runs["compiled runs"]["skipped"]
    assert written["runs"] == json.loads(json.dumps(results["runs"], default=str))


def test_tiny_run_measures_stages_and_compares_the_planner(tiny_results):
    _, written = tiny_results
    ours = written["runs"][0]
    assert {"text", "vision", "vae_encode", "sample", "vae_decode"} <= set(ours["stage_added_bytes"])
    assert all(value > 0 for value in ours["stage_added_bytes"].values())
    planner = written["planner"]
    assert set(planner) == {"sample", "vae_decode"}
    for row in planner.values():
        assert row["predicted_bytes"] > 0 and row["measured_bytes"] > 0 and row["error"] is not None
    assert written["flops_per_call"] > 0 and written["image_tokens"] == 3 * 16 + 2 * 16 + 2 * 2 + 4
    assert written["parameters"]["transformer"] > 0
    speeds = written["speeds"]
    assert speeds["transformer_tflops"] > 0 and speeds["vae_decode_megapixel_frames_per_s"] > 0
    assert speeds["host_to_device_gb_per_s"] is None


def test_init_on_device_writes_scaled_random_weights(gpu_bench):
    import torch

    with torch.device("meta"):
        layer = torch.nn.Sequential(torch.nn.Linear(400, 8), torch.nn.LayerNorm(8))
    layer = gpu_bench.init_on_device(layer, "cpu", torch.float32, seed=1)
    weight = layer[0].weight
    assert weight.device.type == "cpu" and abs(weight.std().item() - 400 ** -0.5) < 0.005
    assert torch.all(layer[0].bias == 0) and torch.all(layer[1].weight == 1)
    with torch.device("meta"):
        with_buffer = torch.nn.BatchNorm1d(4)
    with pytest.raises(RuntimeError, match="has buffers"):
        gpu_bench.init_on_device(with_buffer, "cpu", torch.float32, seed=1)


def test_update_speeds_fills_the_table(gpu_bench, tiny_results, tmp_path):
    from framepack.models import resources

    results, _ = tiny_results
    table = tmp_path / "speeds.json"
    table.write_text(json.dumps({"devices": {"cpu": {"peak_bf16_tflops": None}}}))
    gpu_bench.update_speeds(results, table)
    entry = json.loads(table.read_text())["devices"]["cpu"]
    assert entry["transformer_tflops"] == results["speeds"]["transformer_tflops"]
    assert entry["measured"]["benchmark"] == "benchmarks/gpu.py" and entry["measured"]["steps"] == 3
    assert resources.device_speed("cpu", table)["vae_decode_megapixel_frames_per_s"] > 0
