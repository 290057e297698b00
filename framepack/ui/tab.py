"""The FramePack tab: Gradio 3.43 layout and event wiring (the rules live in `framepack.ui.logic`).

`create_ui(host, queue)` returns a `gr.Blocks`; SD.Next shows it as the top-level FramePack tab
(`on_ui_tabs`), the standalone app mounts it at "/". Every element id starts with `fpk_` (the
built-in Video -> FramePack sub-tab owns the `framepack_*` ids).

Layout: the Generate / Stop / Skip / Pause bar, the status line and the progress box come
first, so the first screen is usable however narrow the tab is (SD.Next's ModernUI shows it in
a split panel, where the two columns below stack).

Events and the queue: Generate is the only event on Gradio's queue (generators stream only
there); everything else (plan, Stop / Skip / Pause, keyframes, codec refresh, settings) runs
with `queue=False`, so it answers at once even while a generation holds the queue's worker.
Inside SD.Next, Generate sends only its start and its end through Gradio (each Gradio update
re-renders SD.Next's whole page); the page's script follows the job through SD.Next's progress
API meanwhile (javascript/framepack.js). There Stop / Skip / Pause are not Gradio events at all
(even a script-only Gradio event re-renders SD.Next's page first): the page's script listens to
their clicks and posts the page's task id to `framepack.ui.routes`, so they answer at once during
a run and reach the job before the page has received its id. On the standalone page (light, and
behind its own login with `--auth`) they are ordinary Gradio events with the same rules.
"""

from __future__ import annotations

import functools

import json
from pathlib import Path
from typing import Any

import gradio as gr

from framepack.request.model import DEFAULT_SYSTEM_PROMPT
from framepack.ui import logic
from framepack.ui.logic import KEEP

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_FILE = ROOT / "javascript" / "framepack.js"
STYLE_FILE = ROOT / "style.css"
SUBMIT_JS = "(...args) => (window.fpkSubmit ? window.fpkSubmit(...args) : args)"  # see javascript/framepack.js


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _script_loader() -> str:
    """`_js` of a load event that adds javascript/framepack.js as a real <script> (standalone only:
    SD.Next injects `javascript/*.js` and `style.css` itself)."""
    source = json.dumps(_read(SCRIPT_FILE))
    return ("() => { if (window.fpkScriptLoaded) return; const s = document.createElement('script'); "
            f"s.textContent = {source}; document.head.appendChild(s); }}")


def _as_output(value: Any) -> Any:
    return gr.update() if value is KEEP else value


