"""The pipeline object: diffusers' FramePack pipeline, driven by our section loop.

Subclassing `HunyuanVideoFramepackPipeline` keeps its encoders, LoRA mixin, offload helpers
and component names (`transformer`, `text_encoder`, `text_encoder_2`, `vae`,
`image_encoder`), which SD.Next's balanced offload and quantization look up by name. The
denoising itself is ours (`framepack.engine.loop`): streaming output, UniPC, TeaCache,
per-section prompts and keyframes.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Mapping

from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoFramepackPipeline

from framepack.engine.control import GenerationControl
from framepack.engine.events import Done
from framepack.engine.frames import FrameSink
from framepack.jobs.request import GenerationRequest
from framepack.models.loader import LazyModel, load_components
from framepack.models.recipe import Recipe

COMPONENT_NAMES = (
    "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae",
    "image_encoder", "feature_extractor", "transformer",
)
# Only the sigma shift settings matter: the section loop builds its own schedule.
SCHEDULER_CONFIG = {"shift": 1.0, "use_dynamic_shifting": True, "base_image_seq_len": 256,
                    "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}


class FramePackPipeline(HunyuanVideoFramepackPipeline):
    """`HunyuanVideoFramepackPipeline` plus `generate()`, the streaming section loop."""

    @classmethod
    def from_components(cls, components: Mapping[str, Any]) -> "FramePackPipeline":
        missing = [name for name in COMPONENT_NAMES if components.get(name) is None]
        if missing:
            raise ValueError(f"pipeline needs every component; missing: {', '.join(missing)}")
        scheduler = components.get("scheduler") or FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
        return cls(scheduler=scheduler, **{name: components[name] for name in COMPONENT_NAMES})

    def generate(self, request: GenerationRequest, sink: FrameSink, control: GenerationControl | None = None,
                 **options) -> Iterator[object]:
        from framepack.engine.loop import generate

        return generate(self, request, sink, control=control, **options)

    def run(self, request: GenerationRequest, sink: FrameSink, emit=None, **options) -> Done:
        from framepack.engine.loop import run_generation

        return run_generation(self, request, sink, emit, **options)


class PipelineManager:
    """Loads the pipeline for a recipe on first use and keeps one loaded at a time.

    Switching recipe (another variant or component) unloads the old pipeline first, so two
    13B transformers never sit in memory together. Components shared by both variants are
    reloaded: simpler and safe, and a variant switch is rare.
    """

    def __init__(self, recipe_for: Callable[[str], Recipe], **load_options) -> None:
        self._recipe_for = recipe_for
        self._load_options = load_options
        self._recipe: Recipe | None = None
        self._pipe: LazyModel | None = None
        self._lock = threading.Lock()

    def get(self, variant: str) -> FramePackPipeline:
        recipe = self._recipe_for(variant)
        with self._lock:
            if self._pipe is None or recipe != self._recipe:
                self._unload_locked()
                self._recipe = recipe
                self._pipe = LazyModel(lambda: FramePackPipeline.from_components(
                    load_components(recipe, **self._load_options)), name=f"FramePack {variant}")
            pipe = self._pipe
        return pipe.get()

    @property
    def loaded_variant(self) -> str | None:
        pipe = self._pipe
        return self._recipe.variant if pipe is not None and pipe.loaded else None

    def unload(self) -> None:
        with self._lock:
            self._unload_locked()

    def _unload_locked(self) -> None:
        if self._pipe is not None:
            self._pipe.unload()
        self._pipe, self._recipe = None, None
