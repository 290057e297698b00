"""SD.Next entry point of the FramePack extension: registers the tab, the settings and the API.

SD.Next imports every `scripts/*.py` at startup with the extension root on `sys.path` only for
the duration of that import (the list is swapped back afterwards, so inserting into it here
would be lost). This file therefore:

- imports our `framepack` package while the root is on the path, so later lazy imports of its
  submodules go through the already imported package, and makes sure it is OURS (an unrelated
  PyPI package is also called `framepack`): a foreign one is replaced, and the root is put at
  the front of `sys.path` again whenever a callback finds the package missing;
- imports nothing heavy: no torch, diffusers or engine modules until a callback needs them;
- prints nothing (SD.Next captures module stdout at import); messages go to `shared.log`.

Everything SD.Next-specific lives in `framepack.host.sdnext` (the only code importing
`modules.*`); the callbacks below are registered from this file so SD.Next attributes them to it.
"""

from __future__ import annotations

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "framepack"


def _is_ours(module) -> bool:
    path = getattr(module, "__file__", None) or ""
    return bool(path) and os.path.normcase(os.path.dirname(os.path.dirname(os.path.abspath(path)))) == \
        os.path.normcase(ROOT)


def ensure_package():
    """Import our `framepack` package (not a same-named PyPI one) and return it."""
    module = sys.modules.get(PACKAGE)
    if module is not None and _is_ours(module):
        return module
    if module is not None:  # an unrelated `framepack` was imported first: ours takes the name
        foreign = getattr(module, "__file__", None)
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        _log("warning", f'FramePack: an unrelated package "framepack" was loaded from {foreign}; '
                        f"using the extension's own package from {ROOT}")
    if ROOT in sys.path:
        sys.path.remove(ROOT)
    sys.path.insert(0, ROOT)
    importlib.invalidate_caches()
    module = importlib.import_module(PACKAGE)
    if not _is_ours(module):
        raise ImportError(f"FramePack: 'import framepack' resolved to {module.__file__}, not to {ROOT}")
    return module


def _log(level: str, message: str) -> None:
    """Through SD.Next's logger (`shared.log` is the standard logger named "sd"); never print."""
    import logging

    getattr(logging.getLogger("sd"), level)(message)


def _sdnext():
    ensure_package()
    from framepack.host import sdnext

    return sdnext


def on_ui_settings():
    _sdnext().register_settings()


def on_ui_tabs():
    return _sdnext().create_tab()


def on_app_started(demo, app):
    # routes go through shared.api.add_api_route (SD.Next's --auth applies), never app.add_api_route
    _sdnext().register_api(demo, app)


def on_after_component(component, **kwargs):
    # remembers SD.Next's Process -> Process Video input, the target of "send to Process"
    from framepack.host.sdnext_media import remember_process_video

    remember_process_video(component, **kwargs)


def register() -> None:
    callbacks = _sdnext().callbacks()
    callbacks.on_ui_settings(on_ui_settings)
    callbacks.on_ui_tabs(on_ui_tabs)
    callbacks.on_app_started(on_app_started)
    if hasattr(callbacks, "on_after_component"):
        callbacks.on_after_component(on_after_component)


try:
    register()
except Exception as error:  # a broken extension must not stop SD.Next from starting
    _log("error", f"FramePack: extension not registered: {type(error).__name__}: {error}")
