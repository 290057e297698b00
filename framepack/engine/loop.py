"""The section loop: plan, condition, then for each section sample, decode and emit frames.

`run_generation` does the work on the calling thread and reports through an `emit` callback.
Frames leave through the sink in time order as soon as no later blend can touch them. Before the
first section and after every finished one the loop can hand out its `SectionState` (latent
context, frame assembler, position), and a new loop started from that state produces the same
frames as if the run had never stopped. A state may leave out the assembler's pending overlap
frames: they are the tail of the last decoded section, so the loop decodes them again
(`decoded_latents`), which keeps a checkpoint small.

The F1 loop can also continue a clip (`continue_frames`): the clip's last frames are VAE-encoded
into the latent history and its last overlap frames are the pending frames the first new section
cross-fades with, the same seam as between two sections.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from framepack.engine import conditioning as cond
from framepack.engine.context import HISTORY_LENGTH, LatentContext, continuing_context, new_context
from framepack.errors import ModelError
from framepack.engine.control import GenerationControl, StageHooks
from framepack.request.events import Done, Frames, Progress, SectionDone, Stage, Status
from framepack.engine.frames import FrameAssembler, FrameSink
from framepack.engine.guidance import GuidanceConfig, make_denoiser
from framepack.request.planner import SectionPlan, VideoPlan
from framepack.engine.sampler import SAMPLERS, dynamic_shift, flow_sigmas
from framepack.engine.forward import compiled_blocks, prepare_section, prepare_text, section_forward
from framepack.engine.magcache import MagCacheState, mag_ratios
from framepack.engine.noise import ReferenceNoise, section_noise
from framepack.engine.heap import release_free_heap
from framepack.engine.preview import PreviewStream, tiny_vae_strip
from framepack.engine.teacache import TeaCacheState
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
    decoded_latents: int = 0
    """Latents the last section decoded (0 before the first): enough to decode its pending frames again."""


SectionStateFn = Callable[[SectionState], None]


def continuation_frames(window: int) -> int:
    """Frames of a clip the F1 loop reads to continue it: enough latents for every history slot and
    for one window before the first new one (1 + 4k frames, the VAE's rhythm)."""
    return 1 + 4 * (max(HISTORY_LENGTH, window) - 1)


class _SectionEnded(Exception):
    """Raised from the step callback to leave the sampler early."""

    def __init__(self, latents: torch.Tensor | None):
        super().__init__()
        self.latents = latents  # the current prediction on skip, None on stop


class SectionLoop:
    """One generation: owns the plan, the conditioning and the latent context.

    `control` carries Stop / Skip / Pause; `hooks` is what the host does around each stage;
    `spill_dir` is the folder for the inverted order's spill file (the job's work folder);
    `on_section_state`, when given, receives the state a checkpoint needs before the first section
    and after every section; `keep_spill` keeps the spill file of a completed run (a kept checkpoint
    names it). A stopped or failed run in `spill_dir` always keeps it: its last state names it.
    `on_section_start` is called with each section's plan before it is sampled (LoRA weights).
    """

    def __init__(self, pipe, request: GenerationRequest, sink: FrameSink, control: GenerationControl | None = None,
                 noise_fn: NoiseFn | None = None, spill_dir: str | None = None, hooks: StageHooks | None = None,
                 on_section_state: SectionStateFn | None = None, keep_spill: bool = False,
                 on_section_start: Callable[[SectionPlan], None] | None = None):
        self.pipe = pipe
        self.request = request
        self.plan: VideoPlan = request.plan()
        self.sink = sink
        self.control = control or GenerationControl()
        self.hooks = hooks or StageHooks()
        self.noise_fn = noise_fn or self.default_noise(request)
        self.spill_dir = spill_dir
        self.on_section_state = on_section_state
        self.on_section_start = on_section_start  # e.g. the section's LoRA weights (models.lora.LoraSchedule)
        self.keep_spill = keep_spill
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

    @staticmethod
    def default_noise(request: GenerationRequest) -> NoiseFn:
        if request.noise == "reference":
            return ReferenceNoise(request.seed)
        return lambda index, shape: section_noise(request.seed, index, shape)

    # ---- table of contents -------------------------------------------------------------
    def run(self, emit: Emit, start_position: int = 0, context_state: dict | None = None,
            assembler_state: dict | None = None, *, decoded_latents: int = 0,
            continue_frames: np.ndarray | None = None) -> Done:
        """Generate the sections from `start_position` on (in generation order).

        A run that starts past 0 continues from a `SectionState` of an earlier run of the same
        request: its context and assembler states (the assembler's spill file in `spill_dir`).
        An assembler state without pending frames has them decoded again from the context
        (`decoded_latents`, as the state recorded it). `continue_frames` ([T, H, W, 3] uint8 at the
        video's size, the last `continuation_frames` of a clip) makes an F1 run continue that clip.
        """
        self.check_start(start_position, context_state, assembler_state, continue_frames)
        self._emit = emit
        started = time.perf_counter()
        with torch.no_grad():
            images = self.condition_images()
            negative = self.encode_negative()
            if continue_frames is not None:
                context_state, assembler_state = self.continuation_states(images, continue_frames)
            elif assembler_state is not None and assembler_state.get("pending") is None and decoded_latents:
                assembler_state = {**assembler_state,
                                   "pending": self.pending_frames(context_state, decoded_latents)}
            context = self.new_context(images, context_state)
            assembler = self.new_assembler(emit, assembler_state)
            try:
                if start_position == 0 and self.on_section_state is not None:
                    self.on_section_state(SectionState(0, context.state_dict(), assembler.state_dict()))
                status = self.sample_sections(images, negative, context, assembler, emit, start_position)
                keep = self.spill_dir is not None and (self.keep_spill or status != Status.COMPLETED)
                frames = assembler.finish(remove_spill=not keep)
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
        if isinstance(self.noise_fn, ReferenceNoise):  # one stream: continuing draws past the earlier sections
            self.noise_fn.fast_forward(start_position, self.latent_shape(images))
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
            decoded = context.add(section, latents)
            finished = assembler.add(self.decode(decoded))
            release_free_heap()  # the section's transients are freed: the next one starts from what is in use
            if self.on_section_state is not None:
                self.on_section_state(SectionState(position + 1, context.state_dict(), assembler.state_dict(),
                                                   decoded.shape[2]))
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
            start_latent = cond.encode_latent(self.pipe, start, self.device, generator=self.posterior_generator())
            end_latent = None if end is None else cond.encode_latent(self.pipe, end, self.device)
            key_latents = [cond.encode_latent(self.pipe, image, self.device) for image in keys]
        start_latent = cond.weighted(start_latent, torch.zeros_like(start_latent), request.start_strength)
        return cond.ImageConditioning(height, width, start_latent.cpu(), start_embeds, end_latent, end_embeds,
                                      key_latents, key_embeds, start)

    def posterior_generator(self) -> torch.Generator | None:
        """Reference noise samples the start latent from the VAE posterior, as lllyasviel's demo does.

        His demo draws that sample from the global RNG, which it never seeds, so no tool can repeat
        that one draw; here it comes from its own CPU generator seeded with the seed, and leaves
        the section noise stream untouched (as in the demo). With a trained VAE the posterior's
        spread is far below bf16 precision, so the start latent matches the reference's anyway.
        """
        if self.request.noise != "reference":
            return None
        return torch.Generator("cpu").manual_seed(self.request.seed)

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
    def check_start(self, start_position: int, context_state: dict | None, assembler_state: dict | None,
                    continue_frames: np.ndarray | None = None) -> None:
        if type(start_position) is not int or not 0 <= start_position <= self.plan.num_sections:
            raise ValueError(f"start position {start_position!r} is not between 0 and {self.plan.num_sections}")
        if (context_state is None) != (assembler_state is None):
            raise ValueError("continuing needs both the latent context state and the frame assembler state")
        if start_position > 0 and context_state is None:
            raise ValueError(f"starting at section position {start_position} needs the state saved there")
        if continue_frames is not None:
            if self.plan.variant != "f1":
                raise ValueError("continuing a clip from its frames needs the F1 model (the original model "
                                 "starts from the clip's last frame, as its start image)")
            if start_position or context_state is not None:
                raise ValueError("a clip is continued from its frames or from a saved state, not both")

    def continuation_states(self, images: cond.ImageConditioning, frames: np.ndarray) -> tuple[dict, dict]:
        """Context and assembler states that continue a clip: its last latents as the history, its
        last overlap frames as the pending frames the first new section cross-fades with."""
        window = self.request.latent_window_size
        overlap = 4 * window - 3
        if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                and frames.shape[1:] == (images.height, images.width, 3)):
            raise ValueError(f"the clip to continue must be uint8 [T, {images.height}, {images.width}, 3] frames, got "
                             f"{getattr(frames, 'dtype', None)} {tuple(getattr(frames, 'shape', ()))}")
        if len(frames) < overlap:
            raise ValueError(f"continuing needs at least {overlap} frames of the clip (4 x latent window - 3), "
                             f"got {len(frames)}")
        usable = 1 + (len(frames) - 1) // 4 * 4  # the VAE encodes 1 + 4k frames
        with self.stage("vae_encode"):
            latents = cond.encode_video_latents(self.pipe, frames[len(frames) - usable:], self.device).cpu()
        context = continuing_context(images.start_latent, latents, window, self.request.end_strength)
        pending = cond.frames_to_pixels(frames[len(frames) - overlap:])
        assembler = {"overlap": overlap, "reverse": False, "emitted": 0, "pending": pending, "spill": None}
        return context.state_dict(), assembler

    def pending_frames(self, context_state: dict, decoded_latents: int) -> torch.Tensor:
        """The assembler's pending frames after a section, decoded again from the context's newest latents.

        After any section the pending frames are the untouched tail of its decoded frames (head,
        for the inverted order): a section decodes at least twice the overlap minus 3 frames, or
        exactly the overlap the first time. Decoding the same latents again gives the same frames.
        """
        context = LatentContext.from_state(context_state)
        if type(decoded_latents) is not int or not 0 < decoded_latents <= context.history.shape[2]:
            raise ValueError(f"invalid count of decoded latents {decoded_latents!r}")
        pixels = self.decode(context.newest(decoded_latents)).float().cpu()
        keep = min(4 * self.request.latent_window_size - 3, pixels.shape[2])
        pending = pixels[:, :, :keep] if self.plan.variant == "original" else pixels[:, :, pixels.shape[2] - keep:]
        return pending.clone()

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
        shape = self.latent_shape(images)
        noise = self.noise_fn(section.index, shape).to(self.device)
        sigmas = flow_sigmas(request.steps, request.shift or dynamic_shift(self.token_count(shape))).to(self.device)
        denoise = make_denoiser(self.velocity_fn(section, context, images, negative, shape), self.guidance)
        previews = PreviewStream(emit, self.preview_strip()) if request.preview else None
        callback = self.step_callback(section, position, emit, previews)
        try:
            with self.stage("sample"):
                return SAMPLERS[request.sampler](denoise, noise, sigmas, callback=callback).float().cpu(), False
        except _SectionEnded as ended:
            return (None, False) if ended.latents is None else (ended.latents.float().cpu(), True)
        finally:
            if previews is not None:
                previews.flush()

    def latent_shape(self, images: cond.ImageConditioning) -> tuple[int, ...]:
        channels = self.pipe.transformer.config.in_channels
        return (1, channels, self.request.latent_window_size, images.height // 8, images.width // 8)

    def token_count(self, shape: tuple[int, ...]) -> float:
        patch = self.pipe.transformer.config.patch_size
        return shape[2] * shape[3] * shape[4] / patch**2

    def velocity_fn(self, section, context, images, negative, shape):
        """The model call of this section: its fixed inputs (RoPE, history and image embeddings, text
        lengths) prepared once here, only the per-step part computed in each call."""
        request, transformer = self.request, self.pipe.transformer
        inputs = context.model_context(section, self.anchor(section, images)).as_kwargs(self.dtype)
        inputs["image_embeds"] = images.image_embeds(section.keyframe, request.vision_strength).to(self.dtype)
        inputs["guidance"] = torch.tensor([self.guidance.transformer_guidance], dtype=self.dtype, device=self.device)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        prepared = prepare_section(transformer, latent_shape=shape, **inputs)
        texts = {False: self.text_for(section.prompt), True: negative}
        branches = {use_negative: prepare_text(prepared, text.embeds, text.mask, text.pooled)
                    for use_negative, text in texts.items() if text is not None}
        caches = {False: self.new_cache(), True: self.new_cache()}  # cond and uncond never share state
        blocks = compiled_blocks(transformer) if request.compile else None

        def velocity(x: torch.Tensor, sigma: torch.Tensor, step: int, use_negative: bool) -> torch.Tensor:
            self.check_control()  # before every model call, computed by the step cache or not
            return section_forward(
                transformer, prepared, branches[use_negative], x.to(self.dtype),
                (sigma * 1000.0).expand(x.shape[0]).float(), cache=caches[use_negative], step=step,
                fp32_head=request.fp32_head, blocks=blocks,
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

    def new_cache(self) -> TeaCacheState | MagCacheState | None:
        request = self.request
        if request.step_cache == "teacache":
            return TeaCacheState(request.teacache_threshold, request.steps)
        if request.step_cache == "magcache":
            return MagCacheState(mag_ratios(self.plan.variant, request.steps), request.magcache_threshold,
                                 request.magcache_max_skips, request.magcache_retention)
        return None

    def step_callback(self, section: SectionPlan, position: int, emit: Emit, previews: PreviewStream | None):
        started = time.perf_counter()
        steps = self.request.steps

        def on_step(step_index: int, x: torch.Tensor, x0: torch.Tensor) -> None:
            done = step_index + 1
            elapsed = time.perf_counter() - started
            rate = done / elapsed if elapsed > 0 else 0.0
            remaining = (self.plan.num_sections - position) * steps - done
            emit(Progress(section.number, position, self.plan.num_sections, done, steps, elapsed, rate,
                          remaining / rate if rate else 0.0))
            if previews is not None:
                previews.push(x0, section.number, done)
            self.check_control()
            if done < steps and self.control.take_skip():
                raise _SectionEnded(x0)

        return on_step

    # ---- decoding ----------------------------------------------------------------------
    def preview_strip(self):
        """What a preview shows: the Tiny VAE's frames when the recipe has one, else the latent colours."""
        if self.tiny_vae is None:
            return None
        return lambda latents: tiny_vae_strip(latents, self.tiny_vae)

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
                   decoded_latents: int = 0, continue_frames: np.ndarray | None = None, **options) -> Done:
    """Generate on the calling thread, reporting events through `emit`; `options` go to `SectionLoop`."""
    loop = SectionLoop(pipe, request, sink, **options)
    return loop.run(emit or (lambda event: None), start_position, context_state, assembler_state,
                    decoded_latents=decoded_latents, continue_frames=continue_frames)
