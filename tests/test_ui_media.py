"""The tab's LoRA picker, upscaling, RIFE model, Tiny VAE, prompt enhancer and Send to Process (no browser).

Values -> request and output options, errors named after their control, presets and Load settings
round trips, the controls each host shows, and one Generate through the tab's own handler on the
tiny model with a LoRA made here (the browser test of the same is tests/test_browser_media.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from framepack.errors import InputError  # noqa: E402
from framepack.host.standalone import StandaloneHost  # noqa: E402
from framepack.request.model import LoraSpec  # noqa: E402
from framepack.ui import create_ui, logic, media_values as mv, presets  # noqa: E402

FAST = {"resolution": 32, "steps": 2, "latent_window_size": 3, "duration": 0.4, "teacache": False, "variant": "f1"}


def write_tiny_lora(path: Path, seed: int = 1) -> Path:
    """A LoRA (diffusers/PEFT layout) for the tiny model's transformer, nonzero so it changes the output."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    from framepack.models.tiny import TRANSFORMER_CONFIG
    from tests.test_lora import write_lora

    transformer = HunyuanVideoFramepackTransformer3DModel(**TRANSFORMER_CONFIG)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_lora(path, transformer, seed=seed)


@pytest.fixture()
def folders(tmp_path):
    loras, models = tmp_path / "loras", tmp_path / "models"
    (loras / "sub").mkdir(parents=True)
    models.mkdir()
    for path in (loras / "style.safetensors", loras / "sub" / "motion.safetensors", models / "esrgan.safetensors",
                 models / "rife.safetensors"):
        path.write_bytes(b"")  # names only: nothing here loads them
    return loras, models


@pytest.fixture()
def host(folders, tmp_path):
    loras, models = folders
    return StandaloneHost(output_dir=tmp_path / "out", settings={"framepack_lora_dir": str(loras),
                                                                 "framepack_model_dir": str(models)})


def folders_of(host):
    return Path(host.option("framepack_lora_dir")), Path(host.option("framepack_model_dir"))


def values(host, **changes):
    return {**logic.default_values(host), "image": np.full((40, 40, 3), 90, np.uint8), "duration": 6.0, **changes}


