"""SD.Next as the host: the `framepack.request.host.Host` services on top of SD.Next's `modules.*`.

Only framepack/host/sdnext*.py touch SD.Next, and only inside functions, so importing them costs
nothing but the standard library (SD.Next imports the entry script at startup). The contract
relied on is docs/HOST.md; the names used are exactly those. By concern:

- sdnext_settings.py: the "FramePack" settings section (from framepack/request/settings.py);
- sdnext_models.py: the pipeline as `shared.sd_model` (load, SDNQ, offload, unload);
- sdnext_lora.py: `<lora:name:w>` prompt tags -> the LoRA files of SD.Next's LoRA list;
- sdnext_networks.py: SD.Next's Networks panel in our tab (cards insert into our prompt);
- sdnext_control.py: `shared.state` (Stop / Skip / Pause, progress, stage hooks) and the log;
- this file: `SdnextHost` (settings, folders, devices, timers, one job), the process-wide
  singletons the entry script uses (`get_host()`, `get_queue()`) and the callback bodies
  (`register_settings()`, `create_tab()`, `register_api()`), so that a reload of the entry
  script (SD.Next re-executes it) never starts a second queue.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from framepack.host import sdnext_lora
from framepack.host.sdnext_models import SdnextModels
from framepack.host.sdnext_settings import register_settings
from framepack.host.defaults import SettingsDefaults
from framepack.host.sdnext_media import SdnextMedia
from framepack.host.sdnext_networks import SdnextNetworks
from framepack.request.settings import OFFLOAD_CHOICES, SETTING_DEFAULTS

log = logging.getLogger("framepack")

__all__ = ["OFFLOAD_CHOICES", "SdnextHost", "create_tab", "get_host", "get_queue", "register_api",
           "register_settings", "shutdown"]


def _shared():
    from modules import shared

    return shared


def _control():
    """sdnext_control.py, imported on first use: it imports the engine, which SD.Next's startup must not."""
    from framepack.host import sdnext_control

    return sdnext_control


class SdnextHost(SdnextMedia, SdnextNetworks, SettingsDefaults):
    # SdnextMedia: RIFE, upscalers, enhancer, send to Process; SdnextNetworks: the Networks panel
    """`framepack.request.host.Host` inside SD.Next.

    `recipe_for` (optional) replaces the `framepack_model_recipe` setting: a function
    `variant -> Recipe` for programmatic use and tests.
    """

    name = "sdnext"

    def __init__(self, recipe_for: Callable[[str], Any] | None = None) -> None:
        self.models = SdnextModels(self, recipe_for)
        _control().bridge_logging()

    # ---- settings and folders -------------------------------------------------------
    def option(self, key: str, default: Any = None) -> Any:
        """`shared.opts.get(key)` (registered defaults included); unknown keys -> `default`."""
        try:
            return _shared().opts.get(key)
        except (AttributeError, KeyError):
            return SETTING_DEFAULTS.get(key) if default is None else default

    def video_dir(self) -> Path:
        from modules import paths

        opts = _shared().opts
        folder = Path(paths.resolve_output_path(opts.outdir_samples, opts.outdir_video) or "outputs/video")
        folder = folder.expanduser().absolute()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def keep_incomplete(self) -> bool:
        return bool(_shared().opts.keep_incomplete)

    def hf_cache_dir(self) -> str | None:
        return _shared().opts.hfcache_dir or None

    def offline_mode(self) -> bool:
        return bool(_shared().opts.offline_mode)

    # ---- device, memory, logging ----------------------------------------------------
    def torch_device(self):
        from modules import devices

        return devices.device

    def torch_dtype(self):
        from modules import devices

        return devices.dtype

    def gc(self) -> None:
        from modules import devices

        devices.torch_gc(force=True)

    def logger(self):
        return _shared().log

    def display_error(self, error: BaseException, title: str) -> None:
        from modules import errors

        errors.display(error, title)

    def add_timer(self, name: str, seconds: float) -> None:
        from modules import timer

        timer.process.add(name, seconds)

    # ---- models (sdnext_models.py) ------------------------------------------------------
    def recipe(self, variant: str):
        return self.models.recipe(variant)

    def pipeline(self, variant: str):
        return self.models.pipeline(variant)

    def loaded_variant(self) -> str | None:
        return self.models.loaded_variant()

    def unload(self) -> None:
        self.models.unload()

    # ---- one generation -------------------------------------------------------------
    def prepare_request(self, request):
        """`<lora:name:weight>` tags of the prompts -> `request.loras` (sdnext_lora.py)."""
        return sdnext_lora.prepare_request(request)

    def gpu_lock(self):
        from modules import call_queue

        return call_queue.get_lock()

    def task_queued(self, task_id: str) -> None:
        """Show `task_id` (the web UI's `randomId()`) as queued in the host's progress bar."""
        from modules import progress

        progress.add_task_to_queue(task_id)

    def task_finished(self, task_id: str) -> None:
        from modules import progress

        progress.finish_task(task_id)

    def new_control(self, task_id: str | None = None):
        """Follows SD.Next's Stop / Skip / Pause; with a task id, `begin_job` makes that task active."""
        return _control().SdnextControl(self, task_id)

    def resource_machine(self, variant: str):
        """The GPU SD.Next runs on, for the resource plan. SD.Next's offload decides what is
        resident (balanced is planned as model offload, its nearest mode), so a run predicted not
        to fit is shown, not refused."""
        import dataclasses

        from modules import devices

        from framepack.jobs.resources import Machine
        from framepack.models.component_sizes import recipe_configs

        offload = self.models.offload_mode()
        planned = offload if offload in ("none", "model", "group", "sequential") else "model"  # balanced, or new
        machine = Machine.local(devices.device, offload=planned,
                                quantization=str(self.option("framepack_quantization") or "none"),
                                configs=recipe_configs(self.recipe(variant)))
        return dataclasses.replace(machine, enforce=False)

    def begin_job(self, title: str, control=None) -> Any:
        control = control if getattr(control, "host", None) is self else None
        token = _control().begin_state(title, control)
        self.models.job_started()
        return token

    def end_job(self, token: Any) -> None:
        try:
            self.models.job_ended()
        finally:
            _control().end_state(token)

    def report(self, event: object) -> None:
        _control().report_to_state(event)

    def record_output(self, path: Path) -> None:
        _shared().state.outputs(str(path))


