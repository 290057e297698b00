"""The FramePack tab: Gradio 3.43 layout and event wiring (the rules live in `framepack.ui.logic`).

`create_ui(host, queue)` returns a `gr.Blocks`; SD.Next shows it as the top-level FramePack tab
(`on_ui_tabs`), the standalone app mounts it at "/". Every element id starts with `fpk_` (the
built-in Video -> FramePack sub-tab owns the `framepack_*` ids).

Layout: the Generate / Stop / Skip / Pause bar, the status line and the progress box come
first, so the first screen is usable however narrow the tab is (SD.Next's ModernUI shows it in
a split panel, where the two columns below stack).

Events and the queue: following a job is the only event on Gradio's queue (generators stream
only there); everything else (Generate, plan, Stop / Skip / Pause, keyframes, codec refresh,
settings) runs with `queue=False`, so it answers at once even while a generation runs.
Inside SD.Next no event is held during a job (each Gradio update re-renders SD.Next's whole page,
and a pending event animates a timer on each output): the page's script follows the job through
SD.Next's progress API (javascript/framepack.js) and asks for the job's line when it starts and
its end when it ends, in a short event (`logic.page_news`). There Stop / Skip / Pause are no
Gradio events at all (even a script-only one re-renders SD.Next's page first): the page's script
listens to their clicks and posts the page's task id to `framepack.ui.routes`, so they answer at
once during a run and reach the job before the page has its id. On the standalone page (light,
behind its own login with `--auth`) they are ordinary Gradio events with the same rules.
"""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from framepack.errors import FramePackError
from framepack.request.model import DEFAULT_SYSTEM_PROMPT
from framepack.ui import continue_controls, logic, media_controls, presets
from framepack.ui.continue_actions import uploads
from framepack.ui.logic import KEEP

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_FILE = ROOT / "javascript" / "framepack.js"
STYLE_FILE = ROOT / "style.css"


def _submit_js(inputs: int) -> str:
    """Generate's `_js` (see javascript/framepack.js). Gradio 3 calls it with the inputs' values followed
    by the outputs' current values: only the inputs go on (and into the browser's last settings)."""
    return (f"(...args) => {{ const inputs = args.slice(0, {inputs}); "
            "return window.fpkSubmit ? window.fpkSubmit(...inputs) : inputs; }")


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


