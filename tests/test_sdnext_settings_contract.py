"""Contract: our settings' component args survive what the REAL SD.Next does with them.

SD.Next's `modules/ui_settings.py` (read from the vendored snapshot, ../shared/vendor/) builds
each setting with `comp(label=..., value=..., elem_id=..., **args)` and, on every page load,
returns `get_value_for_setting(key)` = `gr.update(value=..., **args)` for every setting; Gradio
then calls the component's `update(**args)`. One key `update()` does not accept fails the whole
page-load event, and SD.Next marks every setting of every section with an Error badge.

The real `get_value_for_setting` is executed here (its source taken from the snapshot), and its
result goes through Gradio 3.43.2's own `postprocess_update_dict`, as in the server.
"""

from __future__ import annotations

import ast
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio.blocks import postprocess_update_dict

from framepack.host import sdnext

ROOT = Path(__file__).resolve().parents[1]
VENDOR = Path(os.environ.get("FRAMEPACK_VENDOR_DIR", ROOT.parent / "shared" / "vendor"))
SNAPSHOT = VENDOR / "sdnext-058a7f0.tar.gz"
COMPONENTS = {"textbox": gr.Textbox, "textarea": gr.Textbox, "radio": gr.Radio, "dropdown": gr.Dropdown,
              "slider": gr.Slider, "checkbox": gr.Checkbox}
CONSTRUCTION = "res = comp(label=info.label, value=fun(), elem_id=elem_id, **args)"


@pytest.fixture(scope="module")
def ui_settings_source() -> str:
    if not SNAPSHOT.is_file():
        pytest.skip(f"the vendored SD.Next snapshot is not here ({SNAPSHOT}); set FRAMEPACK_VENDOR_DIR")
    with tarfile.open(SNAPSHOT) as archive:
        member = archive.extractfile("modules/ui_settings.py")
        assert member is not None
        return member.read().decode("utf-8")


def _function(source: str, name: str):
    """Compile one top-level function of the real module, alone."""
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    assert node is not None, f"SD.Next's ui_settings.py has no {name}() any more: re-check the contract"
    return compile(ast.Module(body=[node], type_ignores=[]), "modules/ui_settings.py", "exec")


class _Info(SimpleNamespace):
    """The fields of SD.Next's OptionInfo that ui_settings reads."""


def _real_get_value_for_setting(source: str, infos: dict, values: dict):
    namespace = {"gr": gr, "shared": SimpleNamespace(opts=_Opts(infos, values))}
    exec(_function(source, "get_value_for_setting"), namespace)  # noqa: S102 - SD.Next's own code, vendored
    return namespace["get_value_for_setting"]


class _Opts:
    def __init__(self, infos: dict, values: dict) -> None:
        self.data_labels = infos
        self._values = values

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None


def _settings():
    infos, values = {}, {}
    for setting in sdnext.SETTINGS:
        infos[setting.key] = _Info(default=setting.default, label=setting.label,
                                   component=COMPONENTS[setting.component], component_args=setting.args)
        values[setting.key] = setting.default
    return infos, values


def test_ui_settings_still_builds_and_updates_settings_the_way_this_contract_assumes(ui_settings_source):
    assert CONSTRUCTION in ui_settings_source
    assert "return gr.update(value=value, **args)" in ui_settings_source


@pytest.mark.parametrize("key", [setting.key for setting in sdnext.SETTINGS])
def test_every_setting_survives_the_real_page_load_update(ui_settings_source, key):
    infos, values = _settings()
    info = infos[key]
    args = info.component_args() if callable(info.component_args) else info.component_args or {}
    with gr.Blocks():
        component = info.component(label=info.label, value=values[key], elem_id=f"setting_{key}", **args)
    update = _real_get_value_for_setting(ui_settings_source, infos, values)(key)
    # what Gradio does with an update dict returned by an event (TypeError on an unknown key)
    specific = postprocess_update_dict(component, update, postprocess=True)
    assert specific["value"] == component.postprocess(values[key])
    for name, value in args.items():
        if name in ("choices",):
            assert [c[0] if isinstance(c, tuple) else c for c in specific[name]] == list(value)


def test_the_codec_setting_keeps_a_stored_codec_that_does_not_open_here(monkeypatch):
    import sys

    shared = SimpleNamespace(opts=SimpleNamespace(data={"framepack_codec": "made_up_encoder"}))
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    choices = sdnext._codec_choices()["choices"]
    assert choices[0] == "made_up_encoder" and "libx264" in choices
    assert set(sdnext._codec_choices()) == {"choices"}