# ----------------------------------------------------------------------------- extension singletons

_singletons_lock = threading.Lock()
_host: SdnextHost | None = None
_queue = None


def callbacks():
    """`modules.script_callbacks` (the entry script registers through it)."""
    from modules import script_callbacks

    return script_callbacks


def get_host() -> SdnextHost:
    global _host
    with _singletons_lock:
        if _host is None:
            _host = SdnextHost()
        return _host


def get_queue():
    global _queue
    host = get_host()
    with _singletons_lock:
        if _queue is None:
            from framepack.jobs.queue import JobQueue
            from framepack.jobs.store import JobStore

            _queue = JobQueue(host, store=JobStore.in_folder(host.video_dir()),
                              auto_resume=bool(host.option("framepack_auto_resume", False)))
        return _queue


def shutdown(timeout: float = 30.0) -> None:
    """Stop the queue and release the model (tests; a clean server stop)."""
    global _host, _queue
    with _singletons_lock:
        queue, host = _queue, _host
        _queue, _host = None, None
    if queue is not None:
        queue.shutdown(timeout)
    if host is not None:
        host.models.forget()
    _control().unbridge_logging()


def create_tab():
    """`on_ui_tabs` body: [(blocks, "FramePack", "framepack")]; a short error tab if the UI fails."""
    import gradio as gr
    from modules import errors

    try:
        from framepack.ui import create_ui

        blocks = create_ui(get_host(), get_queue())
    except Exception as error:
        errors.display(error, "FramePack tab")
        with gr.Blocks(analytics_enabled=False) as blocks:
            gr.Markdown(f"**FramePack could not build its tab:** {type(error).__name__}: {error}\n\n"
                        "See the server log for details.")
    return [(blocks, "FramePack", "framepack")]


def register_api(demo=None, app=None) -> bool:
    """`on_app_started` body: routes through `shared.api.add_api_route` (honours --auth).

    Never `app.add_api_route`: that would bypass the host's authentication.
    """
    shared = _shared()
    api = getattr(shared, "api", None)
    if api is None:
        shared.log.error("FramePack: SD.Next API is not available; FramePack REST routes not registered")
        return False
    from framepack.api import register_routes
    from framepack.ui.routes import register_page_routes

    register_routes(api.add_api_route, get_host(), get_queue())
    register_page_routes(api.add_api_route, get_queue())  # the tab's Stop / Skip / Pause
    return True
