"""The section loop: plan, condition, then for each section sample, decode and emit frames.

`run_generation` does the work on the calling thread and reports through an `emit` callback.
Frames leave through the sink in time order as soon as no later blend can touch them. After
every finished section the loop can hand out its `SectionState` (latent context, frame
assembler, position), and a new loop started from that state produces the same frames as if
the run had never stopped.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from framepack.engine import conditioning as cond
from framepack.errors import ModelError
from framepack.engine.context import LatentContext, new_context
from framepack.engine.control import GenerationControl, StageHooks
from framepack.request.events import Done, Frames, Preview, Progress, SectionDone, Stage, Status
from framepack.engine.frames import FrameAssembler, FrameSink
from framepack.engine.guidance import GuidanceConfig, make_denoiser
from framepack.request.planner import SectionPlan, VideoPlan
from framepack.engine.preview import preview_image, tiny_vae_preview
from framepack.engine.sampler import SAMPLERS, dynamic_shift, flow_sigmas
from framepack.engine.teacache import TeaCacheState, run_transformer
from framepack.request.model import GenerationRequest

Emit = Callable[[object], None]
NoiseFn = Callable[[int, tuple[int, ...]], torch.Tensor]


@dataclass(frozen=True)
class SectionState:
    """Where a generation stands after `position` finished sections (in generation order).

    Plain data: `context_state` and `assembler_state` are dicts of tensors, numbers and strings
    that `torch.save` / `torch.load(weights_only=True)` round-trip exactly. Give the three to
    `SectionLoop.run` to continue from here.
    """

    position: int
    context_state: dict[str, Any]
    assembler_state: dict[str, Any]


SectionStateFn = Callable[[SectionState], None]


def section_noise(seed: int, section_index: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for one section from (seed, section): any section can be re-rolled or resumed alone."""
    state = np.random.SeedSequence([seed, section_index]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator("cpu").manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


class _SectionEnded(Exception):
    """Raised from the step callback to leave the sampler early."""

    def __init__(self, latents: torch.Tensor | None):
        super().__init__()
        self.latents = latents  # the current prediction on skip, None on stop


class SectionLoop:
    """One generation: owns the plan, the conditioning and the latent context.

    `control` carries Stop / Skip / Pause; `hooks` is what the host does around each stage;
    `spill_dir` is the folder for the inverted order's spill file (the job's work folder);
    `on_section_state`, when given, receives the state a checkpoint needs after every section;
    `on_section_start` is called with each section's plan before it is sampled (LoRA weights).
    """

    def __init__(self, pipe, request: GenerationRequest, sink: FrameSink, control: GenerationControl | None = None,
                 noise_fn: NoiseFn | None = None, spill_dir: str | None = None, hooks: StageHooks | None = None,
                 on_section_state: SectionStateFn | None = None,
                 on_section_start: Callable[[SectionPlan], None] | None = None):
        self.pipe = pipe
        self.request = request
        self.plan: VideoPlan = request.plan()
        self.sink = sink
        self.control = control or GenerationControl()
        self.hooks = hooks or StageHooks()
        self.noise_fn = noise_fn or (lambda index, shape: section_noise(request.seed, index, shape))
        self.spill_dir = spill_dir
        self.on_section_state = on_section_state
        self.on_section_start = on_section_start  # e.g. the section's LoRA weights (models.lora.LoraSchedule)
        self.device = pipe._execution_device
        self.dtype = pipe.transformer.dtype
        self.tiny_vae = getattr(pipe, "tiny_vae", None)  # the recipe's Tiny VAE (models.taehv), if it has one
        if request.tiny_vae_decode and self.tiny_vae is None:
            raise ModelError("tiny_vae_decode needs a Tiny VAE in the model recipe (the tiny_vae component: a "
                             "folder or file with taehv.safetensors)")
        self.guidance = GuidanceConfig(
            distilled_cfg=request.distilled_cfg, cfg=request.cfg, rescale=request.cfg_rescale,
            cfg_zero_star=request.cfg_zero_star,
        )
        self.text_encodes = 0
        self._text_cache: tuple[str, cond.TextEmbedding] | None = None
        self._emit: Emit = lambda event: None

    # ---- table of contents -------------------------------------------------------------
    def run(self, emit: Emit, start_position: int = 0, context_state: dict | None = None,
            assembler_state: dict | None = None) -> Done:
        """Generate the sections from `start_position` on (in generation order).

        A run that starts past 0 continues from a `SectionState` of an earlier run of the same
        request: its context and assembler states (the assembler's spill file in `spill_dir`).
        """
        self.check_start(start_position, context_state, assembler_state)
        self._emit = emit
        started = time.perf_counter()
        with torch.no_grad():
            images = self.condition_images()
            negative = self.encode_negative()
            context = self.new_context(images, context_state)
            assembler = self.new_assembler(emit, assembler_state)
            try:
                status = self.sample_sections(images, negative, context, assembler, emit, start_position)
                frames = assembler.finish()
            except BaseException:
                # In the caller's folder the spill file outlives a failure: the last SectionState names it.
                assembler.close(remove_spill=self.spill_dir is None)
                raise
        done = Done(status=status, frames=frames, seed=self.request.seed, seconds=time.perf_counter() - started,
                    timings=dict(self.control.timings), plan=self.plan.to_dict())
        emit(done)
        return done

    def sample_sections(self, images: cond.ImageConditioning, negative, context: LatentContext,
                        assembler: FrameAssembler, emit: Emit, start_position: int = 0) -> Status:
        for position in range(start_position, self.plan.num_sections):
            if self.control.should_stop():
                return Status.INTERRUPTED
            section = self.plan.sections[self.plan.generation_order[position]]
            section_started = time.perf_counter()
            if self.on_section_start is not None:
                self.on_section_start(section)
            latents, skipped = self.sample_section(section, position, context, images, negative, emit)
            if latents is None:
                return Status.INTERRUPTED
            finished = assembler.add(self.decode(context.add(section, latents)))
            if self.on_section_state is not None:
                self.on_section_state(SectionState(position + 1, context.state_dict(), assembler.state_dict()))
            emit(SectionDone(section.number, position, self.plan.num_sections, finished,
                             time.perf_counter() - section_started, skipped))
        return Status.COMPLETED

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """One stage (text, vision, vae_encode, sample, vae_decode): the host's hooks, then timed."""
        self._emit(Stage(name))
        with self.hooks.stage(name), self.control.timed(name):
            yield

    # ---- conditioning ------------------------------------------------------------------
    def condition_images(self) -> cond.ImageConditioning:
        request = self.request
        source = request.image
        if source is None:
            height, width = cond.pick_bucket(request.resolution, request.resolution, request.resolution)
            start = cond.blank_image(request.blank_start, height, width, request.seed)
        else:
            height, width = cond.pick_bucket(source.shape[0], source.shape[1], request.resolution)
            start = cond.resize_and_crop(source, height, width)
        fit = lambda image: cond.resize_and_crop(image, height, width)  # noqa: E731
        end = None if request.end_image is None else fit(request.end_image)
        keys = [fit(keyframe.image) for keyframe in request.keyframes]
        with self.stage("vision"):
            start_embeds = cond.encode_vision(self.pipe, start, self.device)
            end_embeds = None if end is None else cond.encode_vision(self.pipe, end, self.device)
            key_embeds = [cond.encode_vision(self.pipe, image, self.device) for image in keys]
        with self.stage("vae_encode"):
            start_latent = cond.encode_latent(self.pipe, start, self.device)
            end_latent = None if end is None else cond.encode_latent(self.pipe, end, self.device)
            key_latents = [cond.encode_latent(self.pipe, image, self.device) for image in keys]
        start_latent = cond.weighted(start_latent, torch.zeros_like(start_latent), request.start_strength)
        return cond.ImageConditioning(height, width, start_latent.cpu(), start_embeds, end_latent, end_embeds,
                                      key_latents, key_embeds, start)

    def text_for(self, prompt: str) -> cond.TextEmbedding:
        """Encode a section's prompt only when it differs from the previous section's."""
        if self._text_cache is None or self._text_cache[0] != prompt:
            with self.stage("text"):
                embedding = cond.encode_text(self.pipe, prompt, self.request.system_prompt,
                                             self.request.max_prompt_tokens, self.device)
            self.text_encodes += 1
            self._text_cache = (prompt, embedding)
        return self._text_cache[1]

    def encode_negative(self) -> cond.TextEmbedding | None:
        if not self.guidance.uses_negative:
            return None
        with self.stage("text"):
            return cond.encode_text(self.pipe, self.request.negative_prompt, self.request.system_prompt,
                                    self.request.max_prompt_tokens, self.device)

    # ---- context and assembler -----------------------------------------------------------
    def check_start(self, start_position: int, context_state: dict | None, assembler_state: dict | None) -> None:
        if type(start_position) is not int or not 0 <= start_position <= self.plan.num_sections:
            raise ValueError(f"start position {start_position!r} is not between 0 and {self.plan.num_sections}")
        if (context_state is None) != (assembler_state is None):
            raise ValueError("continuing needs both the latent context state and the frame assembler state")
        if start_position > 0 and context_state is None:
            raise ValueError(f"starting at section position {start_position} needs the state saved there")

    def new_context(self, images: cond.ImageConditioning, state: dict | None = None) -> LatentContext:
        window = self.request.latent_window_size
        if state is None:
            return new_context(self.plan.variant, images.start_latent, window, self.request.end_strength)
        context = LatentContext.from_state(state)
        restored = (context.variant, context.window, context.anchor_strength, tuple(context.start_latent.shape))
        expected = (self.plan.variant, window, float(self.request.end_strength), tuple(images.start_latent.shape))
        if restored != expected:
            raise ValueError(f"the latent context state (variant, window, end strength, latent shape) {restored} "
                             f"does not belong to this request {expected}")
        return context

    def new_assembler(self, emit: Emit, state: dict | None = None) -> FrameAssembler:
        overlap, reverse = 4 * self.request.latent_window_size - 3, self.plan.variant == "original"
        if state is None:
            return FrameAssembler(overlap, self._counting_sink(emit, 0), reverse=reverse, spill_dir=self.spill_dir)
        restored = (state.get("overlap"), state.get("reverse")) if isinstance(state, dict) else None
        if restored != (overlap, reverse):
            raise ValueError(f"the frame assembler state (overlap, reverse) {restored} "
                             f"does not belong to this request {(overlap, reverse)}")
        assembler = FrameAssembler.from_state(state, self.sink, self.spill_dir)
        assembler.sink = self._counting_sink(emit, assembler.emitted)
        return assembler

    def anchor(self, section: SectionPlan, images: cond.ImageConditioning) -> torch.Tensor | None:
        """The clean latent meant to follow the window: its keyframe, or the end image for the last section."""
        if section.keyframe is not None:
            return images.keyframe_latents[section.keyframe]
        if section.index == self.plan.num_sections - 1:
            return images.end_latent
        return None

    # ---- sampling ----------------------------------------------------------------------
    def sample_section(self, section, position, context, images, negative, emit: Emit):
        """Sample one window. Returns (latents, skipped); latents is None when the user stopped."""
        request = self.request
        height, width = images.height // 8, images.width // 8
        shape = (1, self.pipe.transformer.config.in_channels, request.latent_window_size, height, width)
        noise = self.noise_fn(section.index, shape).to(self.device)
        sigmas = flow_sigmas(request.steps, request.shift or dynamic_shift(self.token_count(shape))).to(self.device)
        denoise = make_denoiser(self.velocity_fn(section, context, images, negative), self.guidance)
        callback = self.step_callback(section, position, emit)
        try:
            with self.stage("sample"):
                return SAMPLERS[request.sampler](denoise, noise, sigmas, callback=callback).float().cpu(), False
        except _SectionEnded as ended:
            return (None, False) if ended.latents is None else (ended.latents.float().cpu(), True)

    def token_count(self, shape: tuple[int, ...]) -> float:
        patch = self.pipe.transformer.config.patch_size
        return shape[2] * shape[3] * shape[4] / patch**2

    def velocity_fn(self, section, context, images, negative):
        request = self.request
        positive = self.text_for(section.prompt)
        inputs = context.model_context(section, self.anchor(section, images)).as_kwargs(self.dtype)
        inputs["image_embeds"] = images.image_embeds(section.keyframe, request.vision_strength).to(self.dtype)
        inputs["guidance"] = torch.tensor([self.guidance.transformer_guidance], dtype=self.dtype, device=self.device)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        caches = {False: self.new_cache(), True: self.new_cache()}  # cond and uncond never share state

        def velocity(x: torch.Tensor, sigma: torch.Tensor, step: int, use_negative: bool) -> torch.Tensor:
            self.check_control()  # before every model call, computed by TeaCache or not
            text = negative if use_negative else positive
            return run_transformer(
                self.pipe.transformer, caches[use_negative], step=step, hidden_states=x.to(self.dtype),
                timestep=(sigma * 1000.0).expand(x.shape[0]).float(), encoder_hidden_states=text.embeds,
                encoder_attention_mask=text.mask, pooled_projections=text.pooled, **inputs,
            ).float()

        return velocity

    def check_control(self) -> None:
        """Honour Pause and Stop at once, also in the middle of a step.

        A step is one or two model calls (two with real CFG) and a TeaCache-skipped call is much
        shorter than a computed one; checking here, not only between steps, makes a Stop take
        effect before the next model call, however the cache decided.
        """
        self.control.wait_while_paused()
        if self.control.should_stop():
            raise _SectionEnded(None)

    def new_cache(self) -> TeaCacheState | None:
        if not self.request.teacache:
            return None
        return TeaCacheState(self.request.teacache_threshold, self.request.steps)

    def step_callback(self, section: SectionPlan, position: int, emit: Emit):
        started = time.perf_counter()
        steps = self.request.steps

        def on_step(step_index: int, x: torch.Tensor, x0: torch.Tensor) -> None:
            done = step_index + 1
            elapsed = time.perf_counter() - started
            rate = done / elapsed if elapsed > 0 else 0.0
            remaining = (self.plan.num_sections - position) * steps - done
            emit(Progress(section.number, position, self.plan.num_sections, done, steps, elapsed, rate,
                          remaining / rate if rate else 0.0))
            if self.request.preview:
                image = preview_image(x0) if self.tiny_vae is None else tiny_vae_preview(x0, self.tiny_vae)
                emit(Preview(image, section.number, done))
            self.check_control()
            if done < steps and self.control.take_skip():
                raise _SectionEnded(x0)

        return on_step

    # ---- decoding ----------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        if self.request.tiny_vae_decode:  # the Tiny VAE decodes the sampler's latents as they are
            with self.stage("vae_decode"):
                return self.tiny_vae.decode(latents)
        with self.stage("vae_decode"):
            scaled = latents.to(device=self.device, dtype=vae.dtype) / vae.config.scaling_factor
            return vae.decode(scaled, return_dict=False)[0]

    def _counting_sink(self, emit: Emit, total: int) -> FrameSink:
        """The sink, reporting each batch and the running total (from `total` frames sent before)."""

        def sink(frames: np.ndarray) -> None:
            nonlocal total
            self.sink(frames)
            total += len(frames)
            emit(Frames(len(frames), total))

        return sink


def run_generation(pipe, request: GenerationRequest, sink: FrameSink, emit: Emit | None = None, *,
                   start_position: int = 0, context_state: dict | None = None, assembler_state: dict | None = None,
                   **options) -> Done:
    """Generate on the calling thread, reporting events through `emit`; `options` go to `SectionLoop`."""
    loop = SectionLoop(pipe, request, sink, **options)
    return loop.run(emit or (lambda event: None), start_position, context_state, assembler_state)
