"""Shared by the tests that run the tiny model end to end (F1, 32 px, 2 steps, one section)."""

from __future__ import annotations

import numpy as np

from framepack.engine.loop import SectionLoop
from framepack.engine.pipeline import FramePackPipeline
from framepack.request.model import build_request
from framepack.models.loader import load_components
from framepack.models.recipe import local_recipe

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, seed=7, teacache=False, preview=False,
            prompt="a red fox", duration=0.4, variant="f1")


def load_pipe(root, variant: str = "f1") -> FramePackPipeline:
    return FramePackPipeline.from_components(load_components(local_recipe(root, variant)))


def start_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def generate(pipe, **fields) -> np.ndarray:
    """All frames of one run as int16, so differences between runs cannot wrap around."""
    frames: list[np.ndarray] = []
    request = build_request(**{**FAST, "image": start_image(), **fields})
    SectionLoop(pipe, request, frames.append).run(lambda event: None)
    return np.concatenate(frames).astype(np.int16)
