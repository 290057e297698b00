"""The FramePack pipeline as SD.Next's current model: load, offload, SDNQ, unload.

`SdnextModels` (one per host) loads the pipeline on first use as `shared.sd_model`, with
SD.Next's quantization arguments (SDNQ: `model_quant.get_dit_args`, `do_post_load_quant`) or our
own quanto / NNCF, applies the host's offload (balanced included) or ours, reloads when a setting
that shapes the load changes, notices when the user switched SD.Next back to an image model, and
unloads on request (never under a running job). `modules.*` is imported inside functions only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

from framepack.errors import ModelError
from framepack.request.settings import QUANTIZATION_CHOICES

log = logging.getLogger("framepack")

HOST_OFFLOAD_MODES = ("none", "balanced", "group", "model", "sequential")
"""SD.Next's "Model offload mode" choices (`shared.opts.diffusers_offload_mode`)."""

_PIPELINE_CLASS = None


def pipeline_class():
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


def _shared():
    from modules import shared

    return shared


# The component each stage runs: balanced offload is applied when the next stage runs another one
# (2 times per section, sample and decode), not before and after every stage (4 times).
STAGE_COMPONENTS = {"text": "text_encoders", "vision": "image_encoder", "vae_encode": "vae", "sample": "transformer",
                    "vae_decode": "vae"}


