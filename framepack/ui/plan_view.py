"""The plan box, the mode line and the keyframe list: what the inputs will make, before Generate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from framepack.errors import FramePackError
from framepack.ui.values import _esc, _number, _whole, error_html, labelled, log

# ----------------------------------------------------------------------------- the plan

@dataclass
class PlanView:
    """What the plan box shows: one line and a row per section, or an error."""

    summary: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

def keyframe_whens(keyframes: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return [str(item.get("when", "")) for item in (keyframes or [])]


def plan_view(duration: Any, fps: Any, interpolation: Any, latent_window_size: Any, variant: Any, prompt: Any,
              section_prompts: Any, keyframes: Sequence[Mapping[str, Any]] | None = None, loras: Any = None,
              lora_weights: Any = None) -> PlanView:
    """The planner's answer for these settings; errors (bad numbers, schedule syntax) as text.

    `loras` / `lora_weights`: the LoRA picker's names and weights text (each section's weights go
    into the table's LoRA column)."""
    from framepack.request.model import lora_plan_entries
    from framepack.request.planner import plan_video
    from framepack.ui.media_values import lora_specs

    try:
        lora_entries = lora_plan_entries(lora_specs(loras, lora_weights))
    except FramePackError as error:
        return PlanView(error="; ".join(labelled(problem) for problem in error.problems()))
    try:
        plan = plan_video(duration=_number(duration), fps=_number(fps), interpolation=_whole(interpolation),
                          latent_window_size=_whole(latent_window_size), variant=variant or "original",
                          prompt=prompt or "", section_prompts=section_prompts or "",
                          keyframes=keyframe_whens(keyframes), loras=lora_entries)
    except FramePackError as error:
        return PlanView(error=str(error))
    summary = plan.summary()
    asked = _number(duration)
    if isinstance(asked, (int, float)) and abs(plan.duration - asked) >= 0.005:
        summary += f" (asked {asked:.2f} s)"
    if plan.variant == "original" and plan.num_sections > 1:
        summary += "; sampled end first"
    return PlanView(summary=summary, rows=plan.table())


def plan_html(duration: Any, fps: Any, interpolation: Any, latent_window_size: Any, variant: Any, prompt: Any,
              section_prompts: Any, keyframes: Sequence[Mapping[str, Any]] | None = None) -> str:
    view = plan_view(duration, fps, interpolation, latent_window_size, variant, prompt, section_prompts, keyframes)
    return render_plan(view)


def host_plan_html(host, duration: Any, fps: Any, interpolation: Any, latent_window_size: Any, variant: Any,
                   prompt: Any, section_prompts: Any, keyframes: Sequence[Mapping[str, Any]] | None = None,
                   resolution: Any = None, loras: Any = None, lora_weights: Any = None) -> str:
    """`plan_html` with the resources the run needs on the host's machine appended to the plan line
    (predicted VRAM, RAM, disk; or that it does not fit and what would)."""
    view = plan_view(duration, fps, interpolation, latent_window_size, variant, prompt, section_prompts, keyframes,
                     loras, lora_weights)
    if view.error is None:
        view.summary += resources_text(host, view, _whole(resolution), _whole(latent_window_size), variant)
    return render_plan(view)


def resources_text(host, view: PlanView, resolution: Any, window: Any, variant: Any) -> str:
    """' · VRAM .., RAM .., disk ..' for the plan line; empty when the host describes no machine or
    the values cannot be planned yet (the plan line shows their errors)."""
    from framepack.jobs.resources import assess, resources_line, workload_inputs

    describe = getattr(host, "resource_machine", None)
    if describe is None or not isinstance(resolution, int) or not isinstance(window, int):
        return ""
    try:
        variant = str(variant or "original")
        workload = workload_inputs({"variant": variant, "resolution": resolution, "latent_window_size": window},
                                   len(view.rows), len({row["section_text"] for row in view.rows}) or 1)
        plan, refusal = assess(describe(variant), workload)
    except Exception:  # noqa: BLE001 - the resources only decorate the plan line; the run checks again
        log.debug("no resource plan for the plan line", exc_info=True)
        return ""
    if refusal is not None:
        return f" · needs {resources_line(plan)}: {refusal}"
    return f" · {resources_line(plan)}"


