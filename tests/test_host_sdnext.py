"""Contract tests: SdnextHost inside the fake SD.Next (tests/fake_sdnext), tiny model, CPU.

A generation through the job queue must use exactly the host services of docs/HOST.md: the
GPU lock, shared.state progress / preview / Stop / Skip / Pause, the host video folder and
keep-incomplete setting, recorded outputs, timers, progress-bar tasks, and the model lifecycle
(shared.sd_model registration, SDNQ args from get_dit_args, post-load quantization, balanced
offload around every stage, SigLIP moved explicitly, unload and switch-back).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_sdnext.harness import FakeSdnext
from framepack.errors import ModelError
from framepack.request.events import Progress, SectionDone, Status
from framepack.jobs.queue import JobQueue
from framepack.request.model import build_request

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False, preview=True)
STAGES = ("text", "vision", "vae_encode", "sample", "vae_decode")


def request(seed=1, sections=2, variant="f1", **overrides):
    image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fields = {**FAST, "variant": variant, "image": image, "prompt": "rain", "seed": seed,
              "duration": 0.4 * sections, **overrides}
    return build_request(**fields)


@pytest.fixture
def sd(tmp_path, tiny_model_dir):
    """The fake SD.Next after startup, with the FramePack settings registered and the tiny model
    selected through the real recipe setting."""
    with FakeSdnext(tmp_path) as fake:
        from framepack.host import sdnext

        sdnext.register_settings()
        fake.finish_startup()
        fake.shared.opts.framepack_model_recipe = json.dumps({"folder": str(tiny_model_dir)})
        fake.shared.opts.sd_model_checkpoint = "sdxl-base"
        fake.model_quant.fake_quant_args.clear()
        yield fake
        fake.model_quant.fake_quant_args.clear()


def make_host(cls=None):
    from framepack.host.sdnext import SdnextHost

    return (cls or SdnextHost)()


def run(host, req, options=None, task_id=None, timeout=120):
    queue = JobQueue(host)
    host.queue = queue
    try:
        job = queue.submit(req, options, task_id=task_id)
        assert job.wait(timeout), "job did not finish"
    finally:
        queue.shutdown()
    return job


class SpyFromPretrained:
    """Records the kwargs of `cls.from_pretrained` and drops the fake SDNQ config before loading."""

    def __init__(self, monkeypatch, cls):
        self.calls: list[dict] = []
        original = cls.from_pretrained

        def spy(klass, *args, **kwargs):
            self.calls.append(dict(kwargs))
            kwargs.pop("quantization_config", None)
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))


def test_generation_uses_the_host_services(sd, monkeypatch, tiny_model_dir):
    from diffusers import HunyuanVideoFramepackTransformer3DModel
    from transformers import LlamaModel

    transformer_spy = SpyFromPretrained(monkeypatch, HunyuanVideoFramepackTransformer3DModel)
    text_spy = SpyFromPretrained(monkeypatch, LlamaModel)
    model_config, te_config = object(), object()
    sd.model_quant.fake_quant_args.update({"Model": {"quantization_config": model_config},
                                           "TE": {"quantization_config": te_config}})
    state = sd.shared.state
    host = make_host()
    assert host.loaded_variant() is None and sd.modeldata.model_data.fake_loads == []

    job = run(host, request(sections=2), task_id="task(abc123)")

    assert job.status == Status.COMPLETED, job.record.error
    # outputs: host video folder, recorded in shared.state
    video_dir = sd.tmp / "outputs" / "video"
    video = Path(job.record.video)
    assert video.parent == video_dir and video.stat().st_size > 0
    recorded = [entry["outputs"] for entry in state.state_history if entry["op"] == "output"]
    assert recorded and job.record.video in recorded[-1]
    # progress over the whole video: 2 sections x 2 steps
    steps = [step for step, total in state.fake_steps if total == 4]
    assert steps[-1] == 4 and steps == sorted(steps) and len(steps) == 4
    assert any(text.startswith("FramePack: section") for text in state.fake_textinfo)
    assert any(text.startswith("FramePack: completed") for text in state.fake_textinfo)
    # live preview
    assert state.fake_previews and all(isinstance(image, Image.Image) for image in state.fake_previews)
    assert state.id_live_preview == len(state.fake_previews)
    # GPU lock held by the job, for every host model call
    assert sd.call_queue.fake_acquisitions == 1
    assert sd.sd_models.fake_calls and all(details["lock"] for _, details in sd.sd_models.fake_calls)
    # the pipeline is the host's model: unload first, then registered, checkpoint info set
    pipe = host.pipeline("f1")
    names = [name for name, _ in sd.sd_models.fake_calls]
    assert names[0] == "unload_model_weights"
    assert sd.shared.sd_loaded and sd.shared.sd_model is pipe
    assert pipe.sd_checkpoint_info.name == f"{tiny_model_dir}/transformer_f1"
    assert sd.modeldata.model_data.fake_loads == []  # never triggered a host model load
    # balanced offload: at load, once per change of the component a stage runs, once after the job
    balanced = sd.calls("apply_balanced_offload")
    assert all(details["model"] is pipe and details["applied"] for details in balanced)
    stages = [text for text in state.fake_textinfo if text in
              {"FramePack: encoding prompt", "FramePack: encoding image (SigLIP)",
               "FramePack: encoding image (VAE)", "FramePack: sampling", "FramePack: decoding frames"}]
    assert sorted(stages) == sorted(["FramePack: encoding prompt", "FramePack: encoding image (SigLIP)",
                                     "FramePack: encoding image (VAE)"]
                                    + 2 * ["FramePack: sampling", "FramePack: decoding frames"])
    assert stages[-4:] == 2 * ["FramePack: sampling", "FramePack: decoding frames"]
    assert len(balanced) == 1 + len(stages) + 1  # each stage runs another component: 9 (every enter and exit: 15)
    # SigLIP moved explicitly to the host device
    moves = sd.calls("move_model")
    assert any(m["model"] is pipe.image_encoder and m["device"] == sd.devices.device and m["force"] for m in moves)
    # quantization arguments from get_dit_args reach from_pretrained; post-load quantization runs
    dit = [details for name, details in sd.model_quant.fake_calls if name == "get_dit_args"]
    assert [(d["module"], d["device_map"]) for d in dit] == [("Model", True), ("TE", True)]
    assert transformer_spy.calls[0]["quantization_config"] is model_config
    assert transformer_spy.calls[0]["torch_dtype"] == sd.devices.dtype
    assert text_spy.calls[0]["quantization_config"] is te_config
    post = [details for name, details in sd.model_quant.fake_calls if name == "do_post_load_quant"]
    assert len(post) == 1 and post[0]["model"] is pipe and post[0]["allow"] is False
    # timers from the stage timings
    assert set(STAGES) | {"load"} <= set(sd.timer.process.records)
    # the progress-bar task: queued, active while the job ran, finished; state id = task id
    assert sd.progress.fake_calls == [("add", "task(abc123)"), ("start", "task(abc123)"),
                                      ("finish", "task(abc123)")]
    assert [e["id"] for e in state.state_history if e["op"] == "begin"] == ["abc123"]


def reacting_host(react):
    """An SdnextHost that records every event and lets the test act on shared.state meanwhile."""
    from framepack.host.sdnext import SdnextHost

    class Host(SdnextHost):
        def report(self, event):
            super().report(event)
            self.events.append(event)
            from modules import shared

            react(event, shared.state)

    host = Host()
    host.events = []
    return host


@pytest.mark.parametrize("keep", [True, False])
def test_stop_keeps_a_partial_video_only_with_keep_incomplete(sd, keep):
    sd.shared.opts.keep_incomplete = keep

    def stop_after_first_section(event, state):
        if isinstance(event, SectionDone):
            state.interrupt()  # what the host's Stop button and POST /sdapi/v1/interrupt do

    host = reacting_host(stop_after_first_section)
    job = run(host, request(sections=3))
    assert job.status == Status.INTERRUPTED and job.record.sections_done == 1
    videos = list((sd.tmp / "outputs" / "video").glob("*.mp4"))
    outputs = [e for e in sd.shared.state.state_history if e["op"] == "output"]
    if keep:
        assert job.record.video is not None and videos == [Path(job.record.video)] and outputs
    else:
        assert job.record.video is None and videos == [] and outputs == []


def test_skip_ends_the_current_section_early(sd):
    def skip_first_step(event, state):
        if isinstance(event, Progress) and event.position == 0 and event.step == 1:
            state.skip()

    host = reacting_host(skip_first_step)
    job = run(host, request(sections=2, steps=3))
    assert job.status == Status.COMPLETED, job.record.error
    done = [e for e in host.events if isinstance(e, SectionDone)]
    assert [e.skipped for e in done] == [True, False]
    first_section_steps = [e.step for e in host.events if isinstance(e, Progress) and e.position == 0]
    assert first_section_steps == [1]
    assert sd.shared.state.skipped is False  # one skip per click


def test_pause_waits_until_resumed(sd):
    def pause_once(event, state):
        if isinstance(event, Progress) and event.position == 0 and event.step == 1 and not host.paused_once:
            host.paused_once = True
            state.pause()
            threading.Timer(0.4, state.pause).start()  # the button toggles

    host = reacting_host(pause_once)
    host.paused_once = False
    started = time.perf_counter()
    job = run(host, request(sections=1))
    assert job.status == Status.COMPLETED and time.perf_counter() - started >= 0.4


def test_lifecycle_load_on_use_switch_back_and_unload(sd):
    host = make_host()
    assert host.loaded_variant() is None
    assert sd.modeldata.model_data.fake_loads == []  # checking never loads the host's model

    first = host.pipeline("f1")
    assert host.loaded_variant() == "f1" and sd.shared.sd_model is first
    assert host.pipeline("f1") is first  # reused

    # the user picks an image model again: the host unloads ours and loads its own
    sd.sd_models.unload_model_weights()
    assert sd.shared.sd_model.name == "sdxl-base"
    assert sd.modeldata.model_data.fake_loads == ["sdxl-base"]
    assert host.loaded_variant() is None  # our reference is dropped

    second = host.pipeline("original")
    assert second is not first and sd.shared.sd_model is second and host.loaded_variant() == "original"
    unloads = len(sd.calls("unload_model_weights"))
    host.unload()
    assert len(sd.calls("unload_model_weights")) == unloads + 1
    assert not sd.shared.sd_loaded and host.loaded_variant() is None
    assert sd.modeldata.model_data.fake_loads == ["sdxl-base"]  # unloading did not trigger a host load


def test_unload_during_a_job_waits_for_the_job(sd):
    def unload_mid_job(event, state):
        if isinstance(event, SectionDone) and event.position == 0:
            host.unload()
            host.unload_requested_while_running = host.loaded_variant()

    host = reacting_host(unload_mid_job)
    job = run(host, request(sections=2))
    assert job.status == Status.COMPLETED and host.unload_requested_while_running == "f1"
    assert host.loaded_variant() is None and not sd.shared.sd_loaded


def test_settings_changes_reload_the_model(sd):
    host = make_host()
    first = host.pipeline("f1")
    sd.shared.opts.framepack_offload = "none"  # FramePack's own mode instead of the host's
    second = host.pipeline("f1")
    assert second is not first


def test_host_offload_modes_other_than_balanced(sd):
    sd.shared.opts.diffusers_offload_mode = "group"  # the one that runs on a CPU too
    host = make_host()
    job = run(host, request(sections=1))
    assert job.status == Status.COMPLETED, job.record.error
    pipe = host.pipeline("f1")
    assert [d["model"] for d in sd.calls("set_diffuser_offload")] == [pipe]
    assert not [d for d in sd.calls("apply_balanced_offload") if d["applied"]]


def test_the_job_records_its_resource_plan_for_the_loaded_model_without_refusing(sd, tiny_model_dir):
    host = make_host()
    machine = host.resource_machine("f1")
    assert machine.enforce is False and machine.offload == "model"  # balanced is SD.Next's: shown, never refused
    assert machine.configs["transformer"]["num_layers"] == 1  # the tiny model's own config, not the full size
    job = run(host, request(sections=1))
    assert job.status == Status.COMPLETED, job.record.error
    resources = job.record.resources
    assert resources["fits"] and resources["ram_peak_bytes"] < 2 * 2**30 and resources["vae_tiling"] is False  # full size: 40+ GiB


def test_framepack_offload_setting_bypasses_the_host_offload(sd):
    sd.shared.opts.framepack_offload = "none"
    host = make_host()
    pipe = host.pipeline("f1")
    assert sd.calls("set_diffuser_offload") == [] and sd.calls("apply_balanced_offload") == []
    assert pipe.transformer.device.type == sd.devices.device.type


def test_sdnq_and_framepack_quantization_together_are_refused(sd):
    sd.shared.opts.framepack_quantization = "quanto-int8"
    sd.model_quant.fake_quant_args["Model"] = {"quantization_config": object()}
    host = make_host()
    with pytest.raises(ModelError, match="quanto-int8.*SDNQ.*transformer.*turn one of them off"):
        host.pipeline("f1")
    assert sd.calls("unload_model_weights") == []  # refused before the host model was touched


def test_framepack_quantization_inside_sdnext(sd):
    pytest.importorskip("optimum.quanto")
    from framepack.models.quantize import quantized_with

    sd.shared.opts.framepack_quantization = "quanto-int8"
    host = make_host()
    pipe = host.pipeline("f1")
    assert quantized_with(pipe.transformer) == "quanto" and quantized_with(pipe.text_encoder) == "quanto"
    assert [n for n, _ in sd.model_quant.fake_calls if n == "do_post_load_quant"] == []  # no double quantization


def test_settings_options_and_folders(sd, tmp_path):
    host = make_host()
    opts = sd.shared.opts
    assert "framepack_codec" not in opts.data  # registered defaults are not in opts.data ...
    assert host.option("framepack_codec") == "libx264"  # ... but are read through opts.get
    assert host.option("no_such_option", 7) == 7
    opts.framepack_crf = 20
    assert host.output_defaults()["crf"] == 20 and host.output_defaults()["keep_incomplete"] is True
    assert host.request_defaults() == {"variant": "original", "teacache_threshold": 0.15}
    assert host.video_dir() == sd.tmp / "outputs" / "video"
    opts.outdir_video = str(tmp_path / "elsewhere")  # an absolute video folder ignores the base
    assert host.video_dir() == tmp_path / "elsewhere" and host.video_dir().is_dir()
    opts.offline_mode = True
    assert host.offline_mode() is True and host.hf_cache_dir() == str(sd.tmp / "hfcache")
    assert host.torch_device() == sd.devices.device and host.torch_dtype() == sd.devices.dtype
    host.gc()
    assert sd.devices.fake_gc_calls[-1]["force"] is True
    host.add_timer("decode", 0.5)
    assert sd.timer.process.records["decode"] == 0.5
    error = RuntimeError("boom")
    host.display_error(error, "FramePack")
    assert sd.errors.fake_displayed[-1] == ("FramePack", error)
    assert host.logger() is sd.shared.log
    with host.gpu_lock():
        assert sd.call_queue.queue_lock.locked()


def test_job_failure_is_reported_not_raised(sd):
    sd.shared.opts.framepack_model_recipe = "folder: /no/such/folder"
    job = run(make_host(), request(sections=1))
    assert job.status == Status.FAILED and "does not exist" in job.record.error
    assert sd.calls("unload_model_weights") == []  # a broken recipe never unloads the host's model


def test_recipe_setting_syntax(tiny_model_dir):
    from framepack.host.sdnext import parse_recipe_setting

    default = parse_recipe_setting("", "f1")
    assert default["transformer"].source == "lllyasviel/FramePack_F1_I2V_HY_20250503"
    local = parse_recipe_setting(f"folder: {tiny_model_dir}\n# comment\nvae = org/vae-repo/vae", "original")
    assert local["vae"].source == "org/vae-repo" and local["vae"].subfolder == "vae"
    assert local["transformer"].describe() == f"{tiny_model_dir}/transformer"
    text = json.dumps({"transformer_f1": "me/my-f1", "transformer_original": "me/my-original"})
    assert parse_recipe_setting(text, "f1")["transformer"].source == "me/my-f1"
    assert parse_recipe_setting(text, "original")["transformer"].source == "me/my-original"
    with pytest.raises(ModelError, match="unknown key.*unet"):
        parse_recipe_setting("unet: a/b", "f1")
    with pytest.raises(ModelError, match="not valid JSON"):
        parse_recipe_setting("{bad", "f1")
    with pytest.raises(ModelError, match="line 1: expected 'role: source'"):
        parse_recipe_setting("just text", "f1")


def test_sdnext_module_imports_nothing_from_sdnext_or_torch_at_import():
    import subprocess
    import sys

    code = ("import sys; import framepack.host.sdnext as s; "
            "bad = [m for m in sys.modules if m == 'modules' or m.startswith(('modules.', 'torch', 'diffusers'))]; "
            "print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_failing_setup_never_leaves_a_half_pipeline_as_the_host_model(sd):
    sd.shared.opts.framepack_offload = "model"  # needs an accelerator; this machine is a CPU
    job = run(make_host(), request(sections=1))
    assert job.status == Status.FAILED and "needs an accelerator" in job.record.error
    assert not sd.shared.sd_loaded  # registered, then released again


# ----------------------------------------------------------------------------- what the real SD.Next run showed


def test_turning_sdnq_on_or_off_in_sdnext_reloads_the_model(sd, monkeypatch, caplog):
    """SD.Next 058a7f0: the reload key had only our recipe, quantization and offload, so SDNQ changes
    did nothing to a loaded model, and a model loaded with SDNQ stayed quantized after it was turned off."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel
    from transformers import LlamaModel

    spy = SpyFromPretrained(monkeypatch, HunyuanVideoFramepackTransformer3DModel)
    SpyFromPretrained(monkeypatch, LlamaModel)
    host = make_host()
    plain = host.pipeline("f1")
    assert spy.calls[-1].get("quantization_config") is None
    sd.shared.opts.sdnq_quantize_weights = ["Model", "TE"]  # Settings -> Model Quantization
    quantized = host.pipeline("f1")
    assert quantized is not plain and spy.calls[-1]["quantization_config"].weights_dtype == "int8"
    assert "SD.Next's quantization settings changed; reloading the model" in caplog.text
    sd.shared.opts.sdnq_quantize_weights_mode = "int4"  # any setting of that section counts
    assert host.pipeline("f1") is not quantized and spy.calls[-1]["quantization_config"].weights_dtype == "int4"
    sd.shared.opts.sdnq_quantize_weights = []
    unquantized = host.pipeline("f1")
    assert spy.calls[-1].get("quantization_config") is None and host.pipeline("f1") is unquantized


