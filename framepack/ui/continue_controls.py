"""The tab's "Continue a video, re-roll, batch" accordion and the jobs panel's Resume / Re-roll /
Continue video / Cancel batch buttons (Gradio 3.43 wiring; the rules are framepack.ui.continue_actions).

`build()` lays the accordion out where it is called (the inputs column) plus hidden buttons the
page's script clicks; `wire(...)` connects them once the tab's value components exist. The jobs
panel's buttons are HTML (javascript/framepack.js): Resume and Cancel batch post to the page routes
inside SD.Next (framepack.ui.routes) and click the hidden #fpk_job_command on the standalone page;
Continue video clicks the hidden #fpk_job_extend everywhere (it needs the tab's current values);
Re-roll… puts the job's id into this accordion's Job box.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from framepack.ui import continue_actions as actions
from framepack.ui import logic

HELP = ("**Continue this video**: the clip's last frames start the new part, with this tab's prompt, section "
        "prompts, duration and sampling settings (its start image, FPS and size come from the clip). "
        "**Re-roll**: a job with checkpoints made again from a section on with a new seed (press Re-roll… on the job "
        "in the jobs panel). **Batch**: one job per image (its prompt from a same-name .txt caption, else the "
        "Prompt box), or one per line of a prompt list (.txt) or JSONL file of settings, all with this tab's settings.")
COMMAND_JS = "() => (window.fpkJobCommand || ['', ''])"
EXTEND_JS = "(...args) => [window.fpkJobToExtend || '', ...args.slice(1)]"


def build() -> SimpleNamespace:
    """The accordion and the hidden buttons, laid out where this is called."""
    p = SimpleNamespace()
    with gr.Accordion("Continue a video, re-roll, batch", open=False, elem_id="fpk_continue_accordion"):
        gr.Markdown(HELP, elem_classes=["fpk-help"])
        p.video = gr.File(label="Video to continue (or raw frames .safetensors)", type="file",
                          file_types=list(actions.VIDEO_SUFFIXES), elem_id="fpk_continue_video", height=120)
        with gr.Row(elem_classes=["fpk-pair", "fpk-keyframe-row"]):
            p.variant = gr.Radio(list(actions.CONTINUE_VARIANTS), value="auto",
                                 label="Continue with (Auto: F1; Original when there is an end image)",
                                 elem_id="fpk_continue_variant")
            p.go = gr.Button("Continue this video", elem_id="fpk_continue", size="sm", min_width=0)
        p.reroll_job = gr.Textbox(label="Job to re-roll", placeholder="Re-roll… in the jobs panel fills it",
                                  max_lines=1, elem_id="fpk_reroll_job")
        with gr.Row(elem_classes=["fpk-pair", "fpk-keyframe-row"]):
            p.reroll_section = gr.Number(1, label="Re-roll from section", precision=0, minimum=1,
                                         elem_id="fpk_reroll_section", min_width=0)
            p.reroll_seed = gr.Number(-1, label="New seed (-1: random)", precision=0, elem_id="fpk_reroll_seed",
                                      min_width=0)
            p.reroll = gr.Button("Re-roll", elem_id="fpk_reroll", size="sm", min_width=0)
        p.batch_files = gr.File(label="Batch files: images (+ .txt captions) or a prompt list",
                                file_count="multiple", type="file", elem_id="fpk_batch_files",
                                file_types=[*actions.IMAGE_SUFFIXES, *actions.LIST_SUFFIXES], height=120)
        with gr.Row(elem_classes=["fpk-pair", "fpk-keyframe-row"]):
            p.batch_name = gr.Textbox(label="Batch name (optional)", max_lines=1, elem_id="fpk_batch_name",
                                      min_width=0)
            p.batch = gr.Button("Queue batch", elem_id="fpk_batch", size="sm", min_width=0)
        p.message = gr.HTML("", elem_id="fpk_continue_message")
    with gr.Row(elem_classes=["fpk-hidden"]):  # clicked by the page's script from the jobs panel
        p.command = gr.Button("job command", elem_id="fpk_job_command")
        p.extend_job = gr.Button("continue a job's video", elem_id="fpk_job_extend")
    p.command_action = gr.Textbox("", visible=False, elem_id="fpk_job_command_action")
    p.command_target = gr.Textbox("", visible=False, elem_id="fpk_job_command_target")
    return p


def wire(p: SimpleNamespace, host, queue, values: list, status, jobs, in_sdnext: bool) -> None:
    """Connect the controls: `values` are the tab's value components (logic.VALUE_NAMES order)."""
    folder = p.video.DEFAULT_TEMP_DIR  # where Gradio keeps what the page uploaded: the only files read

    def tab_values(args) -> dict:
        return dict(zip(logic.VALUE_NAMES, args))

    def on_continue(file, variant, *args):
        return actions.extend_clip(host, queue, tab_values(args), upload=file, variant=variant, upload_dir=folder)

    def on_extend_job(job, variant, *args):
        return actions.extend_clip(host, queue, tab_values(args), job_id=job or None, variant=variant)

    def on_batch(files, name, *args):
        return actions.queue_batch(host, queue, files, tab_values(args), name, upload_dir=folder)

    def on_command(action, target):
        if action == "resume":
            return actions.resume_job(queue, target)
        if action == "cancel-batch":
            return actions.cancel_batch(queue, target)
        return logic.error_html(f"unknown job action {action!r}")

    def refreshed(event):  # the standalone page redraws its jobs panel at once; SD.Next's script polls it
        if not in_sdnext:
            event.then(lambda: logic.jobs_html(queue), None, jobs, queue=False, show_progress="hidden")

    refreshed(p.go.click(on_continue, [p.video, p.variant, *values], p.message, queue=False))
    refreshed(p.reroll.click(lambda job, section, seed: actions.reroll_job(queue, job, section, seed),
                             [p.reroll_job, p.reroll_section, p.reroll_seed], p.message, queue=False))
    refreshed(p.batch.click(on_batch, [p.batch_files, p.batch_name, *values], p.message, queue=False))
    refreshed(p.extend_job.click(on_extend_job, [p.command_target, p.variant, *values], status, queue=False,
                                 _js=EXTEND_JS))
    refreshed(p.command.click(on_command, [p.command_action, p.command_target], status, queue=False,
                              _js=COMMAND_JS))
