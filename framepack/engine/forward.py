"""The transformer's forward pass, re-assembled so that what is fixed for a section is computed once.

diffusers' ``HunyuanVideoFramepackTransformer3DModel.forward`` rebuilds on every call what does not
change within a section: four RoPE tables, the clean-latent (1x/2x/4x history) patch embeddings, the
SigLIP image projection, and the valid text length (an ``int()`` of a device tensor, i.e. a host
sync). Here those are built once per section (`prepare_section`, `prepare_text`) and each sampler
step only embeds the noisy latents, the timestep and the text refiner (which depends on the
timestep), then runs the blocks. The operations and their order are the model's own, so the result
equals the model's forward (tests/test_teacache.py, tests/test_parity.py).

Two options the model's forward lacks:
- a step cache (`TeaCacheState`, `MagCacheState`) that replaces the blocks by the residual they
  added last time when its estimate says the output barely changes;
- an fp32 output head: ``norm_out`` / ``proj_out`` run in float32 on float32 inputs, as
  lllyasviel's reference does (``high_quality_fp32_output_for_inference``); with float32 weights
  it is the model's own head.

``compiled_blocks`` optionally wraps each block in ``torch.compile`` (one compiled wrapper per
loaded model; the modules themselves are not changed).
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from diffusers.utils import apply_lora_scale


class StepCache(Protocol):
    """Decides per sampler step whether the blocks run; keeps the residual they added."""

    residual: torch.Tensor | None
    needs_modulated: bool  # whether `should_compute` looks at the first block's modulated input

    def should_compute(self, step: int, modulated: torch.Tensor | None) -> bool: ...

    def record(self, computed: bool) -> None: ...


@dataclass
class SectionInputs:
    """What every model call of a section shares, whichever guidance branch makes it."""

    history: torch.Tensor  # embedded [4x | 2x | 1x clean] tokens, [B, n, D]
    rotary: tuple[torch.Tensor, torch.Tensor]  # cos, sin for [history | latent] tokens
    image: torch.Tensor  # projected SigLIP tokens, [B, 729, D]
    guidance: torch.Tensor | None
    latent_grid: tuple[int, int, int, int]  # batch, frames, height, width after patchifying

    @property
    def token_count(self) -> int:
        batch, frames, height, width = self.latent_grid
        return self.history.shape[1] + frames * height * width


@dataclass
class TextInputs:
    """One guidance branch's prompt, with its valid length read once per section.

    ``valid`` is the number of context tokens (image + real text) for batch 1, where the padding is
    simply cut off; ``mask`` is the [B, 1, 1, N] attention mask for larger batches.
    """

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    valid: int | None
    attention_mask: torch.Tensor | None


def prepare_section(transformer, *, latent_shape: tuple[int, ...], image_embeds, indices_latents, latents_clean,
                    indices_latents_clean, latents_history_2x, indices_latents_history_2x, latents_history_4x,
                    indices_latents_history_4x, guidance=None) -> SectionInputs:
    """RoPE for every token, the history embeddings and the image projection (the model's step 1)."""
    batch, _, frames, height, width = latent_shape
    patch, patch_t = transformer.config.patch_size, transformer.config.patch_size_t
    grid = (batch, frames // patch_t, height // patch, width // patch)
    device = latents_clean.device

    def rope(indices):
        return transformer.rope(frame_indices=indices, height=height, width=width, device=device)

    with weight_hooks(transformer):
        _enter_hooks(transformer, latents_clean)  # model / balanced offload: the weights come to the device now
        clean, history_2x, history_4x = transformer.clean_x_embedder(latents_clean, latents_history_2x, latents_history_4x)
        # The packing helper puts [4x | 2x | clean] before whatever latent tokens it gets: an empty
        # latent block gives the history alone, and the latent RoPE goes last in the same order.
        empty = clean[:, :0]
        history, rotary = transformer._pack_history_states(
            empty, clean, history_2x, history_4x, rope(indices_latents), rope(indices_latents_clean),
            rope(indices_latents_history_2x), rope(indices_latents_history_4x), grid[2], grid[3],
        )
        image = transformer.image_projection(image_embeds)
    return SectionInputs(history, tuple(rotary), image, guidance, grid)


def prepare_text(section: SectionInputs, states: torch.Tensor, mask: torch.Tensor,
                 pooled: torch.Tensor) -> TextInputs:
    """The valid context length (one host sync per section and branch, not one per step) or the mask."""
    valid = section.image.shape[1] + mask.sum(dim=1, dtype=torch.int)  # [B]
    if states.shape[0] == 1:
        return TextInputs(states, mask, pooled, int(valid[0]), None)
    positions = torch.arange(section.token_count + section.image.shape[1] + states.shape[1], device=states.device)
    attention = positions[None, :] < (section.token_count + valid)[:, None]  # [B, N]
    return TextInputs(states, mask, pooled, None, attention[:, None, None, :])


@apply_lora_scale("attention_kwargs")  # same LoRA scaling as the model's own forward
def section_forward(transformer, section: SectionInputs, text: TextInputs, hidden_states: torch.Tensor,
                    timestep: torch.Tensor, *, cache: StepCache | None = None, step: int | None = None,
                    fp32_head: bool = False, blocks: list[Callable] | None = None,
                    attention_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    with weight_hooks(transformer):
        return _section_forward(transformer, section, text, hidden_states, timestep, cache, step, fp32_head, blocks)


def _section_forward(transformer, section, text, hidden_states, timestep, cache, step, fp32_head, blocks):
    """The velocity for one sampler step, from the section's prepared inputs.

    Runs between the transformer's own offload hooks (``pre_forward`` / ``post_forward``), so model
    and balanced offload move it onto the device as for a plain call.
    """
    hidden_states = _enter_hooks(transformer, hidden_states)
    hidden = torch.cat([section.history, transformer.x_embedder(hidden_states)], dim=1)
    temb, _ = transformer.time_text_embed(timestep, text.pooled, section.guidance)
    context = torch.cat([section.image, transformer.context_embedder(text.states, timestep, text.mask)], dim=1)
    if text.valid is not None:
        context = context[:, : text.valid]
    block_input = hidden
    if cache is None:
        hidden = _run_blocks(transformer, hidden, context, temb, text.attention_mask, section.rotary, blocks)
    else:
        if step is None:
            raise ValueError("a step cache needs the sampler step of each model call")
        modulated = transformer.transformer_blocks[0].norm1(hidden, emb=temb)[0] if cache.needs_modulated else None
        compute = cache.should_compute(step, modulated)
        if compute:
            hidden = _run_blocks(transformer, hidden, context, temb, text.attention_mask, section.rotary, blocks)
            cache.residual = hidden - block_input
        else:
            hidden = block_input + cache.residual
        cache.record(compute)
    output = project_out(transformer, hidden, temb, section.latent_grid, fp32_head)
    hook = getattr(transformer, "_hf_hook", None)
    return output if hook is None else hook.post_forward(transformer, output)


def weight_hooks(transformer):
    """The context the model's own ``forward`` wrapper runs in, for code that calls its submodules.

    NNCF's weight compression replaces ``forward`` by a wrapper that decompresses the int8/int4
    weights inside a torch function mode; calling submodules directly needs that mode too.
    """
    wrapper = transformer.__dict__.get("forward")
    if type(wrapper).__name__ != "ForwardWithHooks":
        return contextlib.nullcontext()
    from nncf.torch.function_hook.hook_executor_mode import FunctionHookMode
    from nncf.torch.function_hook.wrapper import get_hook_storage

    storage = get_hook_storage(transformer)
    if storage.is_empty():
        return contextlib.nullcontext()
    return FunctionHookMode(model=transformer, hook_storage=storage)


def _enter_hooks(transformer, tensor: torch.Tensor) -> torch.Tensor:
    """What the model's own call does first: its accelerate hook (model, sequential or SD.Next's
    balanced offload) moves the weights and the input to the execution device."""
    hook = getattr(transformer, "_hf_hook", None)
    if hook is None:
        return tensor
    args, _ = hook.pre_forward(transformer, tensor)
    return args[0]


def _run_blocks(transformer, hidden, context, temb, attention_mask, rotary, blocks=None) -> torch.Tensor:
    """All dual- and single-stream blocks; returns the latent/history stream only."""
    for block in blocks or (*transformer.transformer_blocks, *transformer.single_transformer_blocks):
        hidden, context = block(hidden, context, temb, attention_mask, rotary)
    return hidden


def project_out(transformer, hidden: torch.Tensor, temb: torch.Tensor, latent_grid: tuple[int, int, int, int],
                fp32_head: bool = False) -> torch.Tensor:
    """Drop the history tokens, norm + project (in float32 with ``fp32_head``), unpatchify to [B, C, T, H, W]."""
    batch, frames, height, width = latent_grid
    patch, patch_t = transformer.config.patch_size, transformer.config.patch_size_t
    hidden = hidden[:, -frames * height * width:]
    head = fp32_head_modules(transformer, hidden.device) if fp32_head else None
    if head is not None:
        norm_out, proj_out = head
        hidden = proj_out(norm_out(hidden.float(), temb.float()))
    else:
        hidden = transformer.proj_out(transformer.norm_out(hidden, temb))
    hidden = hidden.reshape(batch, frames, height, width, -1, patch_t, patch, patch)
    hidden = hidden.permute(0, 4, 1, 5, 2, 6, 3, 7)  # B, C, T, pt, H, p, W, p
    return hidden.reshape(batch, hidden.shape[1], frames * patch_t, height * patch, width * patch)


_FP32_HEADS: "weakref.WeakKeyDictionary[Any, tuple[Any, ...]]" = weakref.WeakKeyDictionary()


def fp32_head_modules(transformer, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``norm_out`` and ``proj_out`` with float32 weights.

    The model's own modules when they already hold float32 weights on ``device``; None for
    quantized or sequentially offloaded ones (they run as they are); otherwise float32 copies (about 19 M parameters at full
    size), kept per set of weights: keyed on the tensors' identity, version and device, so moved
    or edited weights make a new copy. A LoRA on ``proj_out`` (its scale can change without
    touching a tensor) is copied on every call instead: a device-side copy of one layer.
    """
    norm_out, proj_out = transformer.norm_out, transformer.proj_out
    parameters = [*norm_out.parameters(), *proj_out.parameters()]
    if not all(_plain_float(p) for p in parameters):
        return None
    if all(p.dtype == torch.float32 and p.device == device for p in parameters):
        return norm_out, proj_out
    if _has_adapters(proj_out) or _has_adapters(norm_out):
        return _float32_copies(norm_out, proj_out, device)
    key = (device, *((id(p), p._version, p.device) for p in parameters))
    cached = _FP32_HEADS.get(transformer)
    if cached is None or cached[0] != key:
        cached = (key, _float32_copies(norm_out, proj_out, device))
        _FP32_HEADS[transformer] = cached
    return cached[1]


def _float32_copies(norm_out, proj_out, device) -> tuple[torch.nn.Module, torch.nn.Module]:
    # On the device the hidden states are on: under group offload the originals sit on the CPU.
    return tuple(copy.deepcopy(module).to(device=device, dtype=torch.float32) for module in (norm_out, proj_out))


def _plain_float(parameter: torch.Tensor) -> bool:
    """A float weight that is really there: not a quantized tensor subclass, not a meta placeholder
    that sequential offload fills in only inside the module's own call."""
    return (type(parameter) is torch.nn.Parameter and parameter.dtype.is_floating_point
            and parameter.device.type != "meta")


def _has_adapters(module) -> bool:
    return any("lora" in name for name, _ in module.named_modules())


_COMPILED: "weakref.WeakKeyDictionary[Any, list[Callable]]" = weakref.WeakKeyDictionary()


def compiled_blocks(transformer) -> list[Callable]:
    """``torch.compile`` wrappers of every block, built once per loaded transformer.

    The wrappers compile lazily on their first call (minutes at full size, seconds here) and
    recompile when shapes change (another resolution or window). Raises what the compiler raises
    when no toolchain is available.
    """
    blocks = _COMPILED.get(transformer)
    if blocks is None:
        blocks = [torch.compile(block, dynamic=False)
                  for block in (*transformer.transformer_blocks, *transformer.single_transformer_blocks)]
        _COMPILED[transformer] = blocks
    return blocks
