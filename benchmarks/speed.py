#!/usr/bin/env python
"""Speed of one section's model calls on the tiny transformer: our section-cached forward against
the per-call path it replaced and against diffusers' own forward.

Three ways to make the same ``steps`` model calls of one inverted-mode section (window ``--window``,
``--size`` px, history 1+2+16 latents, 729 image tokens as SigLIP gives, batch 1):

- ``diffusers``: ``HunyuanVideoFramepackTransformer3DModel.__call__`` with the full arguments
  each step (what diffusers' pipeline does);
- ``per-call``: our re-assembled forward preparing everything on every call (RoPE x4, history
  embeddings, image projection, text length): the TeaCache path before issue 12;
- ``section-cached``: the same forward with the section's fixed inputs prepared once
  (what the section loop does now).

TeaCache is off in all three (every call runs the blocks), so the numbers compare the overheads
around the blocks; at full size the blocks dominate and the gain shrinks, at tiny sizes the
overhead is most of the time. Runs alternate, best of ``--runs`` kept (the machine is shared).
The last lines print ``per-call / section-cached`` and ``diffusers / section-cached`` ratios
(above 1: the section-cached forward is faster).

    .venv/bin/python benchmarks/speed.py            # 64 px, window 9, 25 steps, 5 runs
    .venv/bin/python benchmarks/speed.py --size 128 --window 9 --steps 25 --runs 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusers import HunyuanVideoFramepackTransformer3DModel  # noqa: E402

from framepack.engine import forward  # noqa: E402
from framepack.engine.teacache import split_inputs  # noqa: E402
from framepack.models.tiny import TRANSFORMER_CONFIG  # noqa: E402

IMAGE_TOKENS, TEXT_TOKENS, VALID_TEXT = 729, 256, 40


def section_kwargs(transformer, size: int, window: int) -> dict:
    """One inverted-mode section's model arguments, padding 0: [pre 1 | window | post 1 | 2x 2 | 4x 16]."""
    g = torch.Generator().manual_seed(0)
    config = transformer.config
    h = w = size // 8

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    pre, latent, post, x2, x4 = torch.arange(1 + window + 1 + 2 + 16).split([1, window, 1, 2, 16])
    mask = torch.zeros(1, TEXT_TOKENS, dtype=torch.long)
    mask[:, :VALID_TEXT] = 1
    return dict(
        hidden_states=randn(1, config.in_channels, window, h, w), timestep=torch.tensor([900.0]),
        encoder_hidden_states=randn(1, TEXT_TOKENS, config.text_embed_dim), encoder_attention_mask=mask,
        pooled_projections=randn(1, config.pooled_projection_dim),
        image_embeds=randn(1, IMAGE_TOKENS, config.image_proj_dim), indices_latents=latent,
        guidance=torch.tensor([10_000.0]), latents_clean=randn(1, config.in_channels, 2, h, w),
        indices_latents_clean=torch.cat([pre, post]), latents_history_2x=randn(1, config.in_channels, 2, h, w),
        indices_latents_history_2x=x2, latents_history_4x=randn(1, config.in_channels, 16, h, w),
        indices_latents_history_4x=x4,
    )


def time_diffusers(transformer, kwargs, steps):
    started = time.perf_counter()
    for step in range(steps):
        transformer(**{**kwargs, "timestep": torch.tensor([1000.0 - 30 * step])}, return_dict=False)
    return time.perf_counter() - started


def time_per_call(transformer, kwargs, steps):
    started = time.perf_counter()
    for step in range(steps):
        section, text, call = split_inputs(transformer, **{**kwargs, "timestep": torch.tensor([1000.0 - 30 * step])})
        forward.section_forward(transformer, section, text, call["hidden_states"], call["timestep"])
    return time.perf_counter() - started


def time_section_cached(transformer, kwargs, steps):
    started = time.perf_counter()
    section, text, call = split_inputs(transformer, **kwargs)
    for step in range(steps):
        forward.section_forward(transformer, section, text, call["hidden_states"], torch.tensor([1000.0 - 30 * step]))
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=9)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformer = HunyuanVideoFramepackTransformer3DModel(**TRANSFORMER_CONFIG).eval()
    kwargs = section_kwargs(transformer, args.size, args.window)
    ways = {"diffusers": time_diffusers, "per-call": time_per_call, "section-cached": time_section_cached}
    best = {name: float("inf") for name in ways}
    with torch.no_grad():
        for name, way in ways.items():  # warm-up
            way(transformer, kwargs, 2)
        for _ in range(args.runs):
            for name, way in ways.items():
                best[name] = min(best[name], way(transformer, kwargs, args.steps))
    print(f"tiny transformer, {args.size} px, window {args.window}, {args.steps} calls, "
          f"{args.threads} thread(s), best of {args.runs}")
    for name, seconds in best.items():
        print(f"  {name:15s} {seconds:8.3f} s  ({1000 * seconds / args.steps:.1f} ms per call)")
    print(f"per-call / section-cached: {best['per-call'] / best['section-cached']:.2f}")
    print(f"diffusers / section-cached: {best['diffusers'] / best['section-cached']:.2f}")


if __name__ == "__main__":
    main()
