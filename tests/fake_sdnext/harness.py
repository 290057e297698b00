"""Put the fake SD.Next on `sys.path` / `sys.modules` for a test and take it away afterwards.

    with FakeSdnext(tmp_path) as sd:
        module, stdout = sd.load_entry_script()     # the way SD.Next loads scripts/*.py
        sd.run_ui_settings(); tabs = sd.run_ui_tabs(); sd.run_app_started()
        sd.finish_startup()                         # shared.sd_model assignments count from now on

Nothing global is patched: only `sys.path` gains the fake root and `sys.modules` the fake
`modules.*`, `launch`, `installer` entries, and all of them are removed on exit.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from pathlib import Path
from types import ModuleType

FAKE_ROOT = Path(__file__).resolve().parent
REPO = FAKE_ROOT.parents[1]
ENTRY_SCRIPT = REPO / "scripts" / "framepack_tab.py"
_FAKE_TOP = ("modules", "launch", "installer", "_record")


def _is_fake(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in _FAKE_TOP)


def load_entry_script(path: Path = ENTRY_SCRIPT) -> tuple[ModuleType, str]:
    """Like SD.Next's script loader: the extension root prepended to a NEW sys.path list during the
    import only, the module named after the file and not put in sys.modules, stdout captured.
    Returns (module, captured stdout)."""
    import importlib.util

    path = Path(path)
    saved_path = sys.path
    sys.path = [str(path.parent.parent)] + sys.path
    try:
        spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
        module = importlib.util.module_from_spec(spec)
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            spec.loader.exec_module(module)
    finally:
        sys.path = saved_path
    return module, stdout.getvalue()


class GuardApp:
    """Stands in for SD.Next's FastAPI app in `on_app_started(demo, app)`: registering a route on
    it directly would bypass the host's auth, so it refuses."""

    def __init__(self):
        self.direct_routes: list[str] = []

    def add_api_route(self, path, *args, **kwargs):
        self.direct_routes.append(path)
        raise AssertionError(f"route {path} registered on the app directly (bypasses SD.Next --auth)")


class FakeSdnext:
    def __init__(self, tmp: str | os.PathLike, credentials: dict[str, str] | None = None):
        self.tmp = Path(tmp)
        self.credentials = credentials
        self._saved: dict[str, ModuleType] = {}
        self.app = None
        self.guard_app = GuardApp()

    # ---- activation ----------------------------------------------------------------
    def __enter__(self) -> "FakeSdnext":
        self._saved = {name: mod for name, mod in sys.modules.items() if _is_fake(name)}
        for name in self._saved:
            del sys.modules[name]
        sys.path.insert(0, str(FAKE_ROOT))
        importlib.invalidate_caches()
        from fastapi import FastAPI

        from modules import (call_queue, devices, errors, model_quant, modeldata, paths,  # noqa: F401
                             processing_video, progress, script_callbacks, sd_checkpoint, sd_models, shared, timer)
        from modules.api.api import Api

        for name in ("call_queue", "devices", "errors", "model_quant", "modeldata", "paths", "processing_video",
                     "progress", "script_callbacks", "sd_checkpoint", "sd_models", "shared", "timer"):
            setattr(self, name, sys.modules[f"modules.{name}"])
        assert Path(shared.__file__).parent.parent == FAKE_ROOT, "the fake `modules` did not resolve"
        shared.opts.outdir_samples = str(self.tmp / "outputs")
        shared.opts.outdir_video = "video"
        shared.opts.hfcache_dir = str(self.tmp / "hfcache")
        self.app = FastAPI()
        shared.api = Api(self.app, self.credentials)
        return self

    def __exit__(self, *exc) -> None:
        sdnext = sys.modules.get("framepack.host.sdnext")
        if sdnext is not None:
            sdnext.shutdown(timeout=60)
        for name in [n for n in sys.modules if _is_fake(n)]:
            del sys.modules[name]
        sys.modules.update(self._saved)
        while str(FAKE_ROOT) in sys.path:
            sys.path.remove(str(FAKE_ROOT))
        importlib.invalidate_caches()

    # ---- what SD.Next does at startup ---------------------------------------------------
    def load_entry_script(self, path: Path = ENTRY_SCRIPT) -> tuple[ModuleType, str]:
        return load_entry_script(path)

    def run_ui_settings(self) -> None:
        self.script_callbacks.ui_settings_callback()

    def run_ui_tabs(self) -> list:
        return self.script_callbacks.ui_tabs_callback()

    def run_app_started(self, demo=None) -> None:
        self.script_callbacks.app_started_callback(demo, self.guard_app)

    def finish_startup(self) -> None:
        self.modeldata.model_data.locked = False

    # ---- test helpers ------------------------------------------------------------------
    def calls(self, name: str) -> list[dict]:
        return [details for call, details in self.sd_models.fake_calls if call == name]
