"""LoRA inside SD.Next: `<lora:name:weight>` prompt tags, through the fake SD.Next (tests/fake_sdnext).

The host's parser (`modules.extra_networks.parse_prompt`) takes the tags out of the prompt,
negative prompt and section prompts; the names are looked up in the host's LoRA list
(`modules.lora.lora_load.gather_networks`, folder `shared.cmd_opts.lora_dir`); the files are
applied for the job through diffusers' loader (`request.loras`), re-weighted between runs
without reloading, and gone on the next run without tags. Unknown names fail the job clearly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

from fake_sdnext.harness import FakeSdnext
from framepack.errors import InputError
from framepack.request.output import OutputOptions
from framepack.jobs.queue import JobQueue
from framepack.request.events import Status
from framepack.request.model import build_request
from framepack.models import lora as lora_module
from framepack.models.lora import loaded_adapters

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False, preview=False, variant="f1",
            duration=0.8, seed=11)
TARGETS = ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_v", "transformer_blocks.0.ff.net.2",
           "single_transformer_blocks.0.proj_out", "proj_out")
PROBE = "transformer_blocks.0.attn.to_q"

needs_peft = pytest.mark.skipif(not lora_module.peft_available(), reason="LoRA loading needs the peft package")


def image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def request(**overrides):
    return build_request(**{**FAST, "image": image(), "prompt": "a fox", **overrides})


@pytest.fixture
def sd(tmp_path, tiny_model_dir):
    """The fake SD.Next after startup, FramePack settings registered, tiny model, a LoRA folder."""
    with FakeSdnext(tmp_path) as fake:
        from framepack.host import sdnext

        sdnext.register_settings()
        fake.finish_startup()
        fake.shared.opts.framepack_model_recipe = json.dumps({"folder": str(tiny_model_dir)})
        fake.shared.opts.sd_model_checkpoint = "sdxl-base"
        fake.lora_dir = tmp_path / "models" / "Lora"
        (fake.lora_dir / "motion").mkdir(parents=True)
        fake.shared.cmd_opts.lora_dir = str(fake.lora_dir)
        yield fake


def placeholder_loras(folder):
    """Files that are only looked up (never loaded): the name lookup does not read them."""
    fox = folder / "fox.safetensors"
    rain = folder / "motion" / "rain.v2.safetensors"  # name rain_v2, alias motion/rain.v2, stem rain.v2
    for path in (fox, rain):
        path.write_bytes(b"{}")
    return fox, rain


def write_lora(path, transformer, seed):
    """A LoRA for `TARGETS` of `transformer` in diffusers/PEFT format, with random nonzero B."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(transformer.named_modules())
    tensors = {}
    for name in TARGETS:
        out_features, in_features = modules[name].weight.shape
        tensors[f"transformer.{name}.lora_A.weight"] = torch.randn(4, in_features, generator=generator) * 0.5
        tensors[f"transformer.{name}.lora_B.weight"] = torch.randn(out_features, 4, generator=generator) * 0.5
    save_file(tensors, str(path))
    return path


def calls(module_name, kind):
    import sys

    module = sys.modules.get(module_name)
    return [details for call, details in (module.fake_calls if module else []) if call == kind]


# ----------------------------------------------------------------------------- the request


def test_tags_leave_the_text_and_resolve_through_the_host_lora_list(sd, caplog):
    from framepack.host.sdnext import SdnextHost

    fox, rain = placeholder_loras(sd.lora_dir)
    sd.shared.opts.extra_networks_default_multiplier = 0.6
    original = request(prompt="a fox <lora:fox:0.7> running  <style:cinematic>",
                       negative_prompt="<lora:rain_v2> blurry",
                       section_prompts="1: jumps <lora:motion/rain.v2>\n2: <lora:unused:0> sits <lora:fox:0.7>")
    with caplog.at_level("INFO", logger="framepack"):
        prepared = SdnextHost().prepare_request(original)

    assert prepared.prompt == "a fox running"
    assert prepared.negative_prompt == "blurry"
    assert prepared.section_prompts == "1: jumps\n2: sits"
    assert [call["prompt"] for call in calls("modules.extra_networks", "parse_prompt")] == [
        original.prompt, original.negative_prompt, original.section_prompts]
    # one lookup through SD.Next for every LoRA with a nonzero weight, each name once
    assert calls("modules.lora.lora_load", "gather_networks") == [{"names": ["fox", "rain_v2", "motion/rain.v2"]}]
    assert [str(spec) for spec in prepared.loras] == [f"{fox}:0.7", f"{rain}:0.6"]  # default strength from SD.Next; one file once
    assert "<style:cinematic> is not supported by FramePack" in caplog.text
    # everything else is the same request, seed included
    assert prepared.seed == original.seed and prepared.variant == original.variant
    np.testing.assert_array_equal(prepared.image, original.image)
    assert original.prompt.startswith("a fox <lora:fox:0.7>")  # the submitted request is not changed


