"""Saved and restored engine state: latent contexts, the frame assembler, its spill file, the loop.

Every state goes through `torch.save` / `torch.load(weights_only=True)` and a file, as a
checkpoint would, and a restored object must continue exactly like the one that was saved.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_runs import FAST, load_pipe, start_image

from framepack.engine.context import LatentContext, new_context
from framepack.request.events import Frames, Progress, SectionDone
from framepack.engine.frames import FrameAssembler, SpillFile
from framepack.engine.loop import SectionLoop, SectionState
from framepack.errors import OutputError
from framepack.request.model import build_request


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


# ------------------------------------------------------------------------------------- spill file


def frame_chunks(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(1, 40)), 4, 6, 3), dtype=np.uint8) for _ in range(count)]


def replayed(spill: SpillFile) -> np.ndarray:
    received: list[np.ndarray] = []
    spill.replay_reversed(received.append)
    return np.concatenate(received)


def test_a_reopened_spill_file_appends_and_replays_like_one_never_closed(tmp_path):
    chunks = frame_chunks(6)
    uninterrupted_dir, resumed_dir = tmp_path / "uninterrupted", tmp_path / "resumed"
    uninterrupted_dir.mkdir()
    resumed_dir.mkdir()
    uninterrupted = SpillFile(uninterrupted_dir)
    first = SpillFile(resumed_dir)
    for chunk in chunks:
        uninterrupted.append(chunk)
    for chunk in chunks[:3]:
        first.append(chunk)
    state = round_trip(first.state_dict(), tmp_path / "spill.pt")
    assert state["name"] == os.path.basename(first.path) and len(state["chunks"]) == 3
    first.close(remove=False)  # the process ends; the work folder keeps the file
    reopened = SpillFile.from_state(state, resumed_dir)
    for chunk in chunks[3:]:
        reopened.append(chunk)
    assert reopened.frame_count == uninterrupted.frame_count == sum(len(c) for c in chunks)
    np.testing.assert_array_equal(replayed(reopened), replayed(uninterrupted))
    np.testing.assert_array_equal(replayed(reopened), np.concatenate(chunks[::-1]))
    reopened.close()
    uninterrupted.close()
    assert list(resumed_dir.iterdir()) == list(uninterrupted_dir.iterdir()) == []


def test_bytes_written_after_the_state_are_cut_off(tmp_path):
    chunks = frame_chunks(4, seed=1)
    spill = SpillFile(tmp_path)
    for chunk in chunks[:2]:
        spill.append(chunk)
    state = spill.state_dict()
    spill.append(chunks[2])  # a section written after the checkpoint, by a process that then died
    spill.close(remove=False)
    reopened = SpillFile.from_state(state, tmp_path)
    assert os.path.getsize(reopened.path) == sum(c.nbytes for c in chunks[:2])
    reopened.append(chunks[3])
    np.testing.assert_array_equal(replayed(reopened), np.concatenate([chunks[3], chunks[1], chunks[0]]))
    reopened.close()


def test_a_spill_file_shorter_than_its_state_is_a_clear_error(tmp_path):
    spill = SpillFile(tmp_path)
    for chunk in frame_chunks(2, seed=2):
        spill.append(chunk)
    state = spill.state_dict()
    spill.close(remove=False)
    size = os.path.getsize(spill.path)
    os.truncate(spill.path, size - 1)
    with pytest.raises(OutputError, match=rf"holds {size - 1} bytes but its state records {size} bytes"):
        SpillFile.from_state(state, tmp_path)
    assert os.path.getsize(spill.path) == size - 1  # nothing was changed
    os.unlink(spill.path)
    with pytest.raises(OutputError, match="cannot reopen the spill file"):
        SpillFile.from_state(state, tmp_path)


@pytest.mark.parametrize("name", ["../framepack-spill-x.raw", "framepack-spill-x.raw/..", "/etc/passwd",
                                  "notes.txt", "framepack-spill-a\\..\\b.raw", 7])
def test_a_spill_state_cannot_name_another_file(tmp_path, name):
    with pytest.raises(ValueError, match="not a spill file name"):
        SpillFile.from_state({"name": name, "chunks": []}, tmp_path)


def test_a_spill_state_cannot_follow_a_symlink_or_open_a_fifo(tmp_path):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"x" * 100)
    (tmp_path / "framepack-spill-link.raw").symlink_to(victim)
    with pytest.raises(OutputError, match="cannot reopen"):
        SpillFile.from_state({"name": "framepack-spill-link.raw", "chunks": [[1, 2, 2, 3]]}, tmp_path)
    assert victim.read_bytes() == b"x" * 100
    os.mkfifo(tmp_path / "framepack-spill-fifo.raw")
    with pytest.raises(OutputError, match="not a regular file"):
        SpillFile.from_state({"name": "framepack-spill-fifo.raw", "chunks": [[1, 2, 2, 3]]}, tmp_path)


@pytest.mark.parametrize("chunks", [[[0, 2, 2, 3]], [[1, 2, 3]], "abc", [[1.5, 2, 2, 3]]])
def test_a_spill_state_needs_real_chunk_shapes(tmp_path, chunks):
    with pytest.raises(ValueError, match="chunks"):
        SpillFile.from_state({"name": "framepack-spill-x.raw", "chunks": chunks}, tmp_path)


# -------------------------------------------------------------------------------- frame assembler


def decoded_sections(count: int, first: int = 9, length: int = 13) -> list[torch.Tensor]:
    rng = torch.Generator().manual_seed(3)
    return [torch.rand(1, 3, first if i == 0 else length, 2, 2, generator=rng) * 2 - 1 for i in range(count)]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("saved_after", [1, 3, 5])
def test_a_restored_assembler_finishes_the_same_video(tmp_path, reverse, saved_after):
    sections = decoded_sections(5)
    whole: list[np.ndarray] = []
    uninterrupted = FrameAssembler(5, whole.append, reverse=reverse, spill_dir=tmp_path)
    for pixels in sections:
        uninterrupted.add(pixels)
    assert uninterrupted.finish() == sum(len(f) for f in whole)

    before: list[np.ndarray] = []
    work = tmp_path / "work"
    work.mkdir()
    first = FrameAssembler(5, before.append, reverse=reverse, spill_dir=work)
    for pixels in sections[:saved_after]:
        first.add(pixels)
    state = round_trip(first.state_dict(), tmp_path / "assembler.pt")
    assert state["emitted"] == sum(len(f) for f in before) == (0 if reverse else state["emitted"])
    first.close(remove_spill=False)
    after: list[np.ndarray] = []
    restored = FrameAssembler.from_state(state, after.append, spill_dir=work)
    for pixels in sections[saved_after:]:
        restored.add(pixels)
    assert restored.finish() == sum(len(f) for f in whole)
    np.testing.assert_array_equal(np.concatenate(before + after), np.concatenate(whole))
    assert list(work.iterdir()) == []


def test_a_damaged_assembler_state_is_refused(tmp_path):
    state = FrameAssembler(5, lambda f: None, reverse=False).state_dict()
    for change, message in [({"pending": torch.zeros(1, 3, 6, 2, 2)}, "pending"), ({"overlap": 0}, "overlap"),
                            ({"reverse": True}, "spill"), ({"emitted": -2}, "emitted")]:
        with pytest.raises(ValueError, match=message):
            FrameAssembler.from_state({**state, **change}, lambda f: None)
    inverted = FrameAssembler(5, lambda f: None, reverse=True, spill_dir=tmp_path)
    with pytest.raises(ValueError, match="folder holding the spill file"):
        FrameAssembler.from_state(inverted.state_dict(), lambda f: None)
    inverted.close()


# ----------------------------------------------------------------------------------- section loop

SECTIONS = 3
RESUME_SETTINGS = dict(FAST, duration=0.4 * SECTIONS, steps=3, teacache=True, cfg_zero_star=True)


@pytest.fixture(scope="module")
def resume_pipes(tiny_model_dir):
    return {variant: load_pipe(tiny_model_dir, variant) for variant in ("original", "f1")}


def resume_request(variant: str):
    extra = {"end_image": start_image(5), "keyframes": [{"image": start_image(6), "when": "2"}]} \
        if variant == "original" else {"keyframes": [{"image": start_image(6), "when": "2"}]}
    return build_request(**{**RESUME_SETTINGS, "variant": variant, "image": start_image(), **extra})


@pytest.mark.parametrize("variant", ["original", "f1"])
def test_a_run_continued_from_saved_state_gives_the_same_frames(resume_pipes, tmp_path, variant):
    """Sections [0..k) in one loop, the rest in a fresh loop from the saved state: the frames of one run."""
    request = resume_request(variant)
    work = tmp_path / "work"
    work.mkdir()
    frames: list[np.ndarray] = []
    saved: dict[int, tuple[Path, Path]] = {}

    def checkpoint(state: SectionState) -> None:
        # What a checkpoint keeps: the state in a file and the work folder as it is now (the spill file).
        folder = tmp_path / f"after-{state.position}"
        shutil.copytree(work, folder)
        path = folder / "state.pt"
        torch.save({"position": state.position, "context": state.context_state,
                    "assembler": state.assembler_state}, path)
        assert state.assembler_state["emitted"] == sum(len(f) for f in frames)
        saved[state.position] = (path, folder)

    loop = SectionLoop(resume_pipes[variant], request, frames.append, spill_dir=str(work),
                       on_section_state=checkpoint)
    done = loop.run(lambda event: None)
    uninterrupted = np.concatenate(frames)
    assert done.status == "completed" and len(uninterrupted) == done.frames == 4 * 3 * SECTIONS + 1
    assert sorted(saved) == list(range(0, SECTIONS + 1))  # before the first section, then after each

    for position in range(1, SECTIONS + 1):
        path, folder = saved[position]
        if position < SECTIONS and variant == "original":
            # A crash after the checkpoint: the spill file already holds part of the next section.
            later = next(folder.parent.glob(f"after-{position + 1}/framepack-spill-*.raw"))
            shutil.copy(later, next(folder.glob("framepack-spill-*.raw")))
        state = torch.load(path, weights_only=True)
        already = uninterrupted[: state["assembler"]["emitted"]]
        resumed: list[np.ndarray] = []
        events: list[object] = []
        done = SectionLoop(resume_pipes[variant], request, resumed.append, spill_dir=str(folder)).run(
            events.append, start_position=state["position"], context_state=state["context"],
            assembler_state=state["assembler"])
        video = np.concatenate([already, *resumed])
        np.testing.assert_array_equal(video, uninterrupted, err_msg=f"resumed after {position} sections")
        assert done.status == "completed" and done.frames == len(uninterrupted)
        assert [e.position for e in events if isinstance(e, SectionDone)] == list(range(position, SECTIONS))
        assert {e.position for e in events if isinstance(e, Progress)} == set(range(position, SECTIONS))
        assert [e.total for e in events if isinstance(e, Frames)][-1] == len(uninterrupted)
        assert list(folder.glob("framepack-spill-*")) == []  # a finished run removes its spill file


def test_a_state_that_belongs_to_another_request_is_refused_and_its_files_kept(resume_pipes, tmp_path):
    states: list[SectionState] = []
    request = resume_request("original")
    loop = SectionLoop(resume_pipes["original"], request, lambda f: None, spill_dir=str(tmp_path),
                       on_section_state=states.append)
    loop.run(lambda event: None, start_position=0)
    state = states[0]
    spill_state = state.assembler_state["spill"]
    (tmp_path / spill_state["name"]).write_bytes(b"\0" * 10**6)  # stands in for the (removed) spill file

    f1 = SectionLoop(resume_pipes["f1"], resume_request("f1"), lambda f: None, spill_dir=str(tmp_path))
    with pytest.raises(ValueError, match="does not belong to this request"):
        f1.run(lambda event: None, state.position, state.context_state, state.assembler_state)
    other_window = build_request(**{**RESUME_SETTINGS, "variant": "original", "image": start_image(),
                                    "latent_window_size": 4})
    with pytest.raises(ValueError, match="does not belong to this request"):
        SectionLoop(resume_pipes["original"], other_window, lambda f: None, spill_dir=str(tmp_path)).run(
            lambda event: None, state.position, state.context_state, state.assembler_state)
    assert (tmp_path / spill_state["name"]).stat().st_size == 10**6  # untouched


@pytest.mark.parametrize("start, with_state, message", [
    (1, False, "needs the state"), (-1, False, "not between"), (SECTIONS + 1, True, "not between"),
])
def test_a_start_position_is_checked_before_any_work(resume_pipes, start, with_state, message):
    loop = SectionLoop(resume_pipes["f1"], resume_request("f1"), lambda f: None)
    states = {"context_state": {}, "assembler_state": {}} if with_state else {}
    with pytest.raises(ValueError, match=message):
        loop.run(lambda event: None, start_position=start, **states)
    with pytest.raises(ValueError, match="both"):
        loop.run(lambda event: None, start_position=1, context_state={})


def test_the_replay_reads_batches_it_owns_without_mapping_the_file(tmp_path):
    from framepack.engine.frames import SPILL_READ_BATCH

    spill = SpillFile(tmp_path)
    chunk = np.arange(40 * 4 * 6 * 3, dtype=np.uint32).astype(np.uint8).reshape(40, 4, 6, 3)
    spill.append(chunk)
    batches: list[np.ndarray] = []
    spill.replay_reversed(batches.append)
    assert [len(batch) for batch in batches] == [SPILL_READ_BATCH, SPILL_READ_BATCH, 40 - 2 * SPILL_READ_BATCH]
    assert all(batch.flags.owndata and batch.flags.writeable for batch in batches)  # not views of a memory map
    np.testing.assert_array_equal(np.concatenate(batches), chunk)
    spill.close()