def _outputs(update) -> tuple:
    """An `Update` as (status, progress, preview, video, job id, seed, Pause's label)."""
    label = KEEP if update.pause_label is KEEP else gr.update(value=update.pause_label)
    shown = KEEP if update.preview is KEEP else logic.preview_html(update.preview)
    return tuple(_as_output(value) for value in (update.status, update.progress, shown, update.video,
                                                  update.job_id, update.seed, label))


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
            # ------------------------------------------------------------ inputs: the first screen
            with gr.Column(elem_id="fpk_inputs", elem_classes=["fpk-column"], scale=5, min_width=0):
                with gr.Row(elem_id="fpk_images", elem_classes=["fpk-images"]):
                    c["image"] = gr.Image(label="Start image (empty = text-to-video)", source="upload", type="numpy",
                                          elem_id="fpk_image", height=220)
                c["blank_start"] = gr.Radio(list(logic.BLANK_STARTS), value=d["blank_start"],
                                            label="Blank start (no start image: text-to-video)",
                                            elem_id="fpk_blank_start", elem_classes=["fpk-inline-radio"])
                mode = gr.HTML(logic.mode_html(None, None, d["blank_start"], d["variant"]), elem_id="fpk_mode")
                c["prompt"] = gr.Textbox(value=d["prompt"], label="Prompt", lines=2, elem_id="fpk_prompt",
                                         placeholder="What happens in the video")
                media_controls.prompt_tools(host, c)  # inside SD.Next: Networks panel, Enhance prompt
                with gr.Row(elem_id="fpk_timing", elem_classes=["fpk-pair"]):
                    c["duration"] = gr.Slider(dlo, dhi, value=d["duration"], step=dstep, label="Duration (s)",
                                              elem_id="fpk_duration")
                    c["resolution"] = gr.Slider(lo, hi, value=d["resolution"], step=step, label="Resolution",
                                                elem_id="fpk_resolution")
                plan = gr.HTML(live_plan(*(d[name] for name in logic.PLAN_NAMES), d["resolution"]), elem_id="fpk_plan",
                               elem_classes=["fpk-plan-box"])
                quick = gr.Dataset(samples=[[p] for p in logic.QUICK_PROMPTS], label="Quick prompts (click to use)",
                                   components=[c["prompt"]], samples_per_page=20, elem_id="fpk_quick_prompts")

                # -------------------------------------------------------- end image, keyframes, strengths
                c["keyframes"] = gr.State(list(d["keyframes"]))
                with gr.Accordion("End image, keyframes, strengths", open=False, elem_id="fpk_guides_accordion"):
                    c["end_image"] = gr.Image(label="End image (optional, Original variant)", source="upload",
                                              type="numpy", elem_id="fpk_end_image", height=200)
                    gr.Markdown("Keyframes: extra images that steer the section(s) their WHEN names "
                                "(`3`, `2-4`, `1.5s`).", elem_classes=["fpk-help"])
                    keyframes_gallery = gr.Gallery(label="Keyframes", elem_id="fpk_keyframes", columns=6,
                                                   height=130, object_fit="contain", allow_preview=False,
                                                   value=logic.keyframe_gallery(d["keyframes"]))
                    with gr.Row(elem_classes=["fpk-keyframe-row"]):
                        keyframe_image = gr.Image(label="Keyframe image", source="upload", type="numpy",
                                                  elem_id="fpk_keyframe_image", height=160, min_width=0)
                        with gr.Column(min_width=0):
                            keyframe_when = gr.Textbox(label="WHEN", placeholder="3, 2-4, 1.5s or 1s-2s",
                                                       elem_id="fpk_keyframe_when", max_lines=1)
                            keyframe_add = gr.Button("Add keyframe", elem_id="fpk_keyframe_add", size="sm")
                    with gr.Row(elem_classes=["fpk-keyframe-row"]):
                        keyframe_pick = gr.Dropdown([], label="Keyframe to remove", elem_id="fpk_keyframe_pick",
                                                    min_width=0)
                        keyframe_remove = gr.Button("Remove", elem_id="fpk_keyframe_remove", size="sm",
                                                    elem_classes=["fpk-small-button"], min_width=0)
                        keyframe_clear = gr.Button("Clear all", elem_id="fpk_keyframe_clear", size="sm",
                                                   elem_classes=["fpk-small-button"], min_width=0)
                    keyframe_message = gr.HTML("", elem_id="fpk_keyframe_message")
                    with gr.Row(elem_id="fpk_strengths", elem_classes=["fpk-pair"]):
                        c["start_strength"] = gr.Slider(0, 1, value=d["start_strength"], step=0.05,
                                                        label="Start strength", elem_id="fpk_start_strength")
                        c["end_strength"] = gr.Slider(0, 1, value=d["end_strength"], step=0.05, label="End strength",
                                                      elem_id="fpk_end_strength")
                        c["vision_strength"] = gr.Slider(0, 1, value=d["vision_strength"], step=0.05,
                                                         label="Vision strength", elem_id="fpk_vision_strength")
                negative_visible = logic.negative_prompt_visible(d["cfg"])
                c["negative_prompt"] = gr.Textbox(value=d["negative_prompt"],
                                                  label="Negative prompt (CFG > 1)", visible=negative_visible,
                                                  lines=1, elem_id="fpk_negative_prompt")
                c["section_prompts"] = gr.Textbox(value=d["section_prompts"], label="Section prompts", lines=2,
                                                  elem_id="fpk_section_prompts",
                                                  placeholder="1: she looks up\n2-3: she starts to run\n4s: she stops")
                gr.Markdown(logic.SECTION_PROMPTS_HELP, elem_id="fpk_section_help", elem_classes=["fpk-help"])
                gr.Markdown(logic.LORA_NOTE, elem_id="fpk_lora_note", elem_classes=["fpk-help"])
                with gr.Row(elem_id="fpk_video_settings", elem_classes=["fpk-pair"]):
                    c["variant"] = gr.Radio(list(logic.VARIANTS), value=d["variant"], label="Model variant",
                                            elem_id="fpk_variant")
                    c["fps"] = gr.Number(value=d["fps"], label="FPS", minimum=logic.FPS_RANGE[0],
                                         maximum=logic.FPS_RANGE[1], elem_id="fpk_fps", min_width=0)
                    c["interpolation"] = gr.Slider(0, logic.MAX_INTERPOLATION, value=d["interpolation"], step=1,
                                                   label="Interpolated frames", elem_id="fpk_interpolation")

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
                        c["crf"] = gr.Slider(*logic.CRF_RANGE, value=d["crf"], step=1, label="Quality (CRF, lower = better)",
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

                media_controls.media_accordion(host, c, d)  # LoRA picker, upscaling, RIFE model, Tiny VAE

                # -------------------------------------------------------- advanced
                with gr.Accordion("Advanced", open=False, elem_id="fpk_advanced_accordion"):
                    with gr.Row():
                        c["seed"] = gr.Number(value=d["seed"], label="Seed (-1 = random)", precision=0,
                                              elem_id="fpk_seed")
                        seed_random = gr.Button("Random", elem_id="fpk_seed_random", size="sm",
                                                elem_classes=["fpk-small-button"])
                        seed_reuse = gr.Button("Reuse last", elem_id="fpk_seed_reuse", size="sm",
                                               elem_classes=["fpk-small-button"])
                        c["latent_window_size"] = gr.Slider(*logic.LATENT_WINDOW_RANGE, value=d["latent_window_size"], step=1,
                                                            label="Latent window", elem_id="fpk_latent_window_size")
                        c["steps"] = gr.Slider(*logic.STEPS_RANGE, value=d["steps"], step=1, label="Steps", elem_id="fpk_steps")
                    with gr.Row():
                        c["shift"] = gr.Number(value=d["shift"], label="Shift (0 = dynamic)", minimum=0, maximum=logic.MAX_SHIFT,
                                               elem_id="fpk_shift")
                        c["cfg"] = gr.Slider(1, logic.CFG_SLIDER_MAX, value=d["cfg"], step=0.1, label="CFG (1 = off)", elem_id="fpk_cfg")
                        c["distilled_cfg"] = gr.Slider(0, logic.CFG_SLIDER_MAX, value=d["distilled_cfg"], step=0.1, label="Distilled CFG",
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

                # -------------------------------------------------------- load settings, presets
                with gr.Accordion("Load settings and presets", open=False, elem_id="fpk_presets_accordion"):
                    settings_file = gr.File(label="Load settings from a video (or raw frames) made by this tool",
                                            file_types=[".mp4", ".mkv", ".mov", ".webm", ".avi", ".safetensors"],
                                            type="file", elem_id="fpk_settings_file")
                    with gr.Row(elem_classes=["fpk-keyframe-row"]):
                        preset_pick = gr.Dropdown(presets.list_presets(host), label="Preset", elem_id="fpk_preset",
                                                  min_width=0)
                        preset_load = gr.Button("Load", elem_id="fpk_preset_load", size="sm",
                                                elem_classes=["fpk-small-button"], min_width=0)
                        preset_refresh = gr.Button("Refresh", elem_id="fpk_preset_refresh", size="sm",
                                                   elem_classes=["fpk-small-button"], min_width=0)
                    with gr.Row(elem_classes=["fpk-keyframe-row"]):
                        preset_name = gr.Textbox(label="Save the current settings as", max_lines=1,
                                                 placeholder="preset name", elem_id="fpk_preset_name", min_width=0)
                        preset_save = gr.Button("Save preset", elem_id="fpk_preset_save", size="sm",
                                                elem_classes=["fpk-small-button"], min_width=0)
                    settings_message = gr.HTML("", elem_id="fpk_settings_message")
                continued = continue_controls.build()  # continue a video, re-roll, batch (issues 11, 15)

            # ------------------------------------------------------------ outputs
            with gr.Column(elem_id="fpk_outputs", elem_classes=["fpk-column"], scale=4, min_width=0):
                video = gr.Video(label="Video", autoplay=True, interactive=False, elem_id="fpk_video",
                                 elem_classes=["fpk-video"])
                media_controls.send_to_process(host, video)  # inside SD.Next
                preview = gr.HTML(logic.preview_html(None), elem_id="fpk_preview", elem_classes=["fpk-preview"])
                # the jobs panel: javascript/framepack.js refreshes it from the page route .../page/jobs
                jobs = gr.HTML(logic.jobs_html(queue), elem_id="fpk_jobs")
                task_id = gr.Textbox("", visible=False, elem_id="fpk_task_id")
                job_id = gr.Textbox("", visible=False, elem_id="fpk_job_id")
                page_id = gr.Textbox("", visible=False, elem_id="fpk_page_id")  # this page's jobs, for follow
                last_seed = gr.Number(-1, visible=False, precision=0, elem_id="fpk_last_seed")
                # rendered but hidden: the page's script clicks them (a job's Load settings, the last settings)
                with gr.Row(elem_classes=["fpk-hidden"]):
                    load_job = gr.Button("load job settings", elem_id="fpk_load_job")
                    restore = gr.Button("restore last settings", elem_id="fpk_restore")
                    jobs_refresh = gr.Button("refresh jobs", elem_id="fpk_jobs_refresh")
                    job_stop = gr.Button("stop a job", elem_id="fpk_job_stop")
                    news = gr.Button("page news", elem_id="fpk_page_news")
                settings_source = gr.Textbox("", visible=False, elem_id="fpk_settings_source")

        values = [c[name] for name in logic.VALUE_NAMES]
        plan_inputs = [c[name] for name in logic.PLAN_NAMES] + [c["resolution"], c["loras"], c["lora_weights"]]
        mode_inputs = [c["image"], c["end_image"], c["blank_start"], c["variant"], c["keyframes"]]
        continue_controls.wire(continued, host, queue, values, status, jobs, in_sdnext)

        # ---------------------------------------------------------------- live plan and mode
        for name in ("duration", "fps", "interpolation", "latent_window_size", "variant", "prompt", "section_prompts",
                     "resolution", "loras", "lora_weights"):
            c[name].change(live_plan, plan_inputs, plan, queue=False, show_progress="hidden")

        def on_mode(image, *rest):  # the blank-start choice only matters without a start image
            return logic.mode_html(image, *rest), gr.update(visible=image is None)

        for component in (c["image"], c["end_image"], c["blank_start"], c["variant"]):
            component.change(on_mode, mode_inputs, [mode, c["blank_start"]], queue=False, show_progress="hidden")
        c["cfg"].change(lambda cfg: gr.update(visible=logic.negative_prompt_visible(cfg)), c["cfg"],
                        c["negative_prompt"], queue=False, show_progress="hidden")

        # ---------------------------------------------------------------- load settings, presets
        setting_outputs = [c[name] for name in presets.SETTING_NAMES]

        def apply_settings(read):
            try:
                found = read()
            except FramePackError as error:
                return (*(gr.update() for _ in setting_outputs), logic.error_html(presets.problem_text(error)))
            return (*(gr.update(value=found[name]) for name in presets.SETTING_NAMES), None)

        def settings_reply(read, note):
            *updates, error = apply_settings(read)
            return (*updates, error or logic.info_html(note))

        def on_settings_file(file):  # only a file Gradio received from this page: a client can name any path
            if file is None:
                return (*(gr.update() for _ in setting_outputs), "")

            def read():
                upload = uploads(file, settings_file.DEFAULT_TEMP_DIR, "Load settings")[0]
                return presets.from_video(str(upload.path), host)
            return settings_reply(read, f"Settings loaded from {Path(file.name).name}")

        def on_load_job(job):
            return settings_reply(lambda: presets.from_job(queue, job, host), f"Settings of job {job} loaded")

        def on_restore(stored):
            updates = apply_settings(lambda: presets.from_values(presets.stored_values(stored), host))
            return (*updates[:-1], "")  # nothing stored yet, or stale: the defaults stay, quietly

        def on_preset_load(name):
            return settings_reply(lambda: presets.load_preset(host, name), f"Preset {name} loaded")

        def on_preset_save(name, *args):
            try:
                saved = presets.save_preset(host, name, dict(zip(logic.VALUE_NAMES, args)))
            except FramePackError as error:
                return gr.update(), logic.error_html(presets.problem_text(error))
            return (gr.update(choices=presets.list_presets(host), value=saved),
                    logic.info_html(f"Preset {saved} saved in {presets.presets_folder(host)}"))

        message = [settings_message]
        settings_file.upload(on_settings_file, settings_file, setting_outputs + message, queue=False)
        load_job.click(on_load_job, settings_source, setting_outputs + message, queue=False,
                       _js="() => [window.fpkJobToLoad || '']")
        restore.click(on_restore, settings_source, setting_outputs + message, queue=False,
                      _js="() => [window.localStorage.getItem('fpk-last-settings') || '']")
        preset_load.click(on_preset_load, preset_pick, setting_outputs + message, queue=False)
        preset_refresh.click(lambda: gr.update(choices=presets.list_presets(host)), None, preset_pick, queue=False)
        preset_save.click(on_preset_save, [preset_name, *values], [preset_pick, settings_message], queue=False)

        # ---------------------------------------------------------------- keyframes
        def keyframe_pick_update(items):
            return gr.update(choices=logic.keyframe_choices(items), value=None)

        def on_add_keyframe(keyframes, image, when, *plan_values):
            items, error = logic.add_keyframe(keyframes, image, when, plan_values[:len(logic.PLAN_NAMES) - 1])
            if error:
                return items, gr.update(), gr.update(), gr.update(), logic.error_html(error), gr.update()
            return items, logic.keyframe_gallery(items), None, "", "", keyframe_pick_update(items)

        def on_remove_keyframe(keyframes, choice):
            items = logic.remove_keyframe(keyframes, choice)
            return items, logic.keyframe_gallery(items), "", keyframe_pick_update(items)

        def on_clear_keyframes():
            return [], [], "", keyframe_pick_update([])

        keyframe_add.click(on_add_keyframe, [c["keyframes"], keyframe_image, keyframe_when, *plan_inputs],
                           [c["keyframes"], keyframes_gallery, keyframe_image, keyframe_when, keyframe_message,
                            keyframe_pick], queue=False).then(live_plan, plan_inputs, plan, queue=False) \
            .then(logic.mode_html, mode_inputs, mode, queue=False)
        keyframe_remove.click(on_remove_keyframe, [c["keyframes"], keyframe_pick],
                              [c["keyframes"], keyframes_gallery, keyframe_message, keyframe_pick],
                              queue=False).then(live_plan, plan_inputs, plan, queue=False) \
            .then(logic.mode_html, mode_inputs, mode, queue=False)
        keyframe_clear.click(on_clear_keyframes, None, [c["keyframes"], keyframes_gallery, keyframe_message,
                                                        keyframe_pick],
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
        def on_generate(task, page, *args):
            page = page or uuid.uuid4().hex
            update, _ = logic.submit(host, queue, dict(zip(logic.VALUE_NAMES, args)), task_id=task or None,
                                     page_id=page)
            return (*_outputs(update), page)

        def _follow_values(update):
            shown = _outputs(update)
            return shown[:5] + shown[6:]  # the seed stays what Generate said

        def on_follow(page):
            for update in logic.follow_page(queue, page or None):
                yield _follow_values(update)

        follow_outputs = [status, progress, preview, video, job_id, pause]
        # Generate only submits and answers at once, so every click reaches the job queue (Gradio
        # drops a click on an event still running); the page follows its jobs in a second event.
        # show_progress hidden: the progress box is ours; Gradio's per-output timers would re-render the page
        submit_inputs = [task_id, page_id, *values]
        submitted = generate.click(on_generate, submit_inputs,
                                   [status, progress, preview, video, job_id, last_seed, pause, page_id],
                                   _js=_submit_js(len(submit_inputs)), show_progress="hidden",
                                   api_name="fpk_generate", queue=False)
        if in_sdnext:  # no event held for the whole job there: the page's script asks for news (logic.page_news)
            news.click(lambda page: _follow_values(logic.page_news(queue, page or None)), page_id, follow_outputs,
                       queue=False, show_progress="hidden", api_name="fpk_page_news")
        else:  # inside SD.Next the controls below are click listeners of javascript/framepack.js (module docstring)
            follow = submitted.then(on_follow, page_id, follow_outputs, show_progress="hidden", api_name="fpk_follow")
            # a Generate that lands while the follower is ending finds it still running: look once more
            follow.then(on_follow, page_id, follow_outputs, show_progress="hidden")

            def on_pause(job, task):
                label, line = logic.toggle_pause(queue, job or None, task or None)
                return gr.update(value=label), line

            stop.click(lambda job, task: logic.stop_job(queue, job or None, task or None), [job_id, task_id], status,
                       queue=False)
            skip.click(lambda job, task: logic.skip_section(queue, job or None, task or None), [job_id, task_id],
                       status, queue=False)
            pause.click(on_pause, [job_id, task_id], [pause, status], queue=False)

            jobs_refresh.click(lambda: logic.jobs_html(queue), None, jobs, queue=False, show_progress="hidden")
            job_stop.click(lambda job: logic.stop_job(queue, job or None, None, wait=0), settings_source, status,
                           queue=False, _js="() => [window.fpkJobToStop || '']") \
                .then(lambda: logic.jobs_html(queue), None, jobs, queue=False, show_progress="hidden")

        if assets:
            blocks.load(None, None, None, _js=_script_loader())
    blocks.fpk_components = {**c, "plan": plan, "mode": mode, "status": status, "progress": progress,
                             "video": video, "preview_image": preview, "job_id": job_id, "generate": generate}
    return blocks
