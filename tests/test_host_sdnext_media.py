"""SD.Next's own media tools through the host (framepack/host/sdnext_media.py): RIFE, upscalers,
the prompt enhancer and "send to Process".

Two kinds of test:
- contract: the names and signatures our code calls, read with `ast` from the vendored SD.Next
  snapshot (../shared/vendor, never imported or launched), and the fake SD.Next's versions of
  them have the same signatures;
- behaviour: inside the fake SD.Next (tests/fake_sdnext), tiny model, CPU.
"""

from __future__ import annotations

import ast
import inspect
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from fake_sdnext.harness import FakeSdnext
from framepack.errors import FramePackError, InputError, InputErrors

VENDOR = Path(__file__).resolve().parents[1].parent / "shared" / "vendor" / "sdnext-058a7f0.tar.gz"
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the real SD.Next

@pytest.fixture(scope="module")
def vendor():
    """{path: source} of the SD.Next snapshot files the contract names."""
    if not VENDOR.is_file():
        pytest.skip(f"vendored SD.Next snapshot not found at {VENDOR}")
    wanted = {"modules/processing_video.py", "modules/upscaler.py", "modules/shared.py", "modules/ui_video_vlm.py",
              "modules/script_callbacks.py", "modules/ui_postprocessing.py", "modules/rife/__init__.py",
              "modules/api/api.py", "ui/ui.ts", "modules/image/resize.py"}
    found = {}
    with tarfile.open(VENDOR) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name not in wanted and "/" in name:  # an archive with a top folder
                name = name.split("/", 1)[1]
            if name in wanted and member.isfile():
                found[name] = archive.extractfile(member).read().decode("utf-8")
    assert set(found) == wanted, f"missing from the snapshot: {wanted - set(found)}"
    return found


def _function(source: str, name: str, cls: str | None = None) -> ast.FunctionDef:
    tree = ast.parse(source)
    scope = tree.body
    if cls is not None:
        scope = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == cls).body
    return next(node for node in scope if isinstance(node, ast.FunctionDef) and node.name == name)


def _params(function: ast.FunctionDef) -> list[str]:
    return [a.arg for a in function.args.posonlyargs + function.args.args + function.args.kwonlyargs]