class SdnextModels:
    """The loaded FramePack pipeline of one `SdnextHost` (settings and timers come from the host)."""

    def __init__(self, host, recipe_for: Callable[[str], Any] | None = None) -> None:
        self.host = host
        self._recipe_for = recipe_for
        self.lock = threading.RLock()
        self.pipe = None
        self._key: tuple | None = None
        self._variant: str | None = None
        self._registered = False  # the host accepted our pipeline as shared.sd_model
        self._offload: str | None = None
        self._resident: str | None = None
        self._unload_pending = False
        self._job_running = False

    # ---- what the host asks ---------------------------------------------------------
    def recipe(self, variant: str):
        from framepack.models.recipe import parse_recipe_setting

        if self._recipe_for is not None:
            return self._recipe_for(variant)
        return parse_recipe_setting(self.host.option("framepack_model_recipe"), variant)

    def loaded_variant(self) -> str | None:
        with self.lock:
            self._drop_if_replaced_locked()
            return self._variant if self.pipe is not None else None

    def pipeline(self, variant: str):
        """The loaded pipeline for `variant`, loading it (as the host's model) on first use.

        Reloads when the recipe, our quantization, the offload mode or SD.Next's own
        quantization settings (SDNQ: Settings -> Model Quantization) changed since the last
        load: a fresh load is the only way to apply SDNQ, and to drop it once it is off. A
        combination that cannot load is refused before the loaded model is released.
        """
        with self.lock:
            self._drop_if_replaced_locked()
            recipe = self.recipe(variant)
            quantization = str(self.host.option("framepack_quantization") or "none")
            offload = self.offload_mode()
            key = (recipe, quantization, offload, self._host_quantization_settings())
            if self.pipe is None or key != self._key:
                if self.pipe is not None:
                    log.info("FramePack: %s changed; reloading the model", _describe_key_change(self._key, key))
                load_args = self._check_load(recipe, quantization, offload)
                self._unload_locked()
                self.pipe = self._load(recipe, quantization, offload, load_args)
                self._key, self._variant = key, variant
            self._apply_attention(self.pipe)
            return self.pipe

    def unload(self) -> None:
        """Release the model now, or right after the running job (never under a running job)."""
        with self.lock:
            if self._job_running:
                self._unload_pending = True
                log.info("FramePack: model will be unloaded when the current job ends")
                return
            self._unload_locked()

    def job_started(self) -> None:
        self._job_running = True
        self._resident = None  # what the last stage ran; balanced offload applies when it changes

    def job_ended(self) -> None:
        """A job ended: balanced offload once, and an unload asked for while it ran happens now."""
        self._job_running = False
        self.offload_after_job()
        if self._unload_pending:
            self._unload_pending = False
            with self.lock:
                self._unload_locked()

    def forget(self) -> None:
        """Drop our references without touching SD.Next (the extension shuts down)."""
        with self.lock:
            self.pipe, self._key, self._variant, self._registered = None, None, None, False

    def offload_mode(self) -> str:
        """The effective offload mode: ours, or the host's when ours is 'host'."""
        mode = str(self.host.option("framepack_offload") or "host")
        if mode == "host":
            mode = str(_shared().opts.diffusers_offload_mode)
        return mode

    # ---- around each stage ------------------------------------------------------------
    def stage_enter(self, name: str) -> None:
        pipe = self.pipe
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

    def stage_exit(self, name: str) -> None:
        """Nothing moves here: the next stage's enter offloads only when it runs another component."""

    def offload_after_job(self) -> None:
        """Leave the GPU as SD.Next's own jobs do: balanced offload once after the last stage."""
        resident, self._resident = self._resident, None
        if resident is not None and self.pipe is not None and self._offload == "balanced":
            from modules import sd_models

            sd_models.apply_balanced_offload(self.pipe)

    # ---- SD.Next's current model --------------------------------------------------------
    def _still_registered(self) -> bool:
        """Is our pipeline still `shared.sd_model`? Never reads sd_model when nothing is loaded."""
        shared = _shared()
        return bool(shared.sd_loaded) and shared.sd_model is self.pipe

    def _drop_if_replaced_locked(self) -> None:
        if self.pipe is not None and self._registered and not self._still_registered():
            if bool(_shared().sd_loaded):
                log.info("FramePack: SD.Next switched to another model; FramePack model released")
            else:
                log.info("FramePack: SD.Next unloaded the FramePack model (its Unload model button or a model "
                         "change); it loads again on the next Generate")
            self.pipe, self._key, self._variant, self._registered, self._offload = None, None, None, False, None
            self.host.gc()

    def _host_quantization_settings(self) -> tuple[tuple[str, str], ...]:
        """SD.Next's "Model Quantization" settings section (SDNQ and co.), as a comparable key."""
        opts = _shared().opts
        labels = getattr(opts, "data_labels", None) or {}
        keys = sorted(key for key, info in labels.items()
                      if (getattr(info, "section", None) or ("",))[0] == "quantization" and not key.endswith("_sep"))
        return tuple((key, repr(self.host.option(key))) for key in keys)

    def _unload_locked(self) -> None:
        if self.pipe is None:
            return
        from modules import sd_models

        if self._registered and self._still_registered():
            sd_models.unload_model_weights()  # the host drops shared.sd_model and its offload hooks
        self.pipe, self._key, self._variant, self._registered, self._offload = None, None, None, False, None
        self.host.gc()
        log.info("FramePack: model unloaded")

    # ---- loading ------------------------------------------------------------------------
    def _check_load(self, recipe, quantization: str, offload: str) -> dict[str, Any]:
        """Everything that can refuse a load without touching memory; returns the host's load args.

        Runs before the loaded model (ours or the host's) is released, so a refused combination
        leaves the working model in place.
        """
        from modules import model_quant

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

        shared = _shared()
        started = time.perf_counter()
        sdnq = [role for role, (_, quant) in args.items() if quant.get("quantization_config") is not None]
        log.info("FramePack load: variant=%s transformer=%s quantization=%s offload=%s sdnq=%s", recipe.variant,
                 recipe["transformer"].describe(), quantization, offload, ",".join(sdnq) or "off")
        sd_models.unload_model_weights()  # the host's image model leaves memory first
        import torch

        dtypes = default_dtypes(devices.device)
        if devices.dtype == torch.float32:
            dtypes = {role: torch.float32 for role in dtypes}
        cache_dir, offline = self.host.hf_cache_dir(), self.host.offline_mode()
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
            pipe = pipeline_class().from_components(components)
            from framepack.models.taehv import attach_tiny_vae  # the recipe's Tiny VAE (previews), if any

            attach_tiny_vae(pipe, recipe, devices.device, dtypes["vae"], cache_dir=cache_dir, offline=offline)
        except BaseException:
            components.clear()
            self.host.gc()
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
            self.apply_offload(pipe, offload)
        except BaseException:  # never leave a half-set-up pipeline as the host's model
            if self._registered and bool(shared.sd_loaded) and shared.sd_model is pipe:
                sd_models.unload_model_weights()
            self._registered, self._offload = False, None
            del pipe
            self.host.gc()
            raise
        self.pipe = pipe
        self.host.add_timer("load", time.perf_counter() - started)
        log.info("FramePack load: done in %.2f s; %s", time.perf_counter() - started, _quantized_summary(pipe))
        return pipe

    def apply_offload(self, pipe, mode: str) -> None:
        from modules import devices, sd_models

        from framepack.models.offload import SEQUENTIAL_EXCLUDE

        host_mode = str(_shared().opts.diffusers_offload_mode)
        if mode != host_mode:
            _apply_own_offload(pipe, mode, devices.device)
            return
        if mode in ("model", "sequential") and _device_type(devices.device) == "cpu":
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
        backend = str(self.host.option("framepack_attention") or "default")
        if backend == "default" or getattr(pipe, "_framepack_attention", None) == backend:
            return
        from framepack.models.offload import set_attention_backend

        set_attention_backend(pipe, backend)
        pipe._framepack_attention = backend


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


def _device_type(device) -> str:
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

    for report in quantize_pipeline(pipe, choice).values():
        log.info("FramePack quantization: %s", report.summary())


def _apply_own_offload(pipe, mode: str, device) -> None:
    """Offload our pipeline only, when the FramePack setting differs from the host's mode."""
    from framepack.models.offload import apply_offload

    if mode == "balanced":  # only exists as the host's own mode
        raise ModelError("balanced offload is SD.Next's own mode: set Settings -> Model offload mode = balanced "
                         "and Settings -> FramePack -> offload = host")
    apply_offload(pipe, mode, device)