def test_a_refused_combination_leaves_the_loaded_model_alone(sd):
    host = make_host()
    pipe = host.pipeline("f1")
    unloads = len(sd.calls("unload_model_weights"))
    sd.shared.opts.framepack_quantization = "quanto-int8"
    sd.shared.opts.sdnq_quantize_weights = ["Model"]
    with pytest.raises(ModelError, match="turn one of them off"):
        host.pipeline("f1")
    assert len(sd.calls("unload_model_weights")) == unloads  # nothing unloaded ...
    assert sd.shared.sd_model is pipe and host.loaded_variant() == "f1"  # ... the working model stays


def test_host_sequential_offload_keeps_siglip_out_of_the_leaf_hooks(sd, monkeypatch):
    """SD.Next's sequential offload (enable_sequential_cpu_offload) broke every job in SigLIP
    (TypeError in accelerate's set_module_tensor_to_device): the image encoder is excluded."""
    import torch

    sd.shared.opts.diffusers_offload_mode = "sequential"
    host = make_host()
    pipe = host.pipeline("f1")  # on this CPU: no hooks at all (next test)
    monkeypatch.setattr(sd.devices, "device", torch.device("cuda"))  # what an accelerator machine passes on
    host._apply_offload(pipe, "sequential")
    (call,) = sd.calls("set_diffuser_offload")
    assert call["mode"] == "sequential" and "image_encoder" in call["exclude"]


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_host_model_and_sequential_offload_on_a_cpu_run_without_hooks(sd, mode, caplog):
    """Both move weights between the CPU and an accelerator; on a CPU, accelerate's leaf hooks fail for
    every layer (diffusers passes the execution device "cpu:0"), so jobs run without them."""
    sd.shared.opts.diffusers_offload_mode = mode
    host = make_host()
    job = run(host, request(sections=1))
    assert job.status == Status.COMPLETED, job.record.error
    assert sd.calls("set_diffuser_offload") == [] and f"SD.Next's {mode} offload has no accelerator" in caplog.text


