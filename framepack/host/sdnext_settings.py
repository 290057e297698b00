"""The "FramePack" section of SD.Next's Settings page, built from framepack/request/settings.py.

`register_settings()` is the `on_ui_settings` body: one `shared.OptionInfo` per `Setting`, through
`shared.opts.add_option`. `modules.*` and Gradio are imported inside functions only.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from framepack.request.settings import SETTINGS, Setting

SECTION = ("framepack", "FramePack")


def _codec_choices() -> dict[str, Any]:
    """Encoders that actually open on this machine (built when the settings page is drawn).

    Only keys Gradio 3.43's `Dropdown.update()` accepts: SD.Next's `ui_settings` passes these
    args into `gr.update()` on every page load, and one unknown key (`allow_custom_value` is a
    constructor-only argument) fails the page-load event and marks every setting of every
    section as an error. A stored value that does not open here stays selectable, listed first.
    """
    try:
        from framepack.io import codecs

        choices = list(codecs.available_encoders())
    except Exception:  # PyAV missing or broken: the list is what it is, the value is still checked at use
        choices = ["libx264"]
    current = _stored_option("framepack_codec")
    if isinstance(current, str) and current and current not in choices:
        choices.insert(0, current)
    return {"choices": choices}


# Settings whose choices only the running machine knows (`Setting.choices` is None for them).
MACHINE_CHOICES: dict[str, Callable[[], Mapping[str, Any]]] = {"framepack_codec": _codec_choices}


def _stored_option(key: str) -> Any:
    """A setting's stored value inside SD.Next (None outside it or before the options exist)."""
    import sys

    shared = sys.modules.get("modules.shared")
    try:
        return shared.opts.data.get(key) if shared is not None else None
    except AttributeError:
        return None


def component_args(setting: Setting) -> Mapping[str, Any] | Callable[[], Mapping[str, Any]]:
    """`OptionInfo.component_args` for one setting: a dict, or a function SD.Next calls on each page load."""
    if setting.key in MACHINE_CHOICES:
        return MACHINE_CHOICES[setting.key]
    args: dict[str, Any] = {}
    if setting.choices is not None:
        args["choices"] = list(setting.choices)
    if setting.slider is not None:
        args["minimum"], args["maximum"], args["step"] = setting.slider
    if setting.lines is not None:
        args["lines"] = setting.lines
    return args


def register_settings() -> None:
    """`on_ui_settings` body: add the FramePack section through `shared.opts.add_option`."""
    import gradio as gr
    from modules import shared

    components = {"textbox": gr.Textbox, "textarea": gr.Textbox, "radio": gr.Radio, "dropdown": gr.Dropdown,
                  "slider": gr.Slider, "checkbox": gr.Checkbox}
    for setting in SETTINGS:
        info = shared.OptionInfo(setting.default, setting.label, components[setting.component],
                                 component_args(setting), section=SECTION)
        shared.opts.add_option(setting.key, info)
