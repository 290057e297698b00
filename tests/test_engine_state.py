"""Saved and restored engine state: latent contexts.

Every state goes through `torch.save` / `torch.load(weights_only=True)` and a file, as a
checkpoint would, and a restored object must continue exactly like the one that was saved.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from framepack.engine.context import LatentContext, new_context


def round_trip(state, path: Path):
    """What a checkpoint does: write the state to a file, read it back without unpickling code."""
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def latents(seed: int, frames: int, channels: int = 4, size: int = 2) -> torch.Tensor:
    return torch.randn(1, channels, frames, size, size, generator=torch.Generator().manual_seed(seed))


def section(index: int, padding: int = 0):
    return SimpleNamespace(index=index, padding=padding)


def model_inputs(context: LatentContext, sec, anchor=None) -> dict:
    return context.model_context(sec, anchor).as_kwargs(torch.float32)


def assert_same_inputs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------- context

# Generation order of four sections: the inverted model samples the last one first.
ORDERS = {"original": [3, 2, 1, 0], "f1": [0, 1, 2, 3]}


@pytest.mark.parametrize("variant", ["original", "f1"])
@pytest.mark.parametrize("saved_after", [0, 1, 3])
@pytest.mark.parametrize("window", [3, 9, 12])  # history shorter than, equal to and longer than two windows
def test_a_restored_context_continues_like_the_original(tmp_path, variant, saved_after, window):
    start = latents(0, 1)
    original = new_context(variant, start, window, anchor_strength=0.6)
    order = ORDERS[variant]
    anchors = {1: latents(50, 1)}  # one keyframe section

    def step(context, position):
        index = order[position]
        sec = section(index, padding=index)
        inputs = model_inputs(context, sec, anchors.get(index))
        return inputs, context.add(sec, latents(10 + position, window)).clone()

    for position in range(saved_after):
        step(original, position)
    restored = LatentContext.from_state(round_trip(original.state_dict(), tmp_path / "context.pt"))
    assert type(restored) is type(original) and restored.variant == variant
    for position in range(saved_after, len(order)):
        expected_inputs, expected_decode = step(original, position)
        inputs, decode = step(restored, position)
        assert_same_inputs(inputs, expected_inputs)
        assert torch.equal(decode, expected_decode)
    assert restored.generated == original.generated


def test_the_same_calls_serve_both_variants():
    """One interface: the loop's calls, unchanged, for either order; F1 has no clean frame after the window."""
    for variant in ("original", "f1"):
        context = new_context(variant, latents(0, 1), 3)
        decoded = context.add(section(0), latents(1, 3))
        assert decoded.shape[2] == 4  # the start frame and the window, either way round
        inputs = context.model_context(section(0), None)
        assert inputs.latents_clean.shape[2] == 2
    forward = new_context("f1", latents(0, 1), 3)
    assert_same_inputs(model_inputs(forward, section(1), latents(9, 1)), model_inputs(forward, section(1), None))


def test_the_inverted_anchor_is_a_weighted_average_with_the_following_frame():
    context = new_context("original", latents(0, 1), 3, anchor_strength=0.25)
    context.add(section(2), latents(1, 3))
    anchor = latents(2, 1)
    clean = context.model_context(section(1), anchor).latents_clean
    torch.testing.assert_close(clean[:, :, 1:], 0.25 * anchor + 0.75 * context.history[:, :, :1])
    full = new_context("original", latents(0, 1), 3, anchor_strength=1.0)
    assert torch.equal(full.model_context(section(1), anchor).latents_clean[:, :, 1:], anchor)


def test_the_saved_history_is_compact_and_detached_from_the_live_one():
    context = new_context("f1", latents(0, 1), 3)
    for position in range(5):
        context.add(section(position), latents(position, 3))
    state = context.state_dict()
    history = state["history"]
    assert history.untyped_storage().nbytes() == history.numel() * history.element_size()
    context.add(section(5), latents(9, 3))
    assert not torch.equal(history, context.history)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("history"), "incomplete"),
    (lambda s: s.update(variant="f2"), "unknown model variant"),
    (lambda s: s.update(window=0), "window"),
    (lambda s: s.update(history=torch.zeros(1, 4, 5, 2, 2)), "does not fit"),
    (lambda s: s.update(history=torch.zeros(1, 4, 19, 3, 2)), "does not fit"),
    (lambda s: s.update(generated=-1), "generated"),
    (lambda s: s.update(start_latent=torch.zeros(1, 4, 2, 2, 2)), "start latent"),
])
def test_a_damaged_context_state_is_refused(change, message):
    state = new_context("original", latents(0, 1), 3).state_dict()
    change(state)
    with pytest.raises(ValueError, match=message):
        LatentContext.from_state(state)