def _module_names(source: str) -> set[str]:
    return {target.id for node in ast.parse(source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}


def test_contract_rife(vendor):
    function = _function(vendor["modules/processing_video.py"], "apply_video_interpolation")
    assert _params(function) == ["p", "frames", "count", "scale", "pad", "change"]
    body = ast.get_source_segment(vendor["modules/processing_video.py"], function)
    # a numpy batch goes to rife.interpolate_nchw with count + 1 (N * (count + 1) frames back), and a
    # failure returns the input unchanged: the two facts HostRife is built on
    assert "isinstance(frames, np.ndarray)" in body and "interpolate_nchw(t, count=count + 1" in body
    assert "return frames" in body.split("except Exception")[1]
    nchw = ast.get_source_segment(vendor["modules/rife/__init__.py"],
                                  _function(vendor["modules/rife/__init__.py"], "interpolate_nchw"))
    assert "I1 = f_pad(images[0].unsqueeze(0))" in nchw  # the first frame is paired with itself
    assert "for i in range(count-1)" in nchw


def test_contract_upscalers(vendor):
    source = vendor["modules/upscaler.py"]
    assert _params(_function(source, "do_upscale", "Upscaler")) == ["self", "img", "selected_model"]
    upscale = ast.get_source_segment(source, _function(source, "upscale", "Upscaler"))
    assert "shared.state.begin(" in upscale and "self.scale = scale" in upscale  # why we call do_upscale
    assert _params(_function(source, "__init__", "UpscalerData")) == ["self", "name", "path", "upscaler", "scale",
                                                                     "model"]
    assert "sd_upscalers" in _module_names(vendor["modules/shared.py"])
    resize = vendor["modules/image/resize.py"]
    assert "x.name.lower().replace('-', ' ') == upscaler_name.lower().replace('-', ' ')" in resize  # name match
    assert "selected_upscaler.name.lower().startswith('latent')" in resize  # latent ones need latents
    assert '"/sdapi/v1/upscalers"' in vendor["modules/api/api.py"]


def test_contract_prompt_enhancer(vendor):
    source = vendor["modules/ui_video_vlm.py"]
    assert _params(_function(source, "enhance_prompt")) == ["enable", "model", "image", "prompt", "system_prompt",
                                                           "nsfw"]
    assert "models" in _module_names(source)
    assert '"/sdapi/v1/prompt-enhance"' in vendor["modules/api/api.py"]  # why our API has no enhancer route


def test_contract_send_to_process(vendor):
    assert _params(_function(vendor["modules/script_callbacks.py"], "on_after_component")) == ["callback"]
    dispatch = ast.get_source_segment(vendor["modules/script_callbacks.py"],
                                      _function(vendor["modules/script_callbacks.py"], "after_component_callback"))
    assert "c.callback(component, **kwargs)" in dispatch
    ui = vendor["modules/ui_postprocessing.py"]
    assert 'elem_id="extras_video"' in ui and "gr.Video(" in ui  # the Process tab takes videos
    assert "gr.Tab('Process Video', id=\"process_video\", elem_id=\"extras_process_video_tab\")" in ui
    assert "tab_process_video.select(fn=lambda: 3" in ui  # selecting the sub-tab switches the mode to video
    assert "function switch_to_extras(" in vendor["ui/ui.ts"]
    assert "window.switch_to_extras = switch_to_extras" in vendor["ui/ui.ts"]


def test_contract_our_calls_use_the_real_keywords(vendor):
    """Every keyword sdnext_media passes to an SD.Next function is a parameter of the real one."""
    real = {
        "apply_video_interpolation": _params(_function(vendor["modules/processing_video.py"],
                                                       "apply_video_interpolation")),
        "enhance_prompt": _params(_function(vendor["modules/ui_video_vlm.py"], "enhance_prompt")),
        "do_upscale": _params(_function(vendor["modules/upscaler.py"], "do_upscale", "Upscaler"))[1:],
    }
    ours = ast.parse((ROOT / "framepack" / "host" / "sdnext_media.py").read_text())
    seen = set()
    for node in ast.walk(ours):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            qualified = ast.unparse(node.func)
            if name in real and (name != "enhance_prompt" or qualified.startswith("ui_video_vlm.")):
                seen.add(name)
                assert len(node.args) + len(node.keywords) <= len(real[name])
                assert {k.arg for k in node.keywords} <= set(real[name]), (name, real[name])
    assert seen == set(real)


def test_the_fake_has_the_real_signatures(vendor):
    with FakeSdnext(Path("/tmp")):
        from modules import processing_video, script_callbacks, ui_video_vlm, upscaler

        pairs = [
            (processing_video.apply_video_interpolation, vendor["modules/processing_video.py"],
             "apply_video_interpolation", None),
            (ui_video_vlm.enhance_prompt, vendor["modules/ui_video_vlm.py"], "enhance_prompt", None),
            (upscaler.Upscaler.do_upscale, vendor["modules/upscaler.py"], "do_upscale", "Upscaler"),
            (upscaler.UpscalerData.__init__, vendor["modules/upscaler.py"], "__init__", "UpscalerData"),
            (script_callbacks.on_after_component, vendor["modules/script_callbacks.py"], "on_after_component", None),
        ]
        for fake, source, name, cls in pairs:
            assert list(inspect.signature(fake).parameters) == _params(_function(source, name, cls)), name


# ----------------------------------------------------------------------------- inside the fake

@pytest.fixture
def sd(tmp_path):
    with FakeSdnext(tmp_path) as fake:
        from modules import upscaler

        fake.shared.sd_upscalers = upscaler.fake_upscalers()
        fake.processing_video.fake_calls.clear()
        fake.processing_video.fake_fail[0] = False
        yield fake


def _frames(count=5, height=16, width=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_host_rife_streams_like_one_pass(sd):
    from framepack.host.sdnext_media import HostRife
    from framepack.io.interpolate import InterpolatingSink, blend_between

    frames, k = _frames(7), 2
    out: list[np.ndarray] = []
    sink = InterpolatingSink(out.append, k, "rife", model=HostRife())
    for batch in (frames[:3], frames[3:4], frames[4:]):  # sections of any size
        sink.write(batch)
    video = np.concatenate(out)
    assert len(video) == (len(frames) - 1) * (k + 1) + 1
    assert np.array_equal(video[::k + 1], frames)  # originals exactly as generated
    for i in range(len(frames) - 1):  # in-betweens: the host's (the fake blends), across batch joins too
        expected = np.stack(blend_between(frames[i], frames[i + 1], k)).astype(int)
        assert np.abs(video[i * (k + 1) + 1:(i + 1) * (k + 1)].astype(int) - expected).max() <= 1
    assert [c["frames"] for c in sd.processing_video.fake_calls] == [3, 2, 4]  # one host call per batch


def test_host_rife_failure_is_an_error(sd):
    from framepack.host.sdnext_media import HostRife

    sd.processing_video.fake_fail[0] = True
    with pytest.raises(FramePackError, match="RIFE"):
        HostRife().interpolate_batch(None, _frames(3), 1)


def test_host_upscaler(sd):
    from framepack.host.sdnext import SdnextHost

    host = SdnextHost()
    sd.shared.state.interrupted = True  # a Stop pressed while frames are upscaled is not lost
    model = next(u.scaler for u in sd.shared.sd_upscalers if u.name == "ESRGAN 4x-Fake")
    upscale = host.host_upscaler("sdnext:esrgan 4x fake", 2.0)  # SD.Next's name matching
    frames = _frames(3, 15, 21)
    out = upscale(frames)
    assert out.shape == (3, 30, 42, 3) and out.dtype == np.uint8
    assert model.calls == 3  # one model pass per frame (4x), then Lanczos down to 2x
    assert sd.shared.state.interrupted is True
    assert host.host_upscaler("sdnext:Resize Lanczos", 1.5)(frames).shape == (3, 22, 32, 3)
    assert host.host_upscaler_names() == ["sdnext:Resize Lanczos", "sdnext:Resize Nearest",
                                          "sdnext:ESRGAN 4x-Fake", "sdnext:ESRGAN Broken"]
    for name in ("sdnext:Latent Nearest", "sdnext:None", "sdnext:nope"):
        with pytest.raises(InputError, match="no upscaler") as error:
            host.host_upscaler(name, 2.0)
        assert error.value.field == ("output", "upscaler")
    with pytest.raises(FramePackError, match="did not upscale"):
        host.host_upscaler("sdnext:ESRGAN Broken", 2.0)(frames)


def test_prompt_enhancer(sd):
    from modules import ui_video_vlm

    from framepack.host.sdnext import SdnextHost

    host = SdnextHost()
    image = _frames(1, 32, 48)[0]
    answer = host.enhance_prompt("a fox", image=image)
    assert answer == "a fox, the camera slowly pushes in (48x32 image)"
    call = ui_video_vlm.fake_calls[-1]
    assert call["enable"] is True and call["prompt"] == "a fox" and call["image"].size == (48, 32)
    assert host.enhancer_models() == ["Google Gemma 3 4B"]
    with pytest.raises(InputError, match="unknown prompt enhancer model"):
        host.enhance_prompt("a fox", model="GPT-9")
    ui_video_vlm.fake_answer[0] = ""
    try:
        with pytest.raises(FramePackError, match="no answer"):
            host.enhance_prompt("a fox")
    finally:
        ui_video_vlm.fake_answer[0] = None


def test_prompt_enhancer_waits_for_the_gpu(sd):
    from framepack.host.sdnext import SdnextHost

    host = SdnextHost()
    answers = []
    with host.gpu_lock():  # a job is running
        worker = threading.Thread(target=lambda: answers.append(host.enhance_prompt("rain")))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive() and not answers
    worker.join(10)
    assert answers == ["rain, the camera slowly pushes in"]


def test_send_to_process(sd):
    import gradio as gr

    from framepack.host import sdnext_media
    from framepack.host.sdnext import SdnextHost

    sdnext_media._process_video.clear()
    with gr.Blocks() as demo:
        button, video = gr.Button("send"), gr.Video()
        assert SdnextHost().bind_send_to_process(button, video) is False  # no Process video input yet
        target = gr.Video(elem_id="extras_video")
        sd.script_callbacks.on_after_component(sdnext_media.remember_process_video)
        sd.script_callbacks.after_component_callback(gr.Textbox(elem_id="other"), elem_id="other")
        sd.script_callbacks.after_component_callback(target, elem_id="extras_video")
        assert SdnextHost().bind_send_to_process(button, video) is True
    dependency = [d for d in demo.config["dependencies"] if d["outputs"] == [target._id]]
    assert len(dependency) == 1 and "switch_to_extras" in dependency[0]["js"]
    assert dependency[0]["inputs"] == [video._id]
    assert sdnext_media._video_path({"name": "/out/a.mp4"}) == "/out/a.mp4"
    assert sdnext_media._video_path("/out/a.mp4") == "/out/a.mp4"
    sdnext_media._process_video.clear()


def test_send_to_process_across_tab_blocks(sd):
    """As in SD.Next: the Process tab and ours are separate Blocks (Process built first), rendered into one app."""
    import gradio as gr

    from framepack.host import sdnext_media
    from framepack.host.sdnext import SdnextHost

    sdnext_media._process_video.clear()
    with gr.Blocks() as process_tab:
        target = gr.Video(elem_id="extras_video")
        sdnext_media.remember_process_video(target, elem_id="extras_video")
    with gr.Blocks() as our_tab:
        button, video = gr.Button("send"), gr.Video()
        assert SdnextHost().bind_send_to_process(button, video) is True
    with gr.Blocks() as demo:
        process_tab.render()
        our_tab.render()
    ids = {c["id"] for c in demo.config["components"]}
    dependency = [d for d in demo.config["dependencies"] if d["outputs"] == [target._id]]
    assert len(dependency) == 1 and target._id in ids and video._id in ids
    sdnext_media._process_video.clear()


def test_entry_script_registers_the_process_video_hook(sd):
    import runpy

    before = len(sd.script_callbacks.callback_map["callbacks_after_component"])
    runpy.run_path(str(ROOT / "scripts" / "framepack_tab.py"), run_name="framepack_tab_test")
    assert len(sd.script_callbacks.callback_map["callbacks_after_component"]) == before + 1


# ----------------------------------------------------------------------------- jobs

def _job(sd_dir, **output):
    from framepack.request.model import build_request
    from framepack.request.output import build_output

    request = build_request(resolution=32, steps=2, latent_window_size=3, fps=30, teacache=False, preview=False,
                            variant="f1", image=_frames(1, 32, 32)[0], prompt="rain", seed=3, duration=0.8,
                            interpolation=output.pop("interpolation", 0))
    return request, build_output(**output)


def test_submission_checks_host_names(sd, tmp_path):
    from framepack.host.sdnext import SdnextHost
    from framepack.host.standalone import StandaloneHost
    from framepack.jobs.queue import JobQueue

    request, options = _job(tmp_path, upscale=2.0, upscaler="sdnext:Nope", interpolation=1,
                            interpolation_method="rife", interpolation_model="sdnext:FILM")
    queue = JobQueue(SdnextHost())
    try:
        with pytest.raises(InputErrors) as error:
            queue.submit(request, options)
    finally:
        queue.shutdown()
    assert sorted(e.field for e in error.value.problems()) == [("output", "interpolation_model"), ("output", "upscaler")]
    request, options = _job(tmp_path, upscale=2.0, upscaler="sdnext:ESRGAN 4x-Fake")
    queue = JobQueue(StandaloneHost(tmp_path / "out"))
    try:
        with pytest.raises(InputErrors, match="SD.Next's upscalers"):
            queue.submit(request, options)
    finally:
        queue.shutdown()


def test_generation_with_host_rife_and_upscaler(sd, tmp_path, tiny_model_dir):
    import json

    import av

    from framepack.host import sdnext
    from framepack.host.sdnext import SdnextHost
    from framepack.jobs.queue import JobQueue

    sdnext.register_settings()
    sd.finish_startup()
    sd.shared.opts.framepack_model_recipe = json.dumps({"folder": str(tiny_model_dir)})
    request, options = _job(tmp_path, upscale=2.0, upscaler="sdnext:ESRGAN 4x-Fake", interpolation=1,
                            interpolation_method="rife", interpolation_model="sdnext:RIFE", save_frames=True)
    queue = JobQueue(SdnextHost())
    try:
        job = queue.submit(request, options)
        assert job.wait(300), "job did not finish"
    finally:
        queue.shutdown()
    assert job.status == "completed", job.error
    plan = request.plan()
    with av.open(job.record.outputs["video"]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == (plan.generated_frames - 1) * 2 + 1  # one RIFE frame between each pair
    assert frames[0].shape == (64, 64, 3)  # upscaled 2x by the host's upscaler, then interpolated
    assert sd.processing_video.fake_calls and all(c["count"] == 1 for c in sd.processing_video.fake_calls)
    from safetensors import safe_open

    with safe_open(job.record.outputs["frames"], "np") as raw:  # raw frames stay as generated
        assert raw.get_slice("frames").get_shape()[1:3] == [32, 32]