def test_host_group_offload_failure_is_a_clear_message(sd, monkeypatch):
    """diffusers 0.39's group offload fails at load on a machine without an accelerator; SD.Next lets
    the error through: the job says what failed and what to change, not 'internal error'."""
    from framepack.host.sdnext import _pipeline_class

    def no_accelerator(self, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'type'")

    monkeypatch.setattr(_pipeline_class(), "enable_group_offload", no_accelerator)
    sd.shared.opts.diffusers_offload_mode = "group"
    job = run(make_host(), request(sections=1))
    assert job.status == "failed" and not job.record.error.startswith("internal error")
    assert "SD.Next's group offload could not be applied" in job.record.error and "NoneType" in job.record.error
    assert "Model offload mode" in job.record.error
    assert not sd.shared.sd_loaded  # nothing half set up is left as the host's model


def test_the_unload_message_says_what_happened(sd, caplog):
    host = make_host()
    host.pipeline("f1")
    sd.sd_models.unload_model_weights()  # SD.Next's own "Unload model": nothing else is loaded
    assert host.loaded_variant() is None
    assert "SD.Next unloaded the FramePack model" in caplog.text and "switched to another model" not in caplog.text
    caplog.clear()
    host.pipeline("f1")
    sd.shared.sd_model = object()  # the user picked another model
    assert host.loaded_variant() is None and "SD.Next switched to another model" in caplog.text


def test_progress_api_is_idle_after_a_job(sd):
    """SD.Next's end() leaves the step counters, and /sdapi/v1/progress reports a fraction and an ETA
    until job_count == 0 and sampling_step == 0: an interrupted job left it at 0.29 while idle."""
    def stop_in_second_section(event, state):
        if isinstance(event, SectionDone):
            state.interrupt()

    job = run(reacting_host(stop_in_second_section), request(sections=3))
    state = sd.shared.state
    assert job.status == Status.INTERRUPTED
    assert (state.job_count, state.sampling_step, state.sampling_steps) == (0, 0, 0)
    assert not state.interrupted and not state.textinfo


def test_jobs_leave_started_finished_and_failed_lines_in_the_host_log(sd, caplog):
    import logging

    records = []
    sd.shared.log.addHandler(handler := logging.Handler())
    handler.emit = records.append
    try:
        done = run(make_host(), request(sections=1))
        sd.shared.opts.framepack_quantization = "quanto-int8"
        sd.shared.opts.sdnq_quantize_weights = ["Model"]
        refused = run(make_host(), request(sections=1))
    finally:
        sd.shared.log.removeHandler(handler)
    lines = [record.getMessage() for record in records]
    assert any(line.startswith(f"FramePack job {done.id} started: ") for line in lines)
    assert f"FramePack job {done.id} completed: " in "\n".join(lines) and str(done.record.video) in "\n".join(lines)
    failed = [line for line in lines if line.startswith(f"FramePack job {refused.id} failed")]
    assert failed and "turn one of them off" in failed[0]
    assert [r.levelname for r in records if r.getMessage() == failed[0]] == ["WARNING"]
