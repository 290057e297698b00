"""SD.Next as the host: the ONLY code that touches SD.Next's `modules.*`.

Every `modules.*` import happens inside a function, so importing this file costs nothing but the
standard library (SD.Next imports the entry script at startup). The contract relied on is
docs/HOST.md; the names used are exactly those.

What lives here:
- `SETTINGS`: the "FramePack" settings section (keys `framepack_*`) and `register_settings()`;
- `SdnextHost`: the `framepack.request.host.Host` services on top of `shared.opts`, `shared.state`,
  `call_queue`, `progress`, `devices`, `errors`, `timer`, `paths`, and the model lifecycle
  (load on first use as `shared.sd_model`, SDNQ quantization args, the host's offload around
  each stage, unload on request or when the user switches back to an image model) and
  `prepare_request` (`<lora:name:w>` prompt tags -> the LoRA files of SD.Next's LoRA list,
  through `extra_networks.parse_prompt` and `lora.lora_load.gather_networks`);
- the process-wide singletons the entry script uses (`get_host()`, `get_queue()`) and the
  callback bodies (`create_tab()`, `register_api()`), so that a reload of the entry script
  (SD.Next re-executes it) never starts a second queue.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

log = logging.getLogger("framepack")

SECTION = ("framepack", "FramePack")
VARIANT_CHOICES = ("original", "f1")
QUANTIZATION_CHOICES = ("none", "quanto-int8", "quanto-fp8", "quanto-int4", "nncf-int8", "nncf-int4")
# "host" follows SD.Next's own "Model offload mode" (none/balanced/group/model/sequential) through
# the host's functions; the others are applied to our pipeline only, with diffusers' methods.
OFFLOAD_CHOICES = ("host", "none", "model", "sequential", "group")
HOST_OFFLOAD_MODES = ("none", "balanced", "group", "model", "sequential")
ATTENTION_CHOICES = ("default", "native", "flash", "sage", "xformers")
CONTAINER_CHOICES = ("mp4", "mkv", "mov", "webm", "avi")
IMAGE_FORMAT_CHOICES = ("png", "jpg", "webp")
STAGE_TEXT = {
    "text": "FramePack: encoding prompt",
    "vision": "FramePack: encoding image (SigLIP)",
    "vae_encode": "FramePack: encoding image (VAE)",
    "sample": "FramePack: sampling",
    "vae_decode": "FramePack: decoding frames",
}
# The component each stage runs: balanced offload is applied when the next stage runs another one
# (2 times per section, sample and decode), not before and after every stage (4 times).
STAGE_COMPONENTS = {"text": "text_encoders", "vision": "image_encoder", "vae_encode": "vae", "sample": "transformer",
                    "vae_decode": "vae"}


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One entry of the FramePack settings section (`shared.opts.<key>` inside SD.Next)."""

    key: str
    default: Any
    label: str
    component: str  # textbox | textarea | radio | dropdown | slider | checkbox
    args: Mapping[str, Any] | Callable[[], Mapping[str, Any]] = field(default_factory=dict)


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


def _stored_option(key: str) -> Any:
    """A setting's stored value inside SD.Next (None outside it or before the options exist)."""
    import sys

    shared = sys.modules.get("modules.shared")
    try:
        return shared.opts.data.get(key) if shared is not None else None
    except AttributeError:
        return None