def test_a_request_without_tags_is_returned_as_is(sd):
    from framepack.host.sdnext import SdnextHost

    original = request(prompt="a fox <- a friend", section_prompts="1: a: b")
    assert SdnextHost().prepare_request(original) is original
    assert calls("modules.lora.lora_load", "gather_networks") == []


def test_request_loras_and_tags_add_up(sd):
    from framepack.host.sdnext import SdnextHost

    fox, rain = placeholder_loras(sd.lora_dir)
    prepared = SdnextHost().prepare_request(request(prompt="<lora:fox:1.5> a fox", loras=[f"{rain}:0.2"]))
    assert [str(spec) for spec in prepared.loras] == [f"{rain}:0.2", f"{fox}:1.5"]


@pytest.mark.parametrize("prompt, message", [
    ("<lora:nosuch:0.5> a fox", r"LoRA not found: nosuch \(SD.Next LoRA folder: .*Lora\)"),
    ("<lora:fox:0.5> <lora:fox:0.9>", "LoRA fox is given twice with different weights"),
    ("<lora:fox:0.5@0,1@1>", "the weight must be a number"),
    ("<lora:fox:nan>", "must be a finite number"),
    ("<lora::1>", "empty LoRA tag"),
    ("<lora:rain_v2:0.5> <lora:motion/rain.v2:1>", "LoRA rain.v2.safetensors is given twice with different"),
])
def test_bad_tags_are_input_errors(sd, prompt, message):
    from framepack.host.sdnext import SdnextHost

    placeholder_loras(sd.lora_dir)
    with pytest.raises(InputError, match=message):
        SdnextHost().prepare_request(request(prompt=prompt))


def test_a_failing_host_lookup_is_an_input_error(sd, monkeypatch):
    from modules.lora import lora_load

    from framepack.host.sdnext import SdnextHost

    def broken(names):
        raise OSError("share unreachable")

    monkeypatch.setattr(lora_load, "gather_networks", broken)
    with pytest.raises(InputError, match="SD.Next could not look up LoRA fox: OSError: share unreachable"):
        SdnextHost().prepare_request(request(prompt="<lora:fox>"))


def test_the_standalone_host_leaves_the_request_alone(tmp_path):
    from framepack.host.standalone import StandaloneHost

    original = request(prompt="a fox <lora:fox:0.7>")
    assert StandaloneHost(output_dir=tmp_path, model="unused").prepare_request(original) is original


# ----------------------------------------------------------------------------- jobs


def run_jobs(host, *requests, options=None):
    queue = JobQueue(host)
    try:
        jobs = [queue.submit(req, options) for req in requests]
        for job in jobs:
            assert job.wait(180), "job did not finish"
    finally:
        queue.shutdown()
    return jobs


def test_an_unknown_lora_fails_the_job_before_the_model_loads(sd):
    from framepack.host.sdnext import SdnextHost

    host = SdnextHost()
    [job] = run_jobs(host, request(prompt="a fox <lora:nosuch:0.8>"))
    assert job.status == Status.FAILED
    assert job.record.error.startswith("LoRA not found: nosuch") and "Networks tab" in job.record.error
    assert host.loaded_variant() is None and sd.calls("unload_model_weights") == []
    assert [entry["op"] for entry in sd.shared.state.state_history] == ["begin", "end"]  # the host job was closed


