"""The host used outside SD.Next: CLI, tests and the standalone web app.

It answers the same questions SD.Next answers for the extension: where outputs go, which device
and dtypes to use, where the Hugging Face cache is, whether we are offline, and which model
recipe to load.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from framepack.errors import InputError
from framepack.engine.control import GenerationControl
from framepack.models.recipe import Recipe, default_recipe, local_recipe, parse_recipe_setting
from framepack.host.defaults import SettingsDefaults
from framepack.request.settings import SETTING_DEFAULTS

log = logging.getLogger("framepack")

TINY_MODEL = "tiny"


def _best_device() -> str:
    from framepack.models.offload import pick_device  # cuda > xpu > mps > cpu

    return str(pick_device())


def recipe_source(model: str | None):
    """A `variant -> Recipe` function for `--model`: None (the real hub models), `tiny` or a folder."""
    if model is None or model == "":
        return default_recipe
    if model == TINY_MODEL:
        from framepack.models.tiny import ensure_tiny_model

        root = ensure_tiny_model()
        return lambda variant: local_recipe(root, variant)
    root = Path(model).expanduser()
    return lambda variant: local_recipe(root, variant)


def quiet_libraries() -> None:
    """Library progress bars and warnings would garble our own progress line on the terminal."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def _default_settings() -> dict[str, Any]:
    """The FramePack settings (same keys and defaults as the SD.Next section) + keep_incomplete."""
    return {**SETTING_DEFAULTS, "keep_incomplete": True, "framepack_vae_tiling": "auto"}


DEFAULT_SETTINGS = _default_settings()


class StandaloneHost(SettingsDefaults):
    """Plain-Python implementation of the host services (framepack.request.host.Host)."""

    name = "standalone"

    def __init__(self, output_dir: str | os.PathLike = "outputs", model: str | None = None,
                 cache_dir: str | None = None, offline: bool | None = None, device: str | None = None,
                 settings: dict[str, Any] | None = None, videos: str | os.PathLike | None = None):
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.videos = None if videos is None else Path(videos).expanduser().resolve()  # default: <output>/video
        self.model = model
        self.cache_dir = cache_dir or os.environ.get("HF_HOME") or None
        self.offline = bool(os.environ.get("HF_HUB_OFFLINE")) if offline is None else offline
        self.device = device or _best_device()
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.outputs: list[Path] = []
        self._manager = None
        self._gpu_lock = threading.Lock()

    def option(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    def task_queued(self, task_id: str) -> None:
        """No progress-bar tasks outside SD.Next."""

    def task_finished(self, task_id: str) -> None:
        """No progress-bar tasks outside SD.Next."""

    def keep_incomplete(self) -> bool:
        return bool(self.settings["keep_incomplete"])

    def prepare_request(self, request):
        """Standalone LoRAs come from `request.loras` (`--lora FILE[:weight]`): nothing to do."""
        return request

    def gpu_lock(self) -> AbstractContextManager:
        return self._gpu_lock

    def begin_job(self, title: str, control: GenerationControl | None = None) -> str:
        log.info("job started: %s", title)
        return uuid.uuid4().hex

    def end_job(self, token: Any) -> None:
        log.info("job finished: %s", token)

    def report(self, event: object) -> None:
        """Faces follow a job through its record; there is no host progress bar to update."""

    def record_output(self, path: Path) -> None:
        self.outputs.append(Path(path))

    def loaded_variant(self) -> str | None:
        return None if self._manager is None else self._manager.loaded_variant

    def video_dir(self) -> Path:
        folder = self.videos or self.output_dir / "video"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def recipe(self, variant: str) -> Recipe:
        """`--model` (hub, tiny or a folder), with the recipe setting's overrides on top."""
        base = recipe_source(self.model)(variant)
        return parse_recipe_setting(self.option("framepack_model_recipe"), variant, base=base)

    def runtime(self):
        """Quantization, offload and attention from the settings ('host' offload means auto here)."""
        from framepack.engine.pipeline import RuntimeOptions

        offload = str(self.option("framepack_offload") or "auto")
        return RuntimeOptions(quantization=str(self.option("framepack_quantization") or "none"),
                              offload="auto" if offload == "host" else offload,
                              attention=str(self.option("framepack_attention") or "default"),
                              vae_tiling=str(self.option("framepack_vae_tiling") or "auto"))

    def resource_machine(self, variant: str):
        """This computer: the device's free memory (plus what our models already hold) and the
        available RAM are the budget; a run predicted not to fit an accelerator is refused. The
        configs are the recipe's where they are on disk (a local folder, the hub cache)."""
        from framepack.jobs.resources import Machine
        from framepack.models.component_sizes import recipe_configs

        runtime = self.runtime()
        return Machine.local(self.device, offload=runtime.offload, quantization=runtime.quantization,
                             vae_tiling=runtime.vae_tiling, configs=recipe_configs(self.recipe(variant), self.cache_dir))

    def pipeline(self, variant: str):
        """Load on first use (and after a variant or setting change); later calls reuse it."""
        if self._manager is None:
            from framepack.engine.pipeline import PipelineManager

            quiet_libraries()
            self._manager = PipelineManager(self.recipe, device=self.device, cache_dir=self.cache_dir,
                                            offline=self.offline)
        return self._manager.get(variant, self.runtime())

    def unload(self) -> None:
        if self._manager is not None:
            self._manager.unload()

    def host_upscaler(self, name: str, factor: float):
        raise InputError(f"{name!r} is one of SD.Next's upscalers; without SD.Next use 'lanczos' or a model file",
                         ("output", "upscaler"))

    def host_interpolator(self, name: str):
        raise InputError(f"{name!r} is SD.Next's RIFE; without SD.Next give a RIFE model file",
                         ("output", "interpolation_model"))

    def new_control(self, task_id: str | None = None) -> GenerationControl:
        return GenerationControl()