def create_ui(host, queue, *, assets: bool | None = None) -> gr.Blocks:
    """Build the tab for `host` (Host protocol) submitting to `queue` (JobQueue).

    `assets`: add our style.css and javascript/framepack.js to the Blocks (default: everywhere
    except inside SD.Next, which injects them into its page itself).
    """
    if assets is None:
        assets = getattr(host, "name", "") != "sdnext"
    d = logic.default_values(host)
    live_plan = functools.partial(logic.host_plan_html, host)  # the plan line, with the resources on this host
    lo, hi, step = logic.RESOLUTION_RANGE
    dlo, dhi, dstep = logic.DURATION_RANGE
    writable = logic.settings_writable(host)

    in_sdnext = getattr(host, "name", "") == "sdnext"
    root_classes = ["fpk-root", "fpk-host-sdnext" if in_sdnext else "fpk-host-standalone"]
    with gr.Blocks(analytics_enabled=False, title="FramePack", css=_read(STYLE_FILE) if assets else None) as blocks, \
            gr.Column(elem_id="fpk_root", elem_classes=root_classes):
        c: dict[str, Any] = {}
        with gr.Row(elem_id="fpk_buttons", elem_classes=["fpk-buttons"]):
            generate = gr.Button("Generate", variant="primary", elem_id="fpk_generate")
            stop = gr.Button("Stop", variant="stop", elem_id="fpk_stop")
            skip = gr.Button("Skip section", elem_id="fpk_skip")
            pause = gr.Button("Pause", elem_id="fpk_pause")
        # one root element each: the page's script rewrites it in place (Gradio keeps its own nodes)
        status = gr.HTML(logic.info_html(""), elem_id="fpk_status")
        progress = gr.HTML('<div class="fpk-progress"></div>', elem_id="fpk_progress")
        with gr.Row(elem_id="fpk_tab", elem_classes=["fpk-tab"], equal_height=False):
            # ------------------------------------------------------------ inputs
            with gr.Column(elem_id="fpk_inputs", elem_classes=["fpk-column"], scale=5, min_width=360):
                with gr.Row(elem_id="fpk_images", elem_classes=["fpk-images"]):
                    c["image"] = gr.Image(label="Start image (empty = text-to-video)", source="upload", type="numpy",
                                          elem_id="fpk_image", height=260)
                    c["end_image"] = gr.Image(label="End image (optional, Original variant)", source="upload",
                                              type="numpy", elem_id="fpk_end_image", height=260)
                c["blank_start"] = gr.Radio(list(logic.BLANK_STARTS), value=d["blank_start"],
                                            label="Blank start (used only without a start image)",
                                            elem_id="fpk_blank_start", elem_classes=["fpk-inline-radio"])
                mode = gr.HTML(logic.mode_html(None, None, d["blank_start"], d["variant"]), elem_id="fpk_mode")
                c["keyframes"] = gr.State(list(d["keyframes"]))
                with gr.Accordion("Keyframes", open=False, elem_id="fpk_keyframes_accordion"):
                    gr.Markdown("Extra images that steer the section(s) their WHEN names (`3`, `2-4`, `1.5s`).",
                                elem_classes=["fpk-help"])
                    keyframes_gallery = gr.Gallery(label="Keyframes", elem_id="fpk_keyframes", columns=6,
                                                   height=170, object_fit="contain", allow_preview=False,
                                                   value=logic.keyframe_gallery(d["keyframes"]))
                    with gr.Row(elem_classes=["fpk-keyframe-row"]):
                        keyframe_image = gr.Image(label="Keyframe image", source="upload", type="numpy",
                                                  elem_id="fpk_keyframe_image", height=160)
                        with gr.Column(min_width=160):
                            keyframe_when = gr.Textbox(label="WHEN", placeholder="3, 2-4, 1.5s or 1s-2s",
                                                       elem_id="fpk_keyframe_when", max_lines=1)
                            keyframe_add = gr.Button("Add keyframe", elem_id="fpk_keyframe_add", size="sm")
                            keyframe_clear = gr.Button("Clear keyframes", elem_id="fpk_keyframe_clear", size="sm")
                    keyframe_message = gr.HTML("", elem_id="fpk_keyframe_message")
                with gr.Row(elem_id="fpk_strengths"):
                    c["start_strength"] = gr.Slider(0, 1, value=d["start_strength"], step=0.05, label="Start strength",
                                                    elem_id="fpk_start_strength")
                    c["end_strength"] = gr.Slider(0, 1, value=d["end_strength"], step=0.05, label="End strength",
                                                  elem_id="fpk_end_strength")
                    c["vision_strength"] = gr.Slider(0, 1, value=d["vision_strength"], step=0.05,
                                                     label="Vision strength", elem_id="fpk_vision_strength")
                c["prompt"] = gr.Textbox(value=d["prompt"], label="Prompt", lines=3, elem_id="fpk_prompt",
                                         placeholder="What happens in the video")
                quick = gr.Dataset(samples=[[p] for p in logic.QUICK_PROMPTS], label="Quick prompts (click to use)",
                                   components=[c["prompt"]], samples_per_page=20, elem_id="fpk_quick_prompts")
                c["negative_prompt"] = gr.Textbox(value=d["negative_prompt"],
                                                  label="Negative prompt (used when CFG > 1)",
                                                  lines=1, elem_id="fpk_negative_prompt")
                c["section_prompts"] = gr.Textbox(value=d["section_prompts"], label="Section prompts", lines=3,
                                                  elem_id="fpk_section_prompts",
                                                  placeholder="1: she looks up\n2-3: she starts to run\n4s: she stops")
                gr.Markdown(logic.SECTION_PROMPTS_HELP, elem_id="fpk_section_help", elem_classes=["fpk-help"])
                gr.Markdown(logic.LORA_NOTE, elem_id="fpk_lora_note", elem_classes=["fpk-help"])
                with gr.Row(elem_id="fpk_video_settings"):
                    c["variant"] = gr.Radio(list(logic.VARIANTS), value=d["variant"], label="Model variant",
                                            elem_id="fpk_variant")
                    c["resolution"] = gr.Slider(lo, hi, value=d["resolution"], step=step, label="Resolution",
                                                elem_id="fpk_resolution")
                with gr.Row(elem_id="fpk_timing"):
                    c["duration"] = gr.Slider(dlo, dhi, value=d["duration"], step=dstep, label="Duration (s)",
                                              elem_id="fpk_duration")
                    c["fps"] = gr.Number(value=d["fps"], label="FPS", minimum=1, maximum=240, elem_id="fpk_fps")
                    c["interpolation"] = gr.Slider(0, 8, value=d["interpolation"], step=1,
                                                   label="Interpolated frames", elem_id="fpk_interpolation")
                plan = gr.HTML(live_plan(*(d[name] for name in logic.PLAN_NAMES), d["resolution"]), elem_id="fpk_plan",
                               elem_classes=["fpk-plan-box"])

                # -------------------------------------------------------- video output
                with gr.Accordion("Video", open=False, elem_id="fpk_video_accordion"):
                    encoders, codec_value, codec_note_text = logic.codec_choices(d["codec"])
                    with gr.Row():
                        c["codec"] = gr.Dropdown(encoders, value=codec_value, label="Codec", elem_id="fpk_codec")
                        codec_refresh = gr.Button("Refresh", elem_id="fpk_codec_refresh", size="sm",
                                                  elem_classes=["fpk-small-button"])
                        c["container"] = gr.Dropdown(list(logic.CONTAINERS), value=d["container"], label="Container",
                                                     elem_id="fpk_container")
                    codec_note = gr.HTML(logic.info_html(codec_note_text), elem_id="fpk_codec_note")
                    with gr.Row():
                        c["codec_options"] = gr.Textbox(value=d["codec_options"], label="Codec options",
                                                        placeholder="preset=slow,tune=film",
                                                        elem_id="fpk_codec_options")
                        c["crf"] = gr.Slider(0, 51, value=d["crf"], step=1, label="Quality (CRF, lower = better)",
                                             elem_id="fpk_crf")
                    with gr.Row():
                        c["save_video"] = gr.Checkbox(value=d["save_video"], label="Save video",
                                                      elem_id="fpk_save_video")
                        c["save_frames"] = gr.Checkbox(value=d["save_frames"], label="Save raw frames (.safetensors)",
                                                       elem_id="fpk_save_frames")
                        c["save_images"] = gr.Checkbox(value=d["save_images"], label="Save frame images",
                                                       elem_id="fpk_save_images")
                    with gr.Row():
                        c["image_format"] = gr.Dropdown(list(logic.IMAGE_FORMATS), value=d["image_format"],
                                                        label="Image format", elem_id="fpk_image_format")
                        c["interpolation_method"] = gr.Radio(list(logic.INTERPOLATION_METHODS),
                                                             value=d["interpolation_method"],
                                                             label="Interpolation method",
                                                             elem_id="fpk_interpolation_method")
                        c["filename"] = gr.Textbox(value=d["filename"], label="File name", max_lines=1,
                                                   elem_id="fpk_filename")

                # -------------------------------------------------------- advanced
                with gr.Accordion("Advanced", open=False, elem_id="fpk_advanced_accordion"):
                    with gr.Row():
                        c["seed"] = gr.Number(value=d["seed"], label="Seed (-1 = random)", precision=0,
                                              elem_id="fpk_seed")
                        seed_random = gr.Button("Random", elem_id="fpk_seed_random", size="sm",
                                                elem_classes=["fpk-small-button"])
                        seed_reuse = gr.Button("Reuse last", elem_id="fpk_seed_reuse", size="sm",
                                               elem_classes=["fpk-small-button"])
                        c["latent_window_size"] = gr.Slider(1, 33, value=d["latent_window_size"], step=1,
                                                            label="Latent window", elem_id="fpk_latent_window_size")
                        c["steps"] = gr.Slider(1, 100, value=d["steps"], step=1, label="Steps", elem_id="fpk_steps")
                    with gr.Row():
                        c["shift"] = gr.Number(value=d["shift"], label="Shift (0 = dynamic)", minimum=0, maximum=100,
                                               elem_id="fpk_shift")
                        c["cfg"] = gr.Slider(1, 32, value=d["cfg"], step=0.1, label="CFG (1 = off)", elem_id="fpk_cfg")
                        c["distilled_cfg"] = gr.Slider(0, 32, value=d["distilled_cfg"], step=0.1, label="Distilled CFG",
                                                       elem_id="fpk_distilled_cfg")
                        c["cfg_rescale"] = gr.Slider(0, 1, value=d["cfg_rescale"], step=0.01, label="CFG rescale",
                                                     elem_id="fpk_cfg_rescale")
                    with gr.Row():
                        c["sampler"] = gr.Radio(list(logic.SAMPLERS), value=d["sampler"], label="Sampler",
                                                elem_id="fpk_sampler")
                        c["teacache"] = gr.Checkbox(value=d["teacache"], label="TeaCache", elem_id="fpk_teacache")
                        c["teacache_threshold"] = gr.Slider(0, 1, value=d["teacache_threshold"], step=0.01,
                                                            label="TeaCache threshold",
                                                            elem_id="fpk_teacache_threshold")
                        c["cfg_zero_star"] = gr.Checkbox(value=d["cfg_zero_star"], label="CFG-Zero*",
                                                         elem_id="fpk_cfg_zero_star")
                        c["preview"] = gr.Checkbox(value=d["preview"], label="Live preview",
                                                   elem_id="fpk_preview_enabled")
                    attention_value = host.option(logic.ATTENTION_KEY, "default") or "default"
                    attention = gr.Dropdown(logic.with_current(logic.attention_choices(), attention_value),
                                            value=attention_value, label="Attention backend", elem_id="fpk_attention",
                                            interactive=writable)
                    c["system_prompt"] = gr.Textbox(value=d["system_prompt"], label="System prompt (Llama template)",
                                                    lines=3, elem_id="fpk_system_prompt")
                    system_reset = gr.Button("Reset system prompt", elem_id="fpk_system_prompt_reset", size="sm")

                # -------------------------------------------------------- model
                with gr.Accordion("Model", open=False, elem_id="fpk_model_accordion"):
                    model_status = gr.HTML(logic.model_status_html(host), elem_id="fpk_model_status")
                    with gr.Row():
                        model_load = gr.Button("Load", elem_id="fpk_model_load", size="sm")
                        model_unload = gr.Button("Unload", elem_id="fpk_model_unload", size="sm")
                        model_refresh = gr.Button("Refresh status", elem_id="fpk_model_refresh", size="sm")
                    with gr.Row():
                        quant_value = host.option(logic.QUANT_KEY, "none") or "none"
                        quantization = gr.Dropdown(logic.with_current(logic.quantization_choices(), quant_value),
                                                   value=quant_value, label="Quantization", elem_id="fpk_quantization",
                                                   interactive=writable)
                        offload_value = host.option(logic.OFFLOAD_KEY, "none") or "none"
                        offload = gr.Dropdown(logic.with_current(logic.offload_choices(host), offload_value),
                                              value=offload_value, label="Offload", elem_id="fpk_offload",
                                              interactive=writable)
                    model_message = gr.HTML("", elem_id="fpk_model_message")
                    recipe = gr.Code(logic.recipe_json(host, d["variant"]), language="json",
                                     label="Component recipe (role -> hub id/subfolder or local folder)",
                                     elem_id="fpk_recipe", interactive=True)
                    with gr.Row():
                        recipe_apply = gr.Button("Apply recipe", elem_id="fpk_recipe_apply", size="sm")
                        recipe_reset = gr.Button("Reset to defaults", elem_id="fpk_recipe_reset", size="sm")
                        recipe_reload = gr.Button("Show current", elem_id="fpk_recipe_reload", size="sm")

            # ------------------------------------------------------------ outputs
            with gr.Column(elem_id="fpk_outputs", elem_classes=["fpk-column"], scale=4, min_width=320):
                video = gr.Video(label="Video", autoplay=True, interactive=False, elem_id="fpk_video",
                                 elem_classes=["fpk-video"])
                preview = gr.HTML(logic.preview_html(None), elem_id="fpk_preview", elem_classes=["fpk-preview"])
                task_id = gr.Textbox("", visible=False, elem_id="fpk_task_id")
                job_id = gr.Textbox("", visible=False, elem_id="fpk_job_id")
                last_seed = gr.Number(-1, visible=False, precision=0, elem_id="fpk_last_seed")

        values = [c[name] for name in logic.VALUE_NAMES]
        plan_inputs = [c[name] for name in logic.PLAN_NAMES] + [c["resolution"]]
        mode_inputs = [c["image"], c["end_image"], c["blank_start"], c["variant"], c["keyframes"]]

        # ---------------------------------------------------------------- live plan and mode
        for name in ("duration", "fps", "interpolation", "latent_window_size", "variant", "prompt", "section_prompts",
                     "resolution"):
            c[name].change(live_plan, plan_inputs, plan, queue=False, show_progress="hidden")
        for component in (c["image"], c["end_image"], c["blank_start"], c["variant"]):
            component.change(logic.mode_html, mode_inputs, mode, queue=False, show_progress="hidden")

        # ---------------------------------------------------------------- keyframes
        def on_add_keyframe(keyframes, image, when):
            items, error = logic.add_keyframe(keyframes, image, when)
            if error:
                return items, gr.update(), gr.update(), gr.update(), logic.error_html(error)
            return items, logic.keyframe_gallery(items), None, "", ""

        def on_clear_keyframes():
            return [], [], ""

        keyframe_add.click(on_add_keyframe, [c["keyframes"], keyframe_image, keyframe_when],
                           [c["keyframes"], keyframes_gallery, keyframe_image, keyframe_when, keyframe_message],
                           queue=False).then(live_plan, plan_inputs, plan, queue=False) \
            .then(logic.mode_html, mode_inputs, mode, queue=False)
        keyframe_clear.click(on_clear_keyframes, None, [c["keyframes"], keyframes_gallery, keyframe_message],
                             queue=False).then(live_plan, plan_inputs, plan, queue=False) \
            .then(logic.mode_html, mode_inputs, mode, queue=False)

        # ---------------------------------------------------------------- small helpers
        quick.click(lambda sample: sample[0], quick, c["prompt"], queue=False, show_progress="hidden")

        def on_codec_refresh(current):
            choices, value, note = logic.codec_choices(current, refresh=True)
            return gr.update(choices=choices, value=value), logic.info_html(note)

        codec_refresh.click(on_codec_refresh, c["codec"], [c["codec"], codec_note], queue=False)
        seed_random.click(lambda: -1, None, c["seed"], queue=False)
        seed_reuse.click(lambda seed: seed, last_seed, c["seed"], queue=False)
        system_reset.click(lambda: DEFAULT_SYSTEM_PROMPT, None, c["system_prompt"], queue=False)

        # ---------------------------------------------------------------- model
        attention.change(lambda v: logic.change_setting(host, logic.ATTENTION_KEY, v, "Attention backend"),
                         attention, model_message, queue=False)
        quantization.change(lambda v: logic.change_setting(host, logic.QUANT_KEY, v, "Quantization"),
                            quantization, model_message, queue=False)
        offload.change(lambda v: logic.change_setting(host, logic.OFFLOAD_KEY, v, "Offload"),
                       offload, model_message, queue=False)
        model_load.click(lambda v: logic.load_model(host, queue, v), c["variant"], model_message) \
            .then(lambda: logic.model_status_html(host), None, model_status, queue=False)
        model_unload.click(lambda: logic.unload_model(host, queue), None, model_message) \
            .then(lambda: logic.model_status_html(host), None, model_status, queue=False)
        model_refresh.click(lambda: logic.model_status_html(host), None, model_status, queue=False)
        recipe_apply.click(lambda v, text: logic.apply_recipe(host, v, text), [c["variant"], recipe],
                           [recipe, model_message], queue=False)
        recipe_reset.click(lambda v: logic.reset_recipe(host, v), c["variant"], [recipe, model_message], queue=False)
        recipe_reload.click(lambda v: logic.recipe_json(host, v), c["variant"], recipe, queue=False)
        c["variant"].change(lambda v: logic.recipe_json(host, v), c["variant"], recipe, queue=False,
                            show_progress="hidden")

        # ---------------------------------------------------------------- generate / stop / skip / pause
        def on_generate(task, *args):
            stream = logic.generate_stream(host, queue, dict(zip(logic.VALUE_NAMES, args)), task_id=task or None,
                                           stream=not in_sdnext)
            for update in stream:
                label = KEEP if update.pause_label is KEEP else gr.update(value=update.pause_label)
                shown = KEEP if update.preview is KEEP else logic.preview_html(update.preview)
                yield tuple(_as_output(value) for value in (update.status, update.progress, shown,
                                                            update.video, update.job_id, update.seed, label))

        # show_progress hidden: the progress box is ours; Gradio's per-output timers would re-render the page
        generate.click(on_generate, [task_id, *values], [status, progress, preview, video, job_id, last_seed, pause],
                       _js=SUBMIT_JS, show_progress="hidden", api_name="fpk_generate")
        if not in_sdnext:  # inside SD.Next: click listeners of javascript/framepack.js (see the module docstring)
            def on_pause(job, task):
                label, line = logic.toggle_pause(queue, job or None, task or None)
                return gr.update(value=label), line

            stop.click(lambda job, task: logic.stop_job(queue, job or None, task or None), [job_id, task_id], status,
                       queue=False)
            skip.click(lambda job, task: logic.skip_section(queue, job or None, task or None), [job_id, task_id],
                       status, queue=False)
            pause.click(on_pause, [job_id, task_id], [pause, status], queue=False)

        if assets:
            blocks.load(None, None, None, _js=_script_loader())
    blocks.fpk_components = {**c, "plan": plan, "mode": mode, "status": status, "progress": progress,
                             "video": video, "preview_image": preview, "job_id": job_id, "generate": generate}
    return blocks
