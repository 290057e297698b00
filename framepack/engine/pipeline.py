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
from framepack.models.loader import LazyModel, load_components

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
    """How a loaded pipeline runs: our quantization, the offload mode and the attention backend."""

    quantization: str = "none"
    offload: str = "auto"
    attention: str = "default"


def build_pipeline(recipe: Recipe, runtime: RuntimeOptions, device: str = "cpu", **load_options) -> FramePackPipeline:
    """Load the components and make them ready to run: quantize, then offload, then attention.

    The order matters: quantizing needs plain modules (no offload hooks), and LoRA (applied per
    run) goes on top of both. Without quantization or offload the weights load straight onto
    the device.
    """
    from framepack.models.loader import default_dtypes
    from framepack.models.offload import apply_offload, resolve_offload, set_attention_backend
    from framepack.models.quantize import quantize_pipeline

    mode = resolve_offload(runtime.offload, device)
    direct = mode == "none" and runtime.quantization == "none"
    components = load_components(recipe, device=device if direct else "cpu", dtypes=default_dtypes(device),
                                 **load_options)
    pipe = FramePackPipeline.from_components(components)
    from framepack.models.taehv import attach_tiny_vae

    attach_tiny_vae(pipe, recipe, device, default_dtypes(device)["vae"], cache_dir=load_options.get("cache_dir"),
                    offline=bool(load_options.get("offline", False)))
    if runtime.quantization != "none":
        quantize_pipeline(pipe, runtime.quantization, device=device)
    if mode == "none":
        if not direct:
            pipe.to(device)
    else:
        apply_offload(pipe, mode, device)
    if runtime.attention not in ("", "default"):
        set_attention_backend(pipe, runtime.attention)
    return pipe


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
