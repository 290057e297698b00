"""The pipeline object: diffusers' FramePack pipeline, driven by our section loop.

Subclassing `HunyuanVideoFramepackPipeline` keeps its encoders, LoRA mixin, offload helpers
and component names (`transformer`, `text_encoder`, `text_encoder_2`, `vae`,
`image_encoder`), which SD.Next's balanced offload and quantization look up by name. The
denoising itself is ours (`framepack.engine.loop`): streaming output, UniPC, TeaCache,
per-section prompts and keyframes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from framepack.models.recipe import Recipe, quiet_image_processor_fallback

quiet_image_processor_fallback()  # before diffusers imports the pipeline module (see there)

from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoFramepackPipeline  # noqa: E402

from framepack.request.events import Done
from framepack.engine.frames import FrameSink
from framepack.request.model import GenerationRequest
from framepack.models.loader import LazyModel
from framepack.models.recipe import Recipe

COMPONENT_NAMES = (
    "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae",
    "image_encoder", "feature_extractor", "transformer",
)
# Only the sigma shift settings matter: the section loop builds its own schedule.
SCHEDULER_CONFIG = {"shift": 1.0, "use_dynamic_shifting": True, "base_image_seq_len": 256,
                    "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}


class FramePackPipeline(HunyuanVideoFramepackPipeline):
    """`HunyuanVideoFramepackPipeline` plus `run()`, the streaming section loop."""

    @classmethod
    def from_components(cls, components: Mapping[str, Any]) -> "FramePackPipeline":
        missing = [name for name in COMPONENT_NAMES if components.get(name) is None]
        if missing:
            raise ValueError(f"pipeline needs every component; missing: {', '.join(missing)}")
        scheduler = components.get("scheduler") or FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
        return cls(scheduler=scheduler, **{name: components[name] for name in COMPONENT_NAMES})

    def run(self, request: GenerationRequest, sink: FrameSink, emit=None, **options) -> Done:
        from framepack.engine.loop import run_generation

        return run_generation(self, request, sink, emit, **options)


@dataclass(frozen=True)
class RuntimeOptions:
    """How a loaded pipeline runs: our quantization, the offload mode, the attention backend and
    VAE tiling (`auto`: tiled and sliced only when the resource plan says the untiled decode
    would not fit; `on`/`off` force it)."""

    quantization: str = "none"
    offload: str = "auto"
    attention: str = "default"
    vae_tiling: str = "auto"


# Largest first: each component arrives in full precision, is quantized and (without offload)
# moved to the device before the next one loads, so RAM never holds two big ones in full.
LOAD_ORDER = ("transformer", "text_encoder", "image_encoder", "vae", "text_encoder_2", "tokenizer",
              "tokenizer_2", "feature_extractor")
_DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def build_pipeline(recipe: Recipe, runtime: RuntimeOptions, device: str = "cpu", **load_options) -> FramePackPipeline:
    """Load the components and make them ready to run: quantize, offload, tile, attention.

    `auto` offload and VAE tiling come from the resource planner (`framepack.models.offload.
    plan_runtime`), fed with the configs of the components the recipe will load. Components load
    one at a time (see `LOAD_ORDER`); quantizing needs plain modules (no offload hooks), so it
    happens right after each load, and LoRA (applied per run) goes on top of both. Without
    quantization or offload the weights load straight onto the device.
    """
    from framepack.models.loader import check_component_folder
    from framepack.models.offload import apply_offload, apply_vae_tiling, plan_runtime, set_attention_backend

    for role in LOAD_ORDER:  # a broken local folder fails before minutes of planning and loading
        if recipe[role].is_local():
            check_component_folder(role, recipe[role].path())
    choice = plan_runtime(runtime.offload, runtime.vae_tiling, device,
                          workload=_planning_inputs(recipe, runtime, device, load_options))
    components = _load_one_by_one(recipe, runtime.quantization, device, on_device=choice.offload == "none",
                                  **load_options)
    pipe = FramePackPipeline.from_components(components)
    from framepack.models.loader import default_dtypes
    from framepack.models.taehv import attach_tiny_vae

    attach_tiny_vae(pipe, recipe, device, default_dtypes(device)["vae"], cache_dir=load_options.get("cache_dir"),
                    offline=bool(load_options.get("offline", False)))
    if choice.offload != "none":
        apply_offload(pipe, choice.offload, device)
    apply_vae_tiling(pipe, choice.vae_tiling)
    if runtime.attention not in ("", "default"):
        set_attention_backend(pipe, runtime.attention)
    return pipe


def _planning_inputs(recipe: Recipe, runtime: RuntimeOptions, device, load_options: Mapping[str, Any]) -> dict:
    """What the planner needs to know before loading: quantization, dtype and the real configs."""
    from framepack.models.loader import default_dtypes
    from framepack.models.component_sizes import recipe_configs

    dtype = str(default_dtypes(device)["transformer"]).replace("torch.", "")
    cache_dir = load_options.get("cache_dir")
    return {"quantization": runtime.quantization, "dtype": _DTYPE_NAMES.get(dtype, "bf16"),
            "variant": recipe.variant, "configs": recipe_configs(recipe, None if cache_dir is None else str(cache_dir))}


def _load_one_by_one(recipe: Recipe, quantization: str, device, *, on_device: bool, **load_options) -> dict:
    """Load every role; quantize the quantizable ones at once; move each to `device` when no
    offload will manage it."""
    import torch

    from framepack.models.loader import default_dtypes, load_component
    from framepack.models.quantize import QUANT_COMPONENTS, check_method, quantize_component

    quantization = check_method(quantization)
    dtypes = default_dtypes(device)
    direct = on_device and quantization == "none"
    components = {}
    for role in LOAD_ORDER:
        model = load_component(recipe, role, device=device if direct else "cpu", dtype=dtypes.get(role),
                               **load_options)
        if quantization != "none" and role in QUANT_COMPONENTS:
            quantize_component(model, quantization, component=role, device=device)
        if on_device and not direct and isinstance(model, torch.nn.Module):
            model.to(device)
        components[role] = model
    return components


class PipelineManager:
    """Loads the pipeline for a recipe on first use and keeps one loaded at a time.

    Switching recipe (another variant or component) or runtime options unloads the old
    pipeline first, so two 13B transformers never sit in memory together. Components shared
    by both variants are reloaded: simpler and safe, and a switch is rare.
    """

    def __init__(self, recipe_for: Callable[[str], Recipe], device: str = "cpu", **load_options) -> None:
        self._recipe_for = recipe_for
        self._device = device
        self._load_options = load_options
        self._key: tuple[Recipe, RuntimeOptions] | None = None
        self._pipe: LazyModel | None = None
        self._lock = threading.Lock()

    def get(self, variant: str, runtime: RuntimeOptions | None = None) -> FramePackPipeline:
        """The pipeline for `variant`, loaded here if needed.

        Loads while holding the lock: a second caller asking for another variant waits for this
        load, then unloads it before loading its own, so two pipelines are never built at once.
        """
        key = (self._recipe_for(variant), runtime or RuntimeOptions())
        with self._lock:
            if self._pipe is None or key != self._key:
                self._unload_locked()
                self._key = key
                self._pipe = LazyModel(lambda: build_pipeline(*key, device=self._device, **self._load_options),
                                       name=f"FramePack {variant}")
            return self._pipe.get()

    @property
    def loaded_variant(self) -> str | None:
        pipe = self._pipe
        return self._key[0].variant if pipe is not None and pipe.loaded else None

    def unload(self) -> None:
        with self._lock:
            self._unload_locked()

    def _unload_locked(self) -> None:
        if self._pipe is not None:
            self._pipe.unload()
        self._pipe, self._key = None, None