class SdnextLike(StandaloneHost):
    """A standalone host with SD.Next's media methods (their real bodies are tests/test_host_sdnext_media.py)."""

    name = "sdnext"

    def __init__(self, *args, bound=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.bound, self.enhanced = bound, []

    def host_upscaler_names(self):
        return ["sdnext:Resize Lanczos", "sdnext:ESRGAN 4x-UltraSharp"]

    def enhancer_models(self):
        return ["Gemma 3 4B"]

    def enhance_prompt(self, prompt, image=None, model=None, system_prompt="", nsfw=True):
        self.enhanced.append((prompt, None if image is None else image.shape))
        return f"{prompt}, cinematic"

    def bind_send_to_process(self, button, video):
        return self.bound


# ----------------------------------------------------------------------------- choices

def test_choices_standalone(host):
    assert mv.lora_choices(host) == ["style.safetensors", "sub/motion.safetensors"]
    assert mv.upscaler_choices(host) == ["lanczos", "esrgan.safetensors", "rife.safetensors"]
    assert mv.rife_choices(host) == ["none", "esrgan.safetensors", "rife.safetensors"]
    assert logic.default_values(host)["interpolation_model"] == "none"
    assert not mv.enhancer_available(host)
    no_folders = StandaloneHost(output_dir=host.output_dir)
    assert mv.lora_choices(no_folders) == [] and mv.upscaler_choices(no_folders) == ["lanczos"]


def test_choices_inside_sdnext(folders, tmp_path):
    host = SdnextLike(output_dir=tmp_path, settings={"framepack_model_dir": str(folders[1])})
    assert mv.upscaler_choices(host) == ["lanczos", "esrgan.safetensors", "rife.safetensors", "sdnext:Resize Lanczos",
                                         "sdnext:ESRGAN 4x-UltraSharp"]
    assert mv.rife_choices(host)[:2] == ["none", "sdnext:RIFE"]
    assert logic.default_values(host)["interpolation_model"] == "sdnext:RIFE"
    assert mv.enhancer_available(host)
    host.enhancer_models = lambda: []  # an SD.Next without its VLM enhancer: no button
    assert not mv.enhancer_available(host)


# ----------------------------------------------------------------------------- LoRA weights text

def test_picking_a_lora_writes_its_weight_line_and_keeps_the_others():
    text = "style.safetensors: 0.8@1-3\nold.safetensors: 2"
    assert mv.sync_lora_weights(["style.safetensors", "new.safetensors"], text) == \
        "style.safetensors: 0.8@1-3\nnew.safetensors: 1"
    assert mv.sync_lora_weights([], text) == ""
    assert mv.sync_lora_weights(["a"], "no colon here") == "no colon here"  # a line being typed stays


@pytest.mark.parametrize("text, message", [
    ("style 0.8", "line 1: write `name: weight`"),
    ("a: 1\na: 2", "line 2: 'a' is given twice"),
])
def test_weights_text_errors(text, message):
    with pytest.raises(InputError, match=message) as error:
        mv.parse_lora_weights(text)
    assert error.value.field == ("lora_weights",)


# ----------------------------------------------------------------------------- values -> request

def test_picked_loras_become_typed_lora_specs_like_the_cli(host, folders):
    loras, models = folders
    request, options = logic.validate(values(host, loras=["style.safetensors", "sub/motion.safetensors"],
                                             lora_weights="style.safetensors: 0.8@1-3\nsub/motion.safetensors: -0.5"),
                                      host)
    assert request.loras == (LoraSpec.parse(f"{loras / 'style.safetensors'}:0.8@1-3"),
                             LoraSpec(path=str(loras / "sub" / "motion.safetensors"), weight=-0.5))
    assert request.loras[0].weight == 0 and request.loras[0].schedule[0].when == "1-3"
    request, _ = logic.validate(values(host, loras=["style.safetensors"], lora_weights=""), host)
    assert request.loras == (LoraSpec(path=str(loras / "style.safetensors"), weight=1.0),)  # no line: weight 1
    assert logic.validate(values(host), host)[0].loras == ()


def test_upscaling_rife_and_tiny_vae_reach_the_output_options(host, folders):
    models = folders[1]
    request, options = logic.validate(values(host, upscale=2, upscaler="esrgan.safetensors", interpolation=1,
                                             interpolation_method="rife", interpolation_model="rife.safetensors",
                                             tiny_vae_decode=True), host)
    assert options.upscale == 2 and options.upscaler == str(models / "esrgan.safetensors")
    assert options.interpolation_model == str(models / "rife.safetensors") and request.tiny_vae_decode is True
    _, options = logic.validate(values(host, upscale=2, upscaler="lanczos", interpolation_method="flow",
                                       interpolation_model="rife.safetensors"), host)
    assert options.upscaler == "lanczos" and options.interpolation_model is None  # RIFE only for method rife
    _, options = logic.validate(values(host, upscale=1, upscaler="esrgan.safetensors"), host)
    assert options.upscale == 1 and options.upscaler == "lanczos"  # no upscaling: no model to load


@pytest.mark.parametrize("changes, message", [
    ({"loras": ["../style.safetensors"]}, "LoRA: LoRA '../style.safetensors': give a name from the LoRA folder, "
                                          "not a path"),
    ({"loras": ["/etc/passwd"]}, "LoRA: LoRA '/etc/passwd': give a name"),
    ({"loras": ["missing"]}, "LoRA: LoRA 'missing' not found in the LoRA folder"),
    ({"loras": ["style.safetensors"], "lora_weights": "style.safetensors: strong"},
     "LoRA weights: style.safetensors: 'strong' is not a weight"),
    ({"loras": ["style.safetensors"], "lora_weights": "style.safetensors: 1@9"}, "section 9 does not exist"),
    ({"loras": ["style.safetensors"], "lora_weights": "other: 1"}, "LoRA weights: 'other' is not selected"),
    ({"lora_weights": "style.safetensors: 1"}, "LoRA weights: weights are given but no LoRA is selected"),
    ({"upscale": 2, "upscaler": "../x.safetensors"}, "Upscaler: model '../x.safetensors': give a name"),
    ({"upscale": 5}, "Upscale: "),
    ({"interpolation": 1, "interpolation_method": "rife", "interpolation_model": "none"},
     "RIFE model: interpolation method 'rife' needs a RIFE model file"),
    ({"interpolation": 1, "interpolation_method": "rife", "interpolation_model": "gone.safetensors"},
     "RIFE model: model 'gone.safetensors' not found in the model folder"),
])
def test_bad_media_values_are_named_after_their_control(host, changes, message):
    with pytest.raises(InputError) as error:
        logic.validate(values(host, **changes), host)
    assert message in str(error.value)


def test_without_folders_a_pick_says_which_setting_to_set(tmp_path):
    host = StandaloneHost(output_dir=tmp_path)
    with pytest.raises(InputError, match="LoRA: the LoRA folder is not set on the server .setting framepack_lora_dir"):
        logic.validate(values(host, loras=["style"]), host)


def test_the_live_plan_shows_each_sections_lora_weights():
    view = logic.plan_view(5, 30, 0, 9, "original", "", "", [], ["style.safetensors", "sub/motion.safetensors"],
                           "style.safetensors: 0.8@1-2\nsub/motion.safetensors: 0.3,1@3")
    assert [row["loras"] for row in view.rows] == ["style 0.8, motion 0.3", "style 0.8, motion 0.3",
                                                   "style 0, motion 1", "style 0, motion 0.3"]
    html = logic.render_plan(view)
    assert "<th>LoRA</th>" in html and "<td>style 0, motion 1</td>" in html
    assert "<th>LoRA</th>" not in logic.render_plan(logic.plan_view(5, 30, 0, 9, "original", "", "", []))
    bad = logic.plan_view(5, 30, 0, 9, "original", "", "", [], ["style.safetensors"], "style.safetensors: 1@9")
    assert bad.error == "LoRA style schedule entry 1: section 9 does not exist; the video has 4 sections (1-4)"
    bad = logic.plan_view(5, 30, 0, 9, "original", "", "", [], ["style.safetensors"], "style.safetensors: x")
    assert bad.error.startswith("LoRA weights: style.safetensors: 'x' is not a weight")


def test_the_plan_follows_the_picker(host):
    blocks = create_ui(host, SimpleNamespace(list=lambda: []))
    plan_events = [blocks.fns[i].fn for i, dep in enumerate(blocks.dependencies)
                   if any(blocks.blocks[t].elem_id == "fpk_lora_weights" for t in dep["targets"])
                   and any(blocks.blocks[o].elem_id == "fpk_plan" for o in dep["outputs"])]
    assert len(plan_events) == 1
    html = plan_events[0](5, 30, 0, 9, "original", "", "", [], 640, ["style.safetensors"], "style.safetensors: 0.5")
    assert "<td>style 0.5</td>" in html


# ----------------------------------------------------------------------------- presets, Load settings

MEDIA = ("loras", "lora_weights", "upscale", "upscaler", "interpolation_model", "tiny_vae_decode")


def test_presets_and_last_settings_round_trip_the_media_controls(host):
    assert set(MEDIA) <= set(presets.SETTING_NAMES)
    chosen = values(host, loras=["sub/motion.safetensors", "style.safetensors"],
                    lora_weights="sub/motion.safetensors: 0.3,1@2\nstyle.safetensors: 0.8@1-2", upscale=1.5,
                    upscaler="esrgan.safetensors", interpolation=1, interpolation_method="rife",
                    interpolation_model="rife.safetensors", tiny_vae_decode=True)
    expected = {name: chosen[name] for name in MEDIA}
    assert presets.save_preset(host, "media", chosen) == "media"
    assert {name: presets.load_preset(host, "media")[name] for name in MEDIA} == expected
    assert {name: presets.from_values(chosen, host)[name] for name in MEDIA} == expected
    (folders_of(host)[0] / "style.safetensors").unlink()  # the last settings come back without a LoRA now gone
    restored = presets.from_values(chosen, host)
    assert restored["loras"] == ["sub/motion.safetensors"]
    assert restored["lora_weights"] == "sub/motion.safetensors: 0.3,1@2"
    assert restored["upscaler"] == "esrgan.safetensors"
    saved = json.loads((presets.presets_folder(host) / "media.json").read_text())
    assert saved["settings"]["loras"][0]["path"].endswith("motion.safetensors")  # the preset is the request's JSON


def test_load_settings_never_takes_a_path_from_outside_the_folders(host, folders):
    loras, models = folders
    data = {"settings": {"prompt": "x", "loras": [
                {"path": "/etc/passwd", "weight": 1.0},
                {"path": str(loras / ".." / "loras" / ".." / "secret.safetensors"), "weight": 1.0},
                {"path": str(loras / "style.safetensors"), "weight": 0.5}]},
            "output": {"upscale": 2.0, "upscaler": "/srv/other/evil.safetensors", "interpolation_model": "/x.pkl"}}
    found = presets.control_values(data, "forged", host)
    assert found["loras"] == ["style.safetensors"] and found["lora_weights"] == "style.safetensors: 0.5"
    assert found["upscaler"] == "lanczos" and found["interpolation_model"] == "none" and found["upscale"] == 2.0
    data["output"]["upscaler"] = "sdnext:Resize Lanczos"  # a host tool is kept as a name (the host checks it)
    assert presets.control_values(data, "ok", host)["upscaler"] == "sdnext:Resize Lanczos"


# ----------------------------------------------------------------------------- the controls in the tab

def ids(blocks):
    return {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}


def test_standalone_tab_has_the_picker_and_no_host_buttons(host):
    blocks = create_ui(host, SimpleNamespace(list=lambda: []))
    shown = ids(blocks)
    for needed in ("fpk_loras", "fpk_lora_weights", "fpk_lora_refresh", "fpk_upscale", "fpk_upscaler",
                   "fpk_interpolation_model", "fpk_models_refresh", "fpk_tiny_vae_decode", "fpk_media_accordion"):
        assert needed in shown, needed
    assert shown["fpk_loras"].multiselect and shown["fpk_loras"].choices == mv.lora_choices(host)
    assert "fpk_enhance" not in shown and "fpk_send_to_process" not in shown
    assert set(logic.VALUE_NAMES) <= set(blocks.fpk_components)


def handler(blocks, trigger_id: str):
    for index, dep in enumerate(blocks.dependencies):
        if any(blocks.blocks[t].elem_id == trigger_id for t in dep["targets"]):
            return blocks.fns[index].fn
    raise AssertionError(f"no event on {trigger_id}")


def test_inside_sdnext_enhance_prompt_and_send_to_process(folders, tmp_path):
    host = SdnextLike(output_dir=tmp_path, settings={"framepack_lora_dir": str(folders[0])})
    blocks = create_ui(host, SimpleNamespace(list=lambda: []))
    shown = ids(blocks)
    assert shown["fpk_send_to_process"].visible is not False
    assert shown["fpk_upscaler"].choices[-1] == "sdnext:ESRGAN 4x-UltraSharp"
    prompt, message = handler(blocks, "fpk_enhance")("a boat", np.zeros((8, 8, 3), np.uint8))
    assert prompt == "a boat, cinematic" and "enhanced" in message and host.enhanced == [("a boat", (8, 8, 3))]

    def failing(*args, **kwargs):
        raise InputError("no answer")

    host.enhance_prompt = failing
    prompt, message = handler(blocks, "fpk_enhance")("a boat", None)
    assert prompt == gr.update() and "Enhance prompt: no answer" in message and "fpk-error" in message
    unbound = create_ui(SdnextLike(output_dir=tmp_path, bound=False), SimpleNamespace(list=lambda: []))
    assert ids(unbound)["fpk_send_to_process"].visible is False  # no Process video input in this SD.Next


def test_refresh_lists_new_files_and_keeps_the_chosen(host, folders):
    blocks = create_ui(host, SimpleNamespace(list=lambda: []))
    (folders[0] / "late.safetensors").write_bytes(b"")
    update = handler(blocks, "fpk_lora_refresh")(["gone.safetensors"])
    assert update["choices"] == ["late.safetensors", "style.safetensors", "sub/motion.safetensors",
                                 "gone.safetensors"]
    (folders[1] / "x4.safetensors").write_bytes(b"")
    upscalers, rife = handler(blocks, "fpk_models_refresh")("lanczos", "none")
    assert "x4.safetensors" in upscalers["choices"] and "x4.safetensors" in rife["choices"]
    assert handler(blocks, "fpk_loras")(["style.safetensors"], "") == "style.safetensors: 1"


# ----------------------------------------------------------------------------- Generate through the tab

def decoded(path) -> tuple[int, int, int]:
    """(frames, height, width) of a video, decoded frame by frame."""
    import av

    with av.open(str(path)) as container:
        shapes = [frame.to_ndarray(format="rgb24").shape for frame in container.decode(video=0)]
    return len(shapes), shapes[0][0], shapes[0][1]


def generated(path) -> tuple[int, int, int]:
    """(frames, height, width) of a raw frames file: the frames as generated."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as raw:
        count, height, width, _ = raw.get_slice("frames").get_shape()
    return count, height, width


def test_generate_from_the_tab_with_a_lora_upscaled_and_interpolated(tiny_model_dir, tmp_path):
    from framepack.jobs.queue import JobQueue

    write_tiny_lora(tmp_path / "loras" / "style.safetensors")
    host = StandaloneHost(output_dir=tmp_path / "out", model=str(tiny_model_dir),
                          settings={"ui_defaults": FAST, "framepack_lora_dir": str(tmp_path / "loras")})
    queue = JobQueue(host)
    try:
        blocks = create_ui(host, queue)
        submit = next(blocks.fns[i].fn for i, dep in enumerate(blocks.dependencies)
                      if dep.get("api_name") == "fpk_generate")
        chosen = {**logic.default_values(host), "image": np.full((40, 48, 3), 90, np.uint8), "seed": 5,
                  "loras": ["style.safetensors"], "lora_weights": "style.safetensors: 0.7", "upscale": 2,
                  "upscaler": "lanczos", "interpolation": 1, "interpolation_method": "blend", "save_frames": True}
        status, *_ = submit("", "page", *[chosen[name] for name in logic.VALUE_NAMES])
        assert "submitted" in status, status
        job = queue.list()[-1]
        assert job.wait(300) and job.status == "completed", job.record.error
        assert job.record.settings["loras"] == [{"path": str(tmp_path / "loras" / "style.safetensors"),
                                                 "weight": 0.7, "schedule": []}]
        assert job.record.settings["output"]["upscale"] == 2
        count, height, width = generated(job.record.frames)
        assert decoded(job.record.video) == ((count - 1) * 2 + 1, 2 * height, 2 * width)  # 1 in-between, 2x
    finally:
        queue.shutdown()