SETTINGS: tuple[Setting, ...] = (
    Setting("framepack_model_recipe", "",
            "Model recipe overrides: JSON or one 'role: source' per line (roles: text_encoder, tokenizer, "
            "text_encoder_2, tokenizer_2, vae, image_encoder, feature_extractor, transformer, transformer_original, "
            "transformer_f1; 'folder: PATH' = a local folder with every component). Empty = the public models",
            "textarea", {"lines": 4}),
    Setting("framepack_variant", "original", "Default model variant (original = anti-drifting, end image; "
            "f1 = forward)", "radio", {"choices": list(VARIANT_CHOICES)}),
    Setting("framepack_quantization", "none", "FramePack quantization of the transformer and Llama text encoder "
            "(for SDNQ use SD.Next's own Quantization settings instead)", "dropdown",
            {"choices": list(QUANTIZATION_CHOICES)}),
    Setting("framepack_offload", "host", "Offload mode ('host' = SD.Next's Model offload mode, balanced included)",
            "radio", {"choices": list(OFFLOAD_CHOICES)}),
    Setting("framepack_attention", "default", "Attention backend for the transformer", "dropdown",
            {"choices": list(ATTENTION_CHOICES)}),
    Setting("framepack_teacache_threshold", 0.15, "TeaCache threshold (higher = faster, lower quality)", "slider",
            {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
    Setting("framepack_codec", "libx264", "Video codec", "dropdown", _codec_choices),
    Setting("framepack_container", "mp4", "Video container", "radio", {"choices": list(CONTAINER_CHOICES)}),
    Setting("framepack_crf", 16, "Video quality (CRF, lower = better)", "slider",
            {"minimum": 0, "maximum": 51, "step": 1}),
    Setting("framepack_save_frames", False, "Save raw frames (.safetensors)", "checkbox"),
    Setting("framepack_save_images", False, "Save frames as images", "checkbox"),
    Setting("framepack_image_format", "png", "Frame image format", "radio", {"choices": list(IMAGE_FORMAT_CHOICES)}),
    Setting("framepack_lora_dir", "", "LoRA folder for the tab's LoRA list and the API's LoRA names "
            "(.safetensors files)", "textbox"),
    Setting("framepack_model_dir", "", "Folder of upscaler (ESRGAN family) and RIFE interpolation model files "
            "(.safetensors) chosen by name in the tab and API", "textbox"),
)
SETTING_DEFAULTS: dict[str, Any] = {setting.key: setting.default for setting in SETTINGS}


def register_settings() -> None:
    """`on_ui_settings` body: add the FramePack section through `shared.opts.add_option`."""
    import gradio as gr
    from modules import shared

    components = {"textbox": gr.Textbox, "textarea": gr.Textbox, "radio": gr.Radio, "dropdown": gr.Dropdown,
                  "slider": gr.Slider, "checkbox": gr.Checkbox}
    for setting in SETTINGS:
        args = setting.args if callable(setting.args) else dict(setting.args)
        shared.opts.add_option(setting.key, shared.OptionInfo(setting.default, setting.label,
                                                              components[setting.component], args, section=SECTION))


# ----------------------------------------------------------------------------- recipe setting


def parse_recipe_setting(text: str | None, variant: str, base=None):
    """The `framepack_model_recipe` setting -> `Recipe` for `variant` (see the setting's label).

    Overrides apply on top of `base` (default: the public models) unless a `folder` is given.
    """
    from framepack.errors import ModelError
    from framepack.models.recipe import OPTIONAL_ROLES, ROLES, default_recipe, local_recipe

    text = (text or "").strip()
    base = base or default_recipe(variant)
    if not text:
        return base
    entries: dict[str, str] = {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ModelError(f"FramePack model recipe setting is not valid JSON ({error})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ModelError("FramePack model recipe setting: expected a JSON object of role -> source text")
        entries = {str(k).strip(): v.strip() for k, v in data.items()}
    else:
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            separator = min((i for i in (line.find(":"), line.find("=")) if i > 0), default=-1)
            if separator < 0:
                raise ModelError(f"FramePack model recipe setting, line {number}: expected 'role: source', "
                                 f"got {line!r}")
            entries[line[:separator].strip()] = line[separator + 1:].strip()
    known = {"folder", *ROLES, *OPTIONAL_ROLES, *(f"transformer_{v}" for v in VARIANT_CHOICES)}
    unknown = sorted(set(entries) - known)
    if unknown:
        raise ModelError(f"FramePack model recipe setting: unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    folder = entries.pop("folder", "")
    recipe = local_recipe(folder, variant) if folder else base
    specific = entries.pop(f"transformer_{variant}", "")
    for name in VARIANT_CHOICES:
        entries.pop(f"transformer_{name}", None)
    if specific:
        entries["transformer"] = specific
    return recipe.with_overrides(entries)


# ----------------------------------------------------------------------------- pipeline and control


_PIPELINE_CLASS = None
_CONTROL_CLASS = None


def _pipeline_class():
    """`FramePackPipeline` whose execution device is the host's device (built on first use).

    Under SD.Next's offload hooks the modules sit on the CPU between calls, so diffusers would
    report the CPU; our loop creates its tensors on the execution device, which must be the GPU.
    """
    global _PIPELINE_CLASS
    if _PIPELINE_CLASS is None:
        import torch

        from framepack.engine.pipeline import FramePackPipeline

        class SdnextFramePackPipeline(FramePackPipeline):
            _framepack_device = None

            @property
            def _execution_device(self):
                if self._framepack_device is not None:
                    return torch.device(self._framepack_device)
                return super()._execution_device

        _PIPELINE_CLASS = SdnextFramePackPipeline
    return _PIPELINE_CLASS


def _control_class():
    """`GenerationControl` reading SD.Next's Stop / Skip / Pause; its `stage_hooks` offload around stages."""
    global _CONTROL_CLASS
    if _CONTROL_CLASS is None:
        from framepack.engine.control import GenerationControl

        class SdnextControl(GenerationControl):
            def __init__(self, host: "SdnextHost", task_id: str | None = None) -> None:
                super().__init__()
                self.host = host
                self.task_id = task_id
                self.task_started = False

            def _state(self):
                from modules import shared

                return shared.state

            def should_stop(self) -> bool:
                return super().should_stop() or bool(self._state().interrupted)

            def take_skip(self) -> bool:
                state = self._state()
                if state.skipped:
                    state.skipped = False  # one skip per click: the current section ends
                    return True
                return super().take_skip()

            @property
            def paused(self) -> bool:
                return super().paused or bool(self._state().paused)

            def wait_while_paused(self, poll: float = 0.1) -> None:
                super().wait_while_paused(poll)
                state = self._state()
                while state.paused and not self.should_stop():
                    time.sleep(poll)

            @property
            def stage_hooks(self) -> "SdnextControl":
                """The loop's `StageHooks` (this `stage`); becomes its own object when this file is split."""
                return self

            @contextmanager
            def stage(self, name: str) -> Iterator[None]:
                self.host._start_task(self)
                self.host._stage_enter(name)
                started = time.perf_counter()
                try:
                    yield
                finally:
                    self.host._stage_exit(name, time.perf_counter() - started)

        _CONTROL_CLASS = SdnextControl
    return _CONTROL_CLASS


class _ForwardToHostLog(logging.Handler):
    """Our `framepack` logger's records go to SD.Next's log (`shared.log`)."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        shared = sys.modules.get("modules.shared")  # loaded whenever SD.Next runs; never imported here
        if shared is None:
            return
        try:
            shared.log.handle(record)
        except Exception:  # pragma: no cover - logging must never break a job
            pass


# ----------------------------------------------------------------------------- the host


from framepack.host.sdnext_media import SdnextMedia  # noqa: E402  (no SD.Next import at module level)

class SettingsDefaults:
    """Request and output defaults read from the FramePack settings; the keys are the same in every host."""

    def resource_machine(self, variant: str):
        """The GPU SD.Next runs on, for the resource plan. SD.Next's offload decides what is
        resident (balanced is planned as model offload, its nearest mode), so a run predicted not
        to fit is shown, not refused."""
        import dataclasses

        from modules import devices

        from framepack.jobs.resources import Machine
        from framepack.models.resources import recipe_configs

        offload = self._offload_mode()
        planned = offload if offload in ("none", "model", "group", "sequential") else "model"  # balanced, or new
        machine = Machine.local(devices.device, offload=planned,
                                quantization=str(self.option("framepack_quantization") or "none"),
                                configs=recipe_configs(self.recipe(variant)))
        return dataclasses.replace(machine, enforce=False)

    def output_defaults(self) -> dict[str, Any]:
        """Defaults for `OutputOptions`."""
        return {
            "codec": self.option("framepack_codec"),
            "container": self.option("framepack_container"),
            "crf": int(self.option("framepack_crf")),
            "save_frames": bool(self.option("framepack_save_frames")),
            "save_images": bool(self.option("framepack_save_images")),
            "image_format": self.option("framepack_image_format"),
            "keep_incomplete": self.keep_incomplete(),
        }

    def lora_folder(self):
        """The LoRA files clients choose by name (`framepack_lora_dir`)."""
        from framepack.models.library import ModelFolder

        return ModelFolder(self.option("framepack_lora_dir"), "LoRA", "framepack_lora_dir")

    def model_folder(self):
        """The upscaler and interpolation model files clients choose by name (`framepack_model_dir`)."""
        from framepack.models.library import ModelFolder

        return ModelFolder(self.option("framepack_model_dir"), "model", "framepack_model_dir")

    def request_defaults(self) -> dict[str, Any]:
        """Defaults for `GenerationRequest` fields that are settings."""
        return {"variant": self.option("framepack_variant"),
                "teacache_threshold": float(self.option("framepack_teacache_threshold"))}


class SdnextHost(SdnextMedia, SettingsDefaults):  # SdnextMedia: RIFE, upscalers, enhancer, send to Process
    """`framepack.request.host.Host` inside SD.Next.

    `recipe_for` (optional) replaces the `framepack_model_recipe` setting: a function
    `variant -> Recipe` for programmatic use and tests.
    """

    name = "sdnext"

    def __init__(self, recipe_for: Callable[[str], Any] | None = None) -> None:
        self._recipe_for = recipe_for
        self._lock = threading.RLock()
        self._pipe = None
        self._key: tuple | None = None
        self._variant: str | None = None
        self._registered = False  # the host accepted our pipeline as shared.sd_model
        self._offload: str | None = None
        self._resident: str | None = None
        self._unload_pending = False
        self._job_running = False
        self.queue = None  # the JobQueue (set by get_queue) to find a starting job's progress task
        self._bridge_logging()

    # ---- SD.Next access -------------------------------------------------------------
    @staticmethod
    def _shared():
        from modules import shared

        return shared

    @staticmethod
    def _bridge_logging() -> None:
        """Our records also go to SD.Next's log (its root logger discards everything)."""
        if not any(isinstance(h, _ForwardToHostLog) for h in log.handlers):
            handler = _ForwardToHostLog()
            handler.replaced_level = log.level
            log.addHandler(handler)
            if log.level == logging.NOTSET:  # SD.Next's root logger is at ERROR: INFO would be dropped
                log.setLevel(logging.INFO)

    # ---- settings and folders -------------------------------------------------------
    def option(self, key: str, default: Any = None) -> Any:
        """`shared.opts.get(key)` (registered defaults included); unknown keys -> `default`."""
        try:
            return self._shared().opts.get(key)
        except (AttributeError, KeyError):
            return SETTING_DEFAULTS.get(key) if default is None else default

    def video_dir(self) -> Path:
        from modules import paths

        opts = self._shared().opts
        folder = Path(paths.resolve_output_path(opts.outdir_samples, opts.outdir_video) or "outputs/video")
        folder = folder.expanduser().absolute()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def keep_incomplete(self) -> bool:
        return bool(self._shared().opts.keep_incomplete)

    def hf_cache_dir(self) -> str | None:
        return self._shared().opts.hfcache_dir or None

    def offline_mode(self) -> bool:
        return bool(self._shared().opts.offline_mode)

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
        return self._shared().log

    def display_error(self, error: BaseException, title: str) -> None:
        from modules import errors

        errors.display(error, title)

    def add_timer(self, name: str, seconds: float) -> None:
        from modules import timer

        timer.process.add(name, seconds)

    # ---- one generation -------------------------------------------------------------
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
        return _control_class()(self, task_id)

    def begin_job(self, title: str, control=None) -> Any:
        state = self._shared().state
        control = control if getattr(control, "host", None) is self else None
        task_id = control.task_id if control is not None and control.task_id else 0
        token = state.begin(title, task_id=task_id)
        state.job_count = 1
        state.textinfo = "FramePack: starting"
        self._job_running = True
        self._resident = None  # what the last stage ran; balanced offload applies when it changes
        if control is not None:
            self._start_task(control)
        return token

    def end_job(self, token: Any) -> None:
        self._job_running = False
        try:
            self._offload_after_job()
            if self._unload_pending:
                self._unload_pending = False
                with self._lock:
                    self._unload_locked()
        finally:
            state = self._shared().state
            state.end(token)
            # SD.Next's end() leaves the step counters: /sdapi/v1/progress would keep reporting this job's
            # fraction and an ETA while idle. Its idle test is job_count == 0 and sampling_step == 0.
            state.sampling_steps = 0
            state.sampling_step = 0
            state.interrupted, state.skipped = False, False  # consumed by this job
            state.textinfo = None

    def report(self, event: object) -> None:
        from framepack.request.events import Done, Preview, Progress, SectionDone

        state = self._shared().state
        if isinstance(event, Progress):
            state.sampling_steps = event.section_count * event.steps
            state.sampling_step = event.position * event.steps + event.step
            state.job_count = 1
            state.textinfo = f"FramePack: {event.describe()}"
        elif isinstance(event, Preview):
            if not getattr(state, "disable_preview", False):
                from PIL import Image

                state.current_image = Image.fromarray(event.image)
                state.id_live_preview += 1
        elif isinstance(event, SectionDone):
            note = " (skipped)" if event.skipped else ""
            state.textinfo = f"FramePack: section {event.position + 1}/{event.section_count} done{note}"
        elif isinstance(event, Done):
            state.textinfo = f"FramePack: {event.status}, {event.frames} frames in {event.seconds:.1f} s"

    def record_output(self, path: Path) -> None:
        self._shared().state.outputs(str(path))

    # ---- LoRA from the prompt (<lora:name:weight>) ------------------------------------
    def prepare_request(self, request):
        """The request the engine runs: SD.Next's extra-network tags taken out of the text.

        `<lora:name[:weight]>` tags, as users write them in SD.Next (the Networks tab inserts
        them), are removed from the prompt, the negative prompt and the section prompts, and the
        names are looked up in SD.Next's LoRA list (`modules.lora.lora_load.gather_networks`:
        the LoRA folder, sub-folders, aliases). The files found are added to `request.loras`,
        which the job applies with diffusers' LoRA loader right before sampling: adapters already
        loaded are only re-weighted, adapters no longer asked for are removed, so a run without
        tags is back to the plain model, and the model is never reloaded for a LoRA change.

        A LoRA applies to the whole video (also when its tag sits in one section's prompt).
        Weight: `<lora:name>` = SD.Next's "Default strength", `<lora:name:0.8>`, or `unet=0.8`;
        weight 0 skips the LoRA (as SD.Next does). Other tags (`<style:...>`, ...) are removed
        from the text with a warning. A request without tags is returned unchanged.
        SD.Next's own LoRA activation (`extra_networks.activate`) is deliberately not used; see
        `_lora_tags_from_prompts`.
        """
        texts = {"prompt": request.prompt, "negative_prompt": request.negative_prompt,
                 "section_prompts": request.section_prompts}
        stripped, loras, ignored = _lora_tags_from_prompts(texts)
        if not loras and not ignored:
            return request
        from framepack.request.model import LoraSpec

        for tag in ignored:
            log.warning("FramePack: %s is not supported by FramePack; removed from the prompt", tag)
        files = self._resolve_loras(loras) if loras else []
        if files:
            log.info("FramePack LoRA from the prompt: %s",
                     ", ".join(f"{name}:{weight:g} ({Path(path).name})" for name, weight, path in files))
        added = (LoraSpec(path=path, weight=weight) for _, weight, path in files)
        return request.replace(**stripped, loras=(*request.loras, *added))

    def _resolve_loras(self, loras: dict[str, float]) -> list[tuple[str, float, str]]:
        """(name, weight, file) for every wanted LoRA, through SD.Next's LoRA list."""
        from framepack.errors import InputError

        try:
            from modules.lora import lora_load
        except ImportError as error:
            raise InputError(f"SD.Next's LoRA support is not available ({error}); remove the <lora:...> tags") from None
        names = [name for name, weight in loras.items() if weight != 0]  # SD.Next skips weight-0 LoRAs
        if not names:
            return []
        try:
            found = lora_load.gather_networks(names)
        except Exception as error:  # noqa: BLE001 - the host's lookup failing is a job error, not a crash
            raise InputError(f"SD.Next could not look up LoRA {', '.join(names)}: "
                             f"{type(error).__name__}: {error}") from error
        missing = [name for name, entry in zip(names, found) if getattr(entry, "filename", None) is None]
        if missing:
            folder = getattr(getattr(self._shared(), "cmd_opts", None), "lora_dir", None)
            raise InputError(f"LoRA not found: {', '.join(missing)} (SD.Next LoRA folder: {folder}); "
                             "use a name from the Networks tab (sub-folder/name also works)")
        files: dict[str, tuple[str, float, str]] = {}  # two names (name, alias) may be one file
        for name, entry in zip(names, found):
            key = os.path.normcase(os.path.abspath(entry.filename))
            if key in files and files[key][1] != loras[name]:
                raise InputError(f"LoRA {Path(entry.filename).name} is given twice with different weights "
                                 f"({files[key][0]}:{files[key][1]:g} and {name}:{loras[name]:g}); give it once")
            files.setdefault(key, (name, loras[name], entry.filename))
        return list(files.values())

    # ---- progress tasks -------------------------------------------------------------
    def _start_task(self, control) -> None:
        if control.task_id and not control.task_started:
            from modules import progress

            control.task_started = True
            progress.start_task(control.task_id)

    # ---- stages: offload, SigLIP, timers --------------------------------------------
    def _offload_mode(self) -> str:
        """The effective offload mode: ours, or the host's when ours is 'host'."""
        mode = str(self.option("framepack_offload") or "host")
        if mode == "host":
            mode = str(self._shared().opts.diffusers_offload_mode)
        return mode

    def _stage_enter(self, name: str) -> None:
        self._shared().state.textinfo = STAGE_TEXT.get(name, f"FramePack: {name}")
        pipe = self._pipe
        if pipe is None:
            return
        from modules import devices, sd_models

        component = STAGE_COMPONENTS.get(name, name)
        if self._offload == "balanced" and component != self._resident:
            sd_models.apply_balanced_offload(pipe)  # once per change of the component that runs
        self._resident = component
        if name == "vision" and getattr(pipe, "image_encoder", None) is not None:
            # SigLIP does not run under the offload hook: move it explicitly
            sd_models.move_model(pipe.image_encoder, devices.device, force=True)

    def _stage_exit(self, name: str, seconds: float) -> None:
        self.add_timer(name, seconds)

    def _offload_after_job(self) -> None:
        """Leave the GPU as SD.Next's own jobs do: balanced offload once after the last stage."""
        resident, self._resident = self._resident, None
        if resident is not None and self._pipe is not None and self._offload == "balanced":
            from modules import sd_models

            sd_models.apply_balanced_offload(self._pipe)

    # ---- model lifecycle ------------------------------------------------------------
    def recipe(self, variant: str):
        if self._recipe_for is not None:
            return self._recipe_for(variant)
        return parse_recipe_setting(self.option("framepack_model_recipe"), variant)

    def _still_registered(self) -> bool:
        """Is our pipeline still `shared.sd_model`? Never reads sd_model when nothing is loaded."""
        shared = self._shared()
        return bool(shared.sd_loaded) and shared.sd_model is self._pipe

    def _drop_if_replaced_locked(self) -> None:
        if self._pipe is not None and self._registered and not self._still_registered():
            if bool(self._shared().sd_loaded):
                log.info("FramePack: SD.Next switched to another model; FramePack model released")
            else:
                log.info("FramePack: SD.Next unloaded the FramePack model (its Unload model button or a model "
                         "change); it loads again on the next Generate")
            self._pipe, self._key, self._variant, self._registered, self._offload = None, None, None, False, None
            self.gc()

    def loaded_variant(self) -> str | None:
        with self._lock:
            self._drop_if_replaced_locked()
            return self._variant if self._pipe is not None else None

    def pipeline(self, variant: str):
        """The loaded pipeline for `variant`, loading it (as the host's model) on first use.

        Reloads when the recipe, our quantization, the offload mode or SD.Next's own
        quantization settings (SDNQ: Settings -> Model Quantization) changed since the last
        load: a fresh load is the only way to apply SDNQ, and to drop it once it is off. A
        combination that cannot load is refused before the loaded model is released.
        """
        with self._lock:
            self._drop_if_replaced_locked()
            recipe = self.recipe(variant)
            quantization = str(self.option("framepack_quantization") or "none")
            offload = self._offload_mode()
            key = (recipe, quantization, offload, self._host_quantization_settings())
            if self._pipe is None or key != self._key:
                if self._pipe is not None:
                    log.info("FramePack: %s changed; reloading the model", _describe_key_change(self._key, key))
                load_args = self._check_load(recipe, quantization, offload)
                self._unload_locked()
                self._pipe = self._load(recipe, quantization, offload, load_args)
                self._key, self._variant = key, variant
            self._apply_attention(self._pipe)
            return self._pipe

    def _host_quantization_settings(self) -> tuple[tuple[str, str], ...]:
        """SD.Next's "Model Quantization" settings section (SDNQ and co.), as a comparable key."""
        opts = self._shared().opts
        labels = getattr(opts, "data_labels", None) or {}
        keys = sorted(key for key, info in labels.items()
                      if (getattr(info, "section", None) or ("",))[0] == "quantization" and not key.endswith("_sep"))
        return tuple((key, repr(self.option(key))) for key in keys)

    def unload(self) -> None:
        """Release the model now, or right after the running job (never under a running job)."""
        with self._lock:
            if self._job_running:
                self._unload_pending = True
                log.info("FramePack: model will be unloaded when the current job ends")
                return
            self._unload_locked()

    def _unload_locked(self) -> None:
        if self._pipe is None:
            return
        from modules import sd_models

        if self._registered and self._still_registered():
            sd_models.unload_model_weights()  # the host drops shared.sd_model and its offload hooks
        self._pipe, self._key, self._variant, self._registered, self._offload = None, None, None, False, None
        self.gc()
        log.info("FramePack: model unloaded")

    def _check_load(self, recipe, quantization: str, offload: str) -> dict[str, Any]:
        """Everything that can refuse a load without touching memory; returns the host's load args.

        Runs before the loaded model (ours or the host's) is released, so a refused combination
        leaves the working model in place.
        """
        from modules import model_quant

        from framepack.errors import ModelError
        from framepack.models.loader import check_component_folder
        from framepack.models.recipe import ROLES

        if quantization not in QUANTIZATION_CHOICES:
            raise ModelError(f"unknown FramePack quantization {quantization!r}; choose one of: "
                             f"{', '.join(QUANTIZATION_CHOICES)}")
        if offload not in HOST_OFFLOAD_MODES:
            raise ModelError(f"unknown offload mode {offload!r}; choose one of: {', '.join(HOST_OFFLOAD_MODES)}")
        args = {
            "transformer": model_quant.get_dit_args({}, module="Model", device_map=True),
            "text_encoder": model_quant.get_dit_args({}, module="TE", device_map=True),
        }
        if quantization != "none":
            clash = [role for role, (_, quant) in args.items() if quant.get("quantization_config") is not None]
            if clash:
                raise ModelError(
                    f"FramePack quantization '{quantization}' and SD.Next's quantization (SDNQ) both apply to the "
                    f"{' and '.join(clash)}; turn one of them off (Settings -> FramePack -> quantization = none, "
                    "or Settings -> Quantization)")
        for role in ROLES:  # fail fast on a broken local folder, before anything is unloaded
            source = recipe[role]
            if source.is_local():
                check_component_folder(role, source.path())
        return args

    def _load(self, recipe, quantization: str, offload: str, args: Mapping[str, Any]):
        from modules import devices, model_quant, sd_checkpoint, sd_models

        from framepack.models.loader import default_dtypes, load_component
        from framepack.models.recipe import ROLES

        shared = self._shared()
        started = time.perf_counter()
        sdnq = [role for role, (_, quant) in args.items() if quant.get("quantization_config") is not None]
        log.info("FramePack load: variant=%s transformer=%s quantization=%s offload=%s sdnq=%s", recipe.variant,
                 recipe["transformer"].describe(), quantization, offload, ",".join(sdnq) or "off")
        sd_models.unload_model_weights()  # the host's image model leaves memory first
        import torch

        dtypes = default_dtypes(devices.device)
        if devices.dtype == torch.float32:
            dtypes = {role: torch.float32 for role in dtypes}
        cache_dir, offline = self.hf_cache_dir(), self.offline_mode()
        components: dict[str, Any] = {}
        try:
            for role in ROLES:
                if role in args:
                    load_args, quant_args = args[role]
                    components[role] = _load_with_host_args(recipe, role, load_args, quant_args, cache_dir=cache_dir,
                                                            offline=offline, device=devices.cpu)
                else:
                    components[role] = load_component(recipe, role, cache_dir=cache_dir, offline=offline,
                                                      device=devices.cpu, dtype=dtypes.get(role))
            pipe = _pipeline_class().from_components(components)
            from framepack.models.taehv import attach_tiny_vae  # the recipe's Tiny VAE (previews), if any

            attach_tiny_vae(pipe, recipe, devices.device, dtypes["vae"], cache_dir=cache_dir, offline=offline)
        except BaseException:
            components.clear()
            self.gc()
            raise
        components.clear()
        pipe._framepack_device = devices.device
        self._registered = False
        try:
            if quantization != "none":
                _apply_own_quantization(pipe, quantization)
            repo = recipe["transformer"].describe()
            pipe.sd_checkpoint_info = sd_checkpoint.CheckpointInfo(repo)
            pipe.sd_model_checkpoint = repo
            shared.sd_model = pipe
            self._registered = bool(shared.sd_loaded) and shared.sd_model is pipe
            if not self._registered:
                log.warning("FramePack: SD.Next did not accept the model as its current model (still starting?); "
                            "its offload applies to FramePack only")
            if quantization == "none":
                quantized = model_quant.do_post_load_quant(pipe, allow=False)
                if quantized is not None and quantized is not pipe:
                    pipe = quantized
                    if self._registered:
                        shared.sd_model = pipe
            else:
                log.info("FramePack: SD.Next post-load quantization skipped (FramePack quantization %s is on)",
                         quantization)
            self._offload = offload
            self._apply_offload(pipe, offload)
        except BaseException:  # never leave a half-set-up pipeline as the host's model
            if self._registered and bool(shared.sd_loaded) and shared.sd_model is pipe:
                sd_models.unload_model_weights()
            self._registered, self._offload = False, None
            del pipe
            self.gc()
            raise
        self._pipe = pipe
        self.add_timer("load", time.perf_counter() - started)
        log.info("FramePack load: done in %.2f s; %s", time.perf_counter() - started, _quantized_summary(pipe))
        return pipe

    def _apply_offload(self, pipe, mode: str) -> None:
        from modules import devices, sd_models

        from framepack.errors import ModelError
        from framepack.models.offload import SEQUENTIAL_EXCLUDE

        host_mode = str(self._shared().opts.diffusers_offload_mode)
        if mode != host_mode:
            _apply_own_offload(pipe, mode, devices.device)
            return
        if mode in ("model", "sequential") and torch_device_type(devices.device) == "cpu":
            # both move weights between the CPU and an accelerator; on a CPU there is nothing to save, and
            # accelerate's leaf hooks fail on diffusers' "cpu:0" execution device for every layer
            log.info("FramePack: SD.Next's %s offload has no accelerator to offload from here (device %s); "
                     "FramePack runs without it", mode, devices.device)
            self._offload = "none"
            sd_models.move_model(pipe, devices.device)
            return
        if mode == "sequential":  # SigLIP breaks under accelerate's leaf hooks: diffusers moves it whole instead
            pipe._exclude_from_cpu_offload = [*getattr(pipe, "_exclude_from_cpu_offload", []), *SEQUENTIAL_EXCLUDE]
        try:
            if mode == "balanced":
                sd_models.apply_balanced_offload(pipe)
            else:
                sd_models.set_diffuser_offload(pipe)
        except Exception as error:  # the host lets group offload errors through: one clear line for the user
            raise ModelError(f"SD.Next's {mode} offload could not be applied to FramePack on {devices.device}: "
                             f"{type(error).__name__}: {error}. Choose another Settings -> Model offload mode, "
                             "or Settings -> FramePack -> offload") from error

    def _apply_attention(self, pipe) -> None:
        backend = str(self.option("framepack_attention") or "default")
        if backend == "default" or getattr(pipe, "_framepack_attention", None) == backend:
            return
        _apply_attention_backend(pipe, backend)
        pipe._framepack_attention = backend


# ----------------------------------------------------------------------------- prompt tags


def _lora_tags_from_prompts(texts: Mapping[str, str]) -> tuple[dict[str, str], dict[str, float], list[str]]:
    """Parse SD.Next extra-network tags with the host's own parser (`extra_networks.parse_prompt`).

    Returns (texts without the tags, {lora name: weight}, [ignored tags]).

    Why not SD.Next's `extra_networks.activate(p, data)`: for our pipeline it would take the
    host's "diffusers" LoRA method (`modules/lora/lora_overrides.get_method`: the model type is
    the class name, not in `allow_native`), i.e. `load_lora_weights` / `set_adapters` on the
    same transformer, whose adapters `run_job` manages (it unloads adapters it was not asked for
    right before sampling); its activation cache (`sd_model.loaded_loras`) would then believe a
    LoRA is still loaded when it is not; and `activate` only logs errors (an unknown name never
    fails the job). So the host supplies the syntax and the LoRA list, diffusers' loader (the
    one SD.Next would pick for this model too) does the loading, through `request.loras`.
    """
    from framepack.errors import InputError
    from modules import extra_networks

    default = _default_multiplier()
    stripped: dict[str, str] = {}
    loras: dict[str, float] = {}
    ignored: list[str] = []
    for field_name, text in texts.items():
        if not text or "<" not in text:
            continue
        updated, found = extra_networks.parse_prompt(text)
        if not found:
            continue
        stripped[field_name] = _tidy(updated)
        for kind, params_list in found.items():
            if kind != "lora":
                ignored += [f"<{kind}:{':'.join(map(str, params.items))}>" for params in params_list]
                continue
            for params in params_list:
                name, weight = _lora_weight(params, default)
                if name in loras and loras[name] != weight:
                    raise InputError(f"LoRA {name} is given twice with different weights "
                                     f"({loras[name]:g} and {weight:g}); give it once")
                loras[name] = weight
    return stripped, loras, ignored


def _default_multiplier() -> float:
    """SD.Next's "Default strength" for a `<lora:name>` without a weight (1.0 when unset)."""
    from modules import shared

    try:
        return float(shared.opts.extra_networks_default_multiplier)
    except (AttributeError, KeyError, TypeError, ValueError):
        return 1.0


def _lora_weight(params, default: float) -> tuple[str, float]:
    """`ExtraNetworkParams` of one `<lora:...>` tag -> (name, transformer weight)."""
    import math

    from framepack.errors import InputError

    positional = [str(item).strip() for item in params.positional]
    name = positional[0] if positional else ""
    if not name:
        raise InputError(f"empty LoRA tag <lora:{':'.join(map(str, params.items))}>; write <lora:name:weight>")
    text = params.named.get("unet", positional[1] if len(positional) > 1 else None)
    if text is None or str(text).strip() == "":
        return name, default
    try:
        weight = float(str(text).strip())
    except ValueError:
        raise InputError(f"<lora:{':'.join(map(str, params.items))}>: the weight must be a number, got {text!r} "
                         "(FramePack has no step-wise LoRA weights)") from None
    if not math.isfinite(weight):
        raise InputError(f"<lora:{':'.join(map(str, params.items))}>: the weight must be a finite number")
    return name, weight


def _tidy(text: str) -> str:
    """Text after removing tags: no doubled spaces, no blank edges (line breaks are kept)."""
    import re

    lines = [re.sub(r"[ \t]{2,}", " ", line).strip() for line in text.splitlines()]
    return "\n".join(lines).strip()


# ----------------------------------------------------------------------------- loading helpers


def _load_with_host_args(recipe, role: str, load_args: Mapping[str, Any], quant_args: Mapping[str, Any], *,
                         cache_dir: str | None, offline: bool, device: Any):
    """Load one role with the host's `get_dit_args` load and quantization arguments."""
    from framepack.models.loader import load_component

    load_args = dict(load_args)
    dtype = load_args.pop("torch_dtype", None) or load_args.pop("dtype", None)
    extra = {**load_args, **dict(quant_args)}
    keep_device = extra.get("quantization_config") is not None or extra.get("device_map") is not None
    return load_component(recipe, role, cache_dir=cache_dir, offline=offline,
                          device=None if keep_device else device, dtype=dtype, extra_kwargs=extra)


def torch_device_type(device) -> str:
    import torch

    return torch.device(device).type


def _describe_key_change(old: tuple | None, new: tuple) -> str:
    """Which part of the load key changed, in the user's words."""
    names = ("the model recipe", "FramePack quantization", "the offload mode", "SD.Next's quantization settings")
    if old is None:
        return "the model"
    changed = [name for name, before, after in zip(names, old, new) if before != after]
    return " and ".join(changed) or "the model"


def _quantized_summary(pipe) -> str:
    """'transformer: 12 SDNQ layers, ...' for the load log line (class names, no imports)."""
    import torch

    parts = []
    for role in ("transformer", "text_encoder"):
        module = getattr(pipe, role, None)
        if not isinstance(module, torch.nn.Module):
            continue
        counts: dict[str, int] = {}
        for child in module.modules():
            kind = ("SDNQ" if hasattr(child, "sdnq_dequantizer")  # set on every layer SDNQ quantized
                    else "quanto" if type(child).__module__.startswith("optimum.quanto") else None)
            if kind:
                counts[kind] = counts.get(kind, 0) + 1
        parts.append(f"{role}: " + (", ".join(f"{n} {k} layers" for k, n in counts.items()) or "not quantized"))
    return "; ".join(parts) or "no quantizable components"


def _apply_own_quantization(pipe, choice: str) -> None:
    """quanto / NNCF (ours; the host ships only SDNQ), before any offload hook is installed."""
    from framepack.models.quantize import quantize_pipeline

    for component, report in quantize_pipeline(pipe, choice).items():
        log.info("FramePack quantization: %s", report.summary())


def _apply_own_offload(pipe, mode: str, device) -> None:
    """Offload our pipeline only, when the FramePack setting differs from the host's mode."""
    from framepack.errors import ModelError
    from framepack.models.offload import apply_offload

    if mode == "balanced":  # only exists as the host's own mode
        raise ModelError("balanced offload is SD.Next's own mode: set Settings -> Model offload mode = balanced "
                         "and Settings -> FramePack -> offload = host")
    apply_offload(pipe, mode, device)


def _apply_attention_backend(pipe, backend: str) -> None:
    from framepack.models.offload import set_attention_backend

    set_attention_backend(pipe, backend)


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

            _queue = JobQueue(host)
            host.queue = _queue
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
        with host._lock:
            host._pipe, host._key, host._variant, host._registered = None, None, None, False
    for handler in [h for h in log.handlers if isinstance(h, _ForwardToHostLog)]:
        log.removeHandler(handler)
        log.setLevel(getattr(handler, "replaced_level", logging.NOTSET))


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
    shared = SdnextHost._shared()
    api = getattr(shared, "api", None)
    if api is None:
        shared.log.error("FramePack: SD.Next API is not available; FramePack REST routes not registered")
        return False
    from framepack.api import register_routes
    from framepack.ui.routes import register_page_routes

    register_routes(api.add_api_route, get_host(), get_queue())
    register_page_routes(api.add_api_route, get_queue())  # the tab's Stop / Skip / Pause
    return True