def test_a_pickled_lora_is_refused_with_its_name(sd):
    from framepack.host.sdnext import SdnextHost

    (sd.lora_dir / "old.ckpt").write_bytes(b"pickle")
    [job] = run_jobs(SdnextHost(), request(prompt="a fox <lora:old>"))
    assert job.status == Status.FAILED and "old.ckpt: only .safetensors files are loaded" in job.record.error


@needs_peft
def test_prompt_loras_are_active_while_sampling_and_gone_after(sd, monkeypatch):
    """Baseline, LoRA at 0.5, the same LoRA at 1.0 (re-weighted, not reloaded), then no tags again."""
    from framepack.engine import conditioning
    from framepack.host.sdnext import SdnextHost

    encoded: list[str] = []
    real_encode = conditioning.encode_text

    def spy_encode(pipe, prompt, *args, **kwargs):
        encoded.append(prompt)
        return real_encode(pipe, prompt, *args, **kwargs)

    monkeypatch.setattr(conditioning, "encode_text", spy_encode)

    host = SdnextHost()
    seen: list[dict] = []
    stage_enter = host.models.stage_enter

    def probe_at_sampling(name):
        stage_enter(name)
        pipe = host.models.pipe
        if name == "sample" and pipe is not None:
            probe = dict(pipe.transformer.named_modules())[PROBE]
            scaling = dict(getattr(probe, "scaling", {}))
            seen.append({"adapters": loaded_adapters(pipe), "scaling": scaling,
                              "layers": {k: id(v) for k, v in getattr(probe, "lora_A", {}).items()},
                              "pipe": id(pipe)})

    monkeypatch.setattr(host.models, "stage_enter", probe_at_sampling)
    pipe = host.pipeline("f1")
    fox = write_lora(sd.lora_dir / "fox.safetensors", pipe.transformer, seed=1)
    options = OutputOptions(save_video=False, save_frames=True)
    section = "1: <lora:fox:{w}> jumps\n2: sits"
    jobs = run_jobs(
        host,
        request(section_prompts=section.replace(" <lora:fox:{w}>", ""), cfg=1.5, negative_prompt="blurry"),
        request(section_prompts=section.format(w=0.5), cfg=1.5, negative_prompt="<lora:fox:0.5> blurry"),
        request(section_prompts=section.format(w=1.0), cfg=1.5, negative_prompt="blurry"),
        request(section_prompts=section.replace(" <lora:fox:{w}>", ""), cfg=1.5, negative_prompt="blurry"),
        options=options)
    assert [job.status for job in jobs] == [Status.COMPLETED] * 4, [job.record.error for job in jobs]

    # the text encoder never sees a tag
    assert encoded and not any("<" in prompt for prompt in encoded)
    assert set(encoded) == {"a fox jumps", "a fox sits", "blurry"}, encoded

    per_job = len(seen) // 4  # one record per section sampled
    assert per_job >= 1 and len(seen) == 4 * per_job
    chunks = [seen[i * per_job:(i + 1) * per_job] for i in range(4)]
    assert all(chunk == chunk[:1] * per_job for chunk in chunks)  # the same adapters in every section
    baseline, half, full, after = (chunk[0] for chunk in chunks)
    assert baseline["adapters"] == [] and after["adapters"] == []  # nothing active without tags
    [name] = half["adapters"]
    assert name.startswith("fox_") and full["adapters"] == [name]
    assert half["scaling"] == {name: pytest.approx(0.5)} and full["scaling"] == {name: pytest.approx(1.0)}
    assert full["layers"] == half["layers"]  # re-weighted in place: the LoRA was not loaded again
    assert len({record["pipe"] for record in seen}) == 1  # nor the model
    assert len(sd.calls("unload_model_weights")) == 1  # only the first load cleared the host's model
    assert loaded_adapters(pipe) == []  # and nothing is left on the model after the last job

    frames = [load_file(job.record.frames)["frames"].astype(np.int16) for job in jobs]
    assert np.abs(frames[1] - frames[0]).mean() > 0.05
    assert np.abs(frames[2] - frames[0]).mean() > np.abs(frames[1] - frames[0]).mean()
    np.testing.assert_array_equal(frames[3], frames[0])  # back to the plain model