def render_plan(view: PlanView) -> str:
    if view.error:
        return (f'<div class="fpk-plan fpk-plan-bad"><div class="fpk-plan-error" role="alert">{_esc(view.error)}'
                '</div></div>')
    rows = []
    for row in view.rows:
        text = row["section_text"]
        shown = row["prompt"] or "(empty prompt)"
        if text and shown.endswith(text):  # the section's own text in bold after the main prompt
            shown = f"{_esc(shown[: len(shown) - len(text)])}<b>{_esc(text)}</b>"
        else:
            shown = _esc(shown)
        keyframe = "" if row["keyframe"] is None else f"#{row['keyframe']}"
        lora = f"<td>{_esc(row['loras'])}</td>" if "loras" in row else ""
        rows.append(
            f"<tr><td>{row['number']}</td><td>{_esc(row['time'])}</td><td>{_esc(row['frames'])}</td>"
            f"<td>{row['order']}</td><td class=\"fpk-plan-prompt\" title=\"{_esc(row['prompt'])}\">{shown}</td>"
            f"<td>{keyframe}</td>{lora}</tr>")
    lora_header = "<th>LoRA</th>" if view.rows and "loras" in view.rows[0] else ""
    table = (
        '<div class="fpk-plan-scroll"><table class="fpk-plan-table"><thead><tr>'
        '<th>section</th><th>time</th><th>frames</th>'
        f'<th title="sampling order">order</th><th>prompt</th><th>keyframe</th>{lora_header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>")
    return f'<div class="fpk-plan"><div class="fpk-plan-line">{_esc(view.summary)}</div>{table}</div>'


def mode_html(image: Any, end_image: Any, blank_start: Any, variant: Any,
              keyframes: Sequence[Any] | None = None) -> str:
    """One line under the images: which kind of generation the inputs make (or why they cannot)."""
    if end_image is not None and variant == "f1":
        return error_html("An end image needs the Original variant: F1 generates forward and cannot aim at a "
                          "last frame. Choose Original or remove the end image.")
    if image is None:
        text = (f"Text-to-video from a {blank_start or 'black'} start frame (no start image). "
                "Weaker than image-to-video: the models were trained to animate a real image.")
    elif end_image is not None:
        text = "First + last frame to video (FLF2V)."
    else:
        text = "Image-to-video (I2V)."
    if keyframes:
        text += f" {len(keyframes)} keyframe{'s' if len(keyframes) != 1 else ''}."
    return f'<div class="fpk-mode">{_esc(text)}</div>'


# ----------------------------------------------------------------------------- keyframes

def add_keyframe(keyframes: Sequence[Mapping[str, Any]] | None, image: Any, when: Any,
                 plan_values: Sequence[Any] | None = None) -> tuple[list, str | None]:
    """Append a keyframe after checking its WHEN; returns (keyframes, error or None).

    `plan_values`: the plan's inputs as in `PLAN_NAMES` (without keyframes): a WHEN outside the
    video those settings make (section 7 of 3, 9s of a 5 s video) is refused at once. A later
    change of the duration can still leave one outside; the plan box then says so in red.
    """
    from framepack.request.schedule import parse_when

    items = list(keyframes or [])
    if image is None:
        return items, "Keyframes: choose an image first"
    text = str(when or "").strip().rstrip(":").strip()
    if not text:
        return items, "Keyframes: write WHEN the image applies: a section (3), range (2-4) or time (1.5s)"
    try:
        parse_when(text, f"keyframe {len(items) + 1}")
    except FramePackError as error:
        return items, str(error)
    if plan_values is not None:
        view = plan_view(*plan_values, keyframes=[{"when": text}])
        if view.error:
            return items, f"Keyframes: {view.error}"
    items.append({"image": image, "when": text})
    return items, None


def remove_keyframe(keyframes: Sequence[Mapping[str, Any]] | None, choice: Any) -> list:
    """The keyframes without the one `choice` names (a `keyframe_choices` entry: "#2 at 3")."""
    items = list(keyframes or [])
    labels = keyframe_choices(items)
    if choice in labels:
        del items[labels.index(choice)]
    return items


def keyframe_choices(keyframes: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return [f"#{n} at {item['when']}" for n, item in enumerate(keyframes or [], start=1)]


def keyframe_gallery(keyframes: Sequence[Mapping[str, Any]] | None) -> list[tuple[Any, str]]:
    return [(item["image"], f"#{n} at {item['when']}") for n, item in enumerate(keyframes or [], start=1)]

