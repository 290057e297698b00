"""The section loop: plan, condition, then for each section sample, decode and emit frames.

`run_generation` does the work and reports through an `emit` callback (it is what hosts and
tests call when they want to stay on one thread); `generate` wraps it as a generator of events
for faces that prefer to iterate. Frames leave through the sink in time order as soon as no
later blend can touch them.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator

import numpy as np
import torch

from framepack.engine import conditioning as cond
from framepack.engine.context import ForwardContext, InvertedContext
from framepack.engine.control import GenerationControl
from framepack.request.events import Done, Frames, Preview, Progress, SectionDone
from framepack.engine.frames import FrameAssembler, FrameSink
from framepack.engine.guidance import GuidanceConfig, make_denoiser
from framepack.request.planner import SectionPlan, VideoPlan
from framepack.engine.preview import preview_image
from framepack.engine.sampler import SAMPLERS, dynamic_shift, flow_sigmas
from framepack.engine.teacache import TeaCacheState, run_transformer
from framepack.request.model import GenerationRequest

Emit = Callable[[object], None]
NoiseFn = Callable[[int, tuple[int, ...]], torch.Tensor]


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
    """One generation: owns the plan, the conditioning and the latent context."""

    def __init__(self, pipe, request: GenerationRequest, sink: FrameSink, control: GenerationControl | None = None,
                 noise_fn: NoiseFn | None = None, spill_dir: str | None = None):
        self.pipe = pipe
        self.request = request
        self.plan: VideoPlan = request.plan()
        self.sink = sink
        self.control = control or GenerationControl()
        self.noise_fn = noise_fn or (lambda index, shape: section_noise(request.seed, index, shape))
        self.spill_dir = spill_dir
        self.device = pipe._execution_device
        self.dtype = pipe.transformer.dtype
        self.guidance = GuidanceConfig(
            distilled_cfg=request.distilled_cfg, cfg=request.cfg, rescale=request.cfg_rescale,
            cfg_zero_star=request.cfg_zero_star,
        )
        self.text_encodes = 0
        self._text_cache: tuple[str, cond.TextEmbedding] | None = None

    # ---- table of contents -------------------------------------------------------------
    def run(self, emit: Emit) -> Done:
        started = time.perf_counter()
        with torch.no_grad():
            images = self.condition_images()
            negative = self.encode_negative()
            assembler = FrameAssembler(4 * self.request.latent_window_size - 3, self._counting_sink(emit),
                                       reverse=self.plan.variant == "original", spill_dir=self.spill_dir)
            try:
                status = self.sample_sections(images, negative, assembler, emit)
                frames = assembler.finish()
            finally:
                assembler.close()
        done = Done(status=status, frames=frames, seed=self.request.seed, seconds=time.perf_counter() - started,
                    timings=dict(self.control.timings), plan=self.plan.to_dict())
        emit(done)
        return done

    def sample_sections(self, images: cond.ImageConditioning, negative, assembler: FrameAssembler, emit: Emit) -> str:
        context = self.new_context(images)
        for position, index in enumerate(self.plan.generation_order):
            if self.control.should_stop():
                return "interrupted"
            section = self.plan.sections[index]
            section_started = time.perf_counter()
            latents, skipped = self.sample_section(section, position, context, images, negative, emit)
            if latents is None:
                return "interrupted"
            finished = assembler.add(self.decode(self.add_to_context(context, section, latents)))
            emit(SectionDone(section.number, position, self.plan.num_sections, finished,
                             time.perf_counter() - section_started, skipped))
        return "completed"

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
        with self.control.stage("vision"):
            start_embeds = cond.encode_vision(self.pipe, start, self.device)
            end_embeds = None if end is None else cond.encode_vision(self.pipe, end, self.device)
            key_embeds = [cond.encode_vision(self.pipe, image, self.device) for image in keys]
        with self.control.stage("vae_encode"):
            start_latent = cond.encode_latent(self.pipe, start, self.device)
            end_latent = None if end is None else cond.encode_latent(self.pipe, end, self.device)
            key_latents = [cond.encode_latent(self.pipe, image, self.device) for image in keys]
        start_latent = cond.weighted(start_latent, torch.zeros_like(start_latent), request.start_strength)
        return cond.ImageConditioning(height, width, start_latent.cpu(), start_embeds, end_latent, end_embeds,
                                      key_latents, key_embeds, start)

    def text_for(self, prompt: str) -> cond.TextEmbedding:
        """Encode a section's prompt only when it differs from the previous section's."""
        if self._text_cache is None or self._text_cache[0] != prompt:
            with self.control.stage("text"):
                embedding = cond.encode_text(self.pipe, prompt, self.request.system_prompt,
                                             self.request.max_prompt_tokens, self.device)
            self.text_encodes += 1
            self._text_cache = (prompt, embedding)
        return self._text_cache[1]

    def encode_negative(self) -> cond.TextEmbedding | None:
        if not self.guidance.uses_negative:
            return None
        with self.control.stage("text"):
            return cond.encode_text(self.pipe, self.request.negative_prompt, self.request.system_prompt,
                                    self.request.max_prompt_tokens, self.device)

    # ---- context -----------------------------------------------------------------------
    def new_context(self, images: cond.ImageConditioning):
        window = self.request.latent_window_size
        if self.plan.variant == "original":
            return InvertedContext(images.start_latent, window)
        return ForwardContext(images.start_latent, window)

    def model_context(self, context, section: SectionPlan, images: cond.ImageConditioning):
        if isinstance(context, ForwardContext):
            return context.model_context()
        return context.model_context(section.padding, self.post_anchor(context, section, images))

    def post_anchor(self, context: InvertedContext, section: SectionPlan, images: cond.ImageConditioning):
        """The clean frame after the window: the end image for the last section, else its keyframe."""
        anchor = None
        if section.keyframe is not None:
            anchor = images.keyframe_latents[section.keyframe]
        elif section.index == self.plan.num_sections - 1 and images.end_latent is not None:
            anchor = images.end_latent
        if anchor is None:
            return context.post_latent
        return cond.weighted(anchor.cpu(), context.post_latent, self.request.end_strength)

    def add_to_context(self, context, section: SectionPlan, latents: torch.Tensor) -> torch.Tensor:
        if isinstance(context, ForwardContext):
            return context.add(latents)
        return context.add(latents, reaches_start=section.index == 0)

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
            with self.control.stage("sample"):
                return SAMPLERS[request.sampler](denoise, noise, sigmas, callback=callback).float().cpu(), False
        except _SectionEnded as ended:
            return (None, False) if ended.latents is None else (ended.latents.float().cpu(), True)

    def token_count(self, shape: tuple[int, ...]) -> float:
        patch = self.pipe.transformer.config.patch_size
        return shape[2] * shape[3] * shape[4] / patch**2

    def velocity_fn(self, section, context, images, negative):
        request = self.request
        positive = self.text_for(section.prompt)
        inputs = self.model_context(context, section, images).as_kwargs(self.dtype)
        inputs["image_embeds"] = images.image_embeds(section.keyframe, request.vision_strength).to(self.dtype)
        inputs["guidance"] = torch.tensor([request.distilled_cfg * 1000.0], dtype=self.dtype, device=self.device)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        caches = {False: self.new_cache(), True: self.new_cache()}  # cond and uncond never share state

        def velocity(x: torch.Tensor, sigma: torch.Tensor, step: int, use_negative: bool) -> torch.Tensor:
            self.check_control()  # before every model call, computed by TeaCache or not
            text = negative if use_negative else positive
            return run_transformer(
                self.pipe.transformer, caches[use_negative], hidden_states=x.to(self.dtype),
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
        cache = TeaCacheState(self.request.teacache_threshold)
        cache.reset(self.request.steps)
        return cache

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
                emit(Preview(preview_image(x0), section.number, done))
            self.check_control()
            if done < steps and self.control.take_skip():
                raise _SectionEnded(x0)

        return on_step

    # ---- decoding ----------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        with self.control.stage("vae_decode"):
            scaled = latents.to(device=self.device, dtype=vae.dtype) / vae.config.scaling_factor
            return vae.decode(scaled, return_dict=False)[0]

    def _counting_sink(self, emit: Emit) -> FrameSink:
        total = 0

        def sink(frames: np.ndarray) -> None:
            nonlocal total
            self.sink(frames)
            total += len(frames)
            emit(Frames(len(frames), total))

        return sink


def run_generation(pipe, request: GenerationRequest, sink: FrameSink, emit: Emit | None = None, **options) -> Done:
    """Generate on the calling thread, reporting events through `emit`."""
    return SectionLoop(pipe, request, sink, **options).run(emit or (lambda event: None))


def generate(pipe, request: GenerationRequest, sink: FrameSink, control: GenerationControl | None = None,
             **options) -> Iterator[object]:
    """Generator of events. The work runs on a worker thread; closing the generator stops it."""
    control = control or GenerationControl()
    events: queue.Queue = queue.Queue(maxsize=64)
    finished = object()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            run_generation(pipe, request, sink, events.put, control=control, **options)
        except BaseException as error:  # handed to the consumer, which re-raises it
            failure.append(error)
        finally:
            events.put(finished)

    worker = threading.Thread(target=work, name="framepack-generate", daemon=True)
    worker.start()
    try:
        while (event := events.get()) is not finished:
            yield event
    finally:
        control.stop()
        while worker.is_alive():  # drain so a blocked put() can finish
            try:
                events.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()
    if failure:
        raise failure[0]
