"""Fake `modules.script_callbacks`: registration of tabs, settings and app-started hooks.

As in SD.Next, an exception raised by a callback is reported (`errors.display`) and the other
callbacks still run.
"""

from __future__ import annotations

import sys
from collections import namedtuple

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback"])
callback_map = dict(
    callbacks_app_started=[],
    callbacks_ui_settings=[],
    callbacks_ui_tabs=[],
    callbacks_after_component=[],
)
fake_exceptions: list[tuple[str, str, BaseException]] = []  # test-only


def report_exception(e, c, job):
    from modules import errors

    fake_exceptions.append((job, c.script, e))
    errors.display(e, f"executing callback: {c.script} {job}")


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def add_callback(callbacks, fun):
    filename = sys._getframe().f_back.f_back.f_code.co_filename  # pylint: disable=protected-access
    callbacks.append(ScriptCallback(filename, fun))


def app_started_callback(demo, app):
    for c in callback_map["callbacks_app_started"]:
        try:
            c.callback(demo, app)
        except Exception as e:
            report_exception(e, c, "app_started_callback")


def ui_settings_callback():
    for c in callback_map["callbacks_ui_settings"]:
        try:
            c.callback()
        except Exception as e:
            report_exception(e, c, "ui_settings_callback")


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception as e:
            report_exception(e, c, "ui_tabs_callback")
    return res


def on_app_started(callback):
    """fn(demo: gr.Blocks, app: FastAPI), called once the web server is up."""
    add_callback(callback_map["callbacks_app_started"], callback)


def on_ui_settings(callback):
    """fn(), adds settings with shared.opts.add_option(key, shared.OptionInfo(...))."""
    add_callback(callback_map["callbacks_ui_settings"], callback)


def on_ui_tabs(callback):
    """fn() -> [(gr.Blocks, title, elem_id)] or None."""
    add_callback(callback_map["callbacks_ui_tabs"], callback)


def on_after_component(callback):
    """fn(component, **kwargs) after each Gradio component is created (kwargs: its init arguments, elem_id...)."""
    add_callback(callback_map["callbacks_after_component"], callback)


def after_component_callback(component, **kwargs):
    for c in callback_map["callbacks_after_component"]:
        try:
            c.callback(component, **kwargs)
        except Exception as e:
            report_exception(e, c, "after_component_callback")
