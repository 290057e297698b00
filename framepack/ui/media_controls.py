"""The tab's LoRA picker, upscaling / RIFE / Tiny VAE accordion, Networks panel, prompt enhancer and
Send to Process.

Built inside `create_ui`'s Blocks (framepack/ui/tab.py) by three calls; the values and their
mapping to a request are `framepack.ui.media_values` (no Gradio there). Every event here answers
at once (`queue=False`): none of them may wait behind a generation that holds Gradio's queue.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from framepack.errors import FramePackError
from framepack.request import limits
from framepack.ui import media_values as mv
from framepack.ui.values import error_html, info_html

LORA_HELP = (
    "LoRA files from the LoRA folder (setting `framepack_lora_dir`; **Refresh** after adding files). "
    "Weights: one line per LoRA, `name: 0.8`, or a weight per section with the section prompts' WHEN: "
    "`name: 0.8@1-3` (0.8 in sections 1-3, off elsewhere), `name: 0.3,1@4` (0.3, but 1 in section 4). "
    "Picking a LoRA adds its line (weight 1)."
)
MEDIA_HELP = (
    "**Upscale** the frames as they stream out (1 = off): `lanczos`, an ESRGAN-family model from the model "
    "folder (setting `framepack_model_dir`), or inside SD.Next its upscalers (`sdnext:...`). **RIFE model**: "
    "used when the interpolation method (Video) is `rife`. **Tiny VAE decode**: decode the video with the "
    "recipe's Tiny VAE (much faster, a little softer; live previews use it whenever the recipe has one)."
)


def prompt_tools(host, c: dict[str, Any]) -> None:
    """Under the prompt, inside SD.Next: the Networks button (the host's Networks panel, whose LoRA
    cards insert `<lora:name:w>` into our prompt) and Enhance prompt, when the host has them."""
    enhance_shown = mv.enhancer_available(host)
    add_panel = getattr(host, "add_networks_panel", None)
    if not (enhance_shown or callable(add_panel)):
        return
    with gr.Row(elem_id="fpk_prompt_tools", elem_classes=["fpk-keyframe-row"]):
        if callable(add_panel):  # the id SD.Next's panel script knows its toggle by ({tab}_extra_networks_btn)
            networks = gr.Button("Networks", elem_id="fpk_extra_networks_btn", size="sm",
                                 elem_classes=["fpk-small-button"], min_width=0)
        if enhance_shown:
            enhance = gr.Button("Enhance prompt", elem_id="fpk_enhance", size="sm", elem_classes=["fpk-small-button"],
                                min_width=0)
            message = gr.HTML("", elem_id="fpk_enhance_message")
    if callable(add_panel) and not add_panel(networks, c["prompt"]):
        networks.visible = False  # this SD.Next has no Networks panel, or it is disabled
    if not enhance_shown:
        return

    def on_enhance(prompt, image):
        try:  # waits while a generation holds the GPU: the enhancer runs on it too
            return host.enhance_prompt(prompt or "", image), info_html("Prompt enhanced")
        except FramePackError as error:
            return gr.update(), error_html(f"Enhance prompt: {error}")

    enhance.click(on_enhance, [c["prompt"], c["image"]], [c["prompt"], message], queue=False)


def media_accordion(host, c: dict[str, Any], d: dict[str, Any]) -> None:
    """The "LoRA, upscaling, Tiny VAE" accordion; puts its controls into `c` (the tab's values)."""
    with gr.Accordion("LoRA, upscaling, Tiny VAE", open=False, elem_id="fpk_media_accordion"):
        with gr.Row(elem_classes=["fpk-keyframe-row"]):
            c["loras"] = gr.Dropdown(mv.choices_with(mv.lora_choices(host), d["loras"]), value=list(d["loras"]),
                                     multiselect=True, label="LoRA", elem_id="fpk_loras", min_width=0)
            lora_refresh = gr.Button("Refresh", elem_id="fpk_lora_refresh", size="sm",
                                     elem_classes=["fpk-small-button"], min_width=0)
        c["lora_weights"] = gr.Textbox(value=d["lora_weights"], label="LoRA weights", lines=2,
                                       elem_id="fpk_lora_weights", placeholder="style: 0.8\nmotion: 0.5@1-3")
        gr.Markdown(LORA_HELP, elem_id="fpk_lora_help", elem_classes=["fpk-help"])
        with gr.Row():
            c["upscale"] = gr.Slider(*limits.UPSCALE_RANGE, value=d["upscale"], step=0.25, label="Upscale (x)",
                                     elem_id="fpk_upscale")
            c["upscaler"] = gr.Dropdown(mv.choices_with(mv.upscaler_choices(host), d["upscaler"]),
                                        value=d["upscaler"], label="Upscaler", elem_id="fpk_upscaler")
        with gr.Row(elem_classes=["fpk-keyframe-row"]):
            c["interpolation_model"] = gr.Dropdown(mv.choices_with(mv.rife_choices(host), d["interpolation_model"]),
                                                   value=d["interpolation_model"], label="RIFE model",
                                                   elem_id="fpk_interpolation_model", min_width=0)
            models_refresh = gr.Button("Refresh", elem_id="fpk_models_refresh", size="sm",
                                       elem_classes=["fpk-small-button"], min_width=0)
        c["tiny_vae_decode"] = gr.Checkbox(value=d["tiny_vae_decode"], label="Tiny VAE decode",
                                           elem_id="fpk_tiny_vae_decode")
        gr.Markdown(MEDIA_HELP, elem_id="fpk_media_help", elem_classes=["fpk-help"])

    c["loras"].change(mv.sync_lora_weights, [c["loras"], c["lora_weights"]], c["lora_weights"], queue=False,
                      show_progress="hidden")
    lora_refresh.click(lambda current: gr.update(choices=mv.choices_with(mv.lora_choices(host), current)),
                       c["loras"], c["loras"], queue=False)

    def on_models_refresh(upscaler, rife):
        return (gr.update(choices=mv.choices_with(mv.upscaler_choices(host), upscaler)),
                gr.update(choices=mv.choices_with(mv.rife_choices(host), rife)))

    models_refresh.click(on_models_refresh, [c["upscaler"], c["interpolation_model"]],
                         [c["upscaler"], c["interpolation_model"]], queue=False)


def send_to_process(host, video) -> None:
    """Inside SD.Next: a button putting the finished video into its Process -> Process Video tab."""
    bind = getattr(host, "bind_send_to_process", None)
    if not callable(bind):
        return
    button = gr.Button("Send to Process", elem_id="fpk_send_to_process", size="sm")
    if not bind(button, video):  # this SD.Next has no video input in its Process tab
        button.visible = False
