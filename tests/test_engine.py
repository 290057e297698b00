"""The section loop on the tiny random-weight model: every mode, control, streaming and errors.

The tiny model produces noise-like frames, so these tests check structure (frame counts,
ranges, determinism, that settings matter) rather than what the video shows.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from framepack.engine.control import GenerationControl
from framepack.request.events import Done, Frames, Preview, Progress, SectionDone
from framepack.engine.frames import FrameAssembler
from framepack.engine.loop import SectionLoop, section_noise
from framepack.engine.pipeline import FramePackPipeline
from framepack.errors import InputError
from framepack.request.model import build_request
from framepack.models.loader import load_components
from framepack.models.recipe import local_recipe

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, seed=7, teacache=False, preview=False)
SECTION_SECONDS = 0.4  # 4 * lws frames at 30 fps: one section per 0.4 s


@pytest.fixture(scope="module")
def pipes(tiny_model_dir):
    return {variant: FramePackPipeline.from_components(load_components(local_recipe(tiny_model_dir, variant)))
            for variant in ("original", "f1")}


def image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def generate(pipes, sections: int = 2, control=None, noise_fn=None, **fields):
    settings = {**FAST, "image": image(), "prompt": "a red fox", "duration": SECTION_SECONDS * sections, **fields}
    request = build_request(**settings)
    frames, events = [], []
    loop = SectionLoop(pipes[request.variant], request, frames.append, control=control, noise_fn=noise_fn)
    done = loop.run(events.append)
    video = np.concatenate(frames) if frames else np.zeros((0,), np.uint8)
    return video, done, events, loop


def assert_differs(a: np.ndarray, b: np.ndarray) -> None:
    """A changed setting changes the video (the random tiny VAE decodes low-contrast frames)."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b).mean() > 0.05


def expected_frames(sections: int, window: int = 3) -> int:
    return 4 * window * sections + 1


@pytest.mark.parametrize("variant", ["original", "f1"])
def test_i2v_frame_count_range_and_determinism(pipes, variant):
    video, done, events, _ = generate(pipes, sections=3, variant=variant)
    assert video.shape == (expected_frames(3), 32, 32, 3)
    assert video.dtype == np.uint8 and done.status == "completed" and done.frames == len(video)
    assert video.std() > 1.0  # real pixels, not a constant
    again, *_ = generate(pipes, sections=3, variant=variant)
    np.testing.assert_array_equal(video, again)
    other_seed, *_ = generate(pipes, sections=3, variant=variant, seed=8)
    assert_differs(video, other_seed)
    sections_done = [e for e in events if isinstance(e, SectionDone)]
    assert [e.position for e in sections_done] == [0, 1, 2]
    order = [e.section_number for e in sections_done]
    assert order == ([3, 2, 1] if variant == "original" else [1, 2, 3])


def test_frames_follow_the_start_image(pipes):
    """Frame 0 is decoded from the start image's latent, so it tracks the image."""
    dark, *_ = generate(pipes, sections=1, variant="f1", image=np.full((32, 32, 3), 20, np.uint8))
    bright, *_ = generate(pipes, sections=1, variant="f1", image=np.full((32, 32, 3), 235, np.uint8))
    assert np.abs(dark[0].astype(int) - bright[0]).mean() > 0.1  # a random VAE decodes almost flat frames


def test_flf2v_end_image_changes_the_video_and_strength_zero_is_no_end(pipes):
    plain, *_ = generate(pipes, sections=2)
    with_end, *_ = generate(pipes, sections=2, end_image=image(5), vision_strength=0.5)
    assert with_end.shape == plain.shape
    assert_differs(with_end, plain)
    no_weight, *_ = generate(pipes, sections=2, end_image=image(5), end_strength=0.0, vision_strength=0.0)
    np.testing.assert_array_equal(no_weight, plain)


def test_f1_refuses_an_end_image():
    with pytest.raises(InputError, match="end image needs the original"):
        build_request(image=image(), end_image=image(1), variant="f1", prompt="x")


@pytest.mark.parametrize("blank", ["black", "white", "noise"])
def test_t2v_blank_starts(pipes, blank):
    video, done, *_ = generate(pipes, sections=1, image=None, blank_start=blank)
    assert video.shape == (expected_frames(1), 32, 32, 3) and done.status == "completed"


def test_t2v_blank_starts_differ(pipes):
    black, *_ = generate(pipes, sections=1, image=None, blank_start="black")
    white, *_ = generate(pipes, sections=1, image=None, blank_start="white")
    assert_differs(black, white)


def test_missing_image_needs_an_explicit_blank_start():
    with pytest.raises(InputError, match="blank start"):
        build_request(prompt="x")


def test_keyframes_steer_their_section(pipes):
    plain, *_ = generate(pipes, sections=3)
    keyed, _, _, loop = generate(pipes, sections=3, keyframes=[{"image": image(9), "when": "2"}])
    assert loop.plan.sections[1].keyframe == 0
    assert keyed.shape == plain.shape
    assert_differs(keyed, plain)


def test_keyframe_on_f1_steers_the_embedding(pipes):
    plain, *_ = generate(pipes, sections=2, variant="f1")
    keyed, *_ = generate(pipes, sections=2, variant="f1", keyframes=[{"image": image(9), "when": "0.5s"}],
                         vision_strength=1.0)
    assert_differs(keyed, plain)


def test_section_prompts_are_encoded_once_per_change(pipes):
    _, _, _, same = generate(pipes, sections=4)
    assert same.text_encodes == 1
    video, _, _, loop = generate(pipes, sections=4, section_prompts="1-2: sits\n3: runs\n4: runs")
    assert [s.prompt for s in loop.plan.sections] == ["a red fox sits", "a red fox sits", "a red fox runs", "a red fox runs"]
    assert loop.text_encodes == 2  # generation order 4,3 ("runs") then 2,1 ("sits")
    plain, *_ = generate(pipes, sections=4)
    assert_differs(video, plain)


def test_real_cfg_uses_the_negative_prompt(pipes):
    plain, *_ = generate(pipes, sections=1)
    guided, *_ = generate(pipes, sections=1, cfg=3.0, negative_prompt="blurry")
    other_negative, *_ = generate(pipes, sections=1, cfg=3.0, negative_prompt="static")
    assert_differs(guided, plain)
    assert_differs(guided, other_negative)
    rescaled, *_ = generate(pipes, sections=1, cfg=3.0, negative_prompt="blurry", cfg_rescale=0.7)
    assert_differs(rescaled, guided)


def test_cfg_zero_star_changes_the_result(pipes):
    plain, *_ = generate(pipes, sections=1)
    zero_star, *_ = generate(pipes, sections=1, cfg_zero_star=True)
    assert_differs(zero_star, plain)


def test_distilled_guidance_and_shift_matter(pipes):
    plain, *_ = generate(pipes, sections=1)
    assert np.abs(generate(pipes, sections=1, distilled_cfg=3.0)[0].astype(int) - plain).mean() > 0.1
    assert np.abs(generate(pipes, sections=1, shift=1.0)[0].astype(int) - plain).mean() > 0.1


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_each_sampler_runs_and_they_differ(pipes, sampler):
    video, done, *_ = generate(pipes, sections=2, sampler=sampler, steps=4)
    assert done.status == "completed" and video.shape[0] == expected_frames(2)
    other = "euler" if sampler == "unipc" else "unipc"
    assert np.abs(video.astype(int) - generate(pipes, sections=2, sampler=other, steps=4)[0]).mean() > 0.1


def test_teacache_skips_steps_and_stays_close(pipes):
    exact, *_ = generate(pipes, sections=2, steps=8, teacache=False)
    cached, *_ = generate(pipes, sections=2, steps=8, teacache=True, teacache_threshold=10.0)
    assert cached.shape == exact.shape
    difference = np.abs(cached.astype(int) - exact).mean()
    assert 0.0 < difference < 40.0
    never_skips, *_ = generate(pipes, sections=2, steps=8, teacache=True, teacache_threshold=0.0)
    assert np.abs(never_skips.astype(int) - exact).max() <= 1


@pytest.mark.parametrize("teacache, cfg", [(False, 2.0), (True, 1.0)])
def test_cfg_zero_star_skips_the_zero_init_model_calls_and_changes_nothing_else(pipes, monkeypatch, teacache, cfg):
    """The zero-init step's velocity is zero whatever the model says: no call, same frames.

    Compared with a run whose denoiser still calls the model there and drops the answer (what the
    loop did before); TeaCache at threshold 0 computes every call, so its decisions cannot differ.
    """
    from framepack.engine import guidance, loop as loop_module

    def denoiser_calling_every_step(velocity_fn, config):
        def denoise(x, sigma, step_index):
            v_cond = velocity_fn(x, sigma, step_index, False)
            v_uncond = velocity_fn(x, sigma, step_index, True) if config.uses_negative else None
            v = torch.zeros_like(v_cond) if config.zeroes(step_index) else guidance.combine(v_cond, v_uncond, config)
            return x - sigma.to(x.dtype) * v.to(x.dtype)
        return denoise

    calls = []
    real = loop_module.section_forward

    def counting(transformer, *args, **kwargs):
        calls.append(kwargs["step"])
        return real(transformer, *args, **kwargs)

    monkeypatch.setattr(loop_module, "section_forward", counting)
    settings = dict(sections=1, steps=4, cfg=cfg, negative_prompt="blurry", cfg_zero_star=True, teacache=teacache,
                    teacache_threshold=0.0)
    skipping, *_ = generate(pipes, **settings)
    skipped_calls = list(calls)
    calls.clear()
    monkeypatch.setattr(loop_module, "make_denoiser", denoiser_calling_every_step)
    calling, *_ = generate(pipes, **settings)
    np.testing.assert_array_equal(skipping, calling)
    branches = 2 if cfg != 1.0 else 1
    assert sorted(calls) == sorted([0, 1, 2, 3] * branches)
    assert sorted(skipped_calls) == sorted([1, 2, 3] * branches)  # step 0 is the zero-init step


def test_progress_and_preview_events(pipes):
    _, done, events, _ = generate(pipes, sections=2, preview=True, steps=3)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [(e.position, e.step) for e in progress] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert progress[-1].fraction == 1.0 and all(e.eta >= 0 for e in progress)
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 6
    assert previews[0].image.dtype == np.uint8 and previews[0].image.shape == (4, 3 * 4, 3)
    assert isinstance(events[-1], Done) and events[-1] is done
    assert {"text", "vision", "vae_encode", "sample", "vae_decode"} <= set(done.timings)


def test_stage_hooks_wrap_every_stage_and_the_control_times_them(pipes):
    from contextlib import contextmanager

    from framepack.engine.control import StageHooks

    class Recording(StageHooks):
        def __init__(self):
            self.calls = []

        @contextmanager
        def stage(self, name):
            self.calls.append(("enter", name))
            yield
            self.calls.append(("exit", name))

    hooks = Recording()
    request = build_request(**{**FAST, "image": image(), "prompt": "x", "duration": SECTION_SECONDS, "cfg": 2.0})
    done = SectionLoop(pipes["original"], request, lambda f: None, hooks=hooks).run(lambda e: None)
    entered = [name for kind, name in hooks.calls if kind == "enter"]
    assert entered == ["vision", "vae_encode", "text", "text", "sample", "vae_decode"]  # negative prompt first
    assert [name for kind, name in hooks.calls if kind == "exit"] == entered  # never nested
    assert set(done.timings) == set(entered)


def test_stop_mid_section_keeps_finished_frames(pipes):
    control = GenerationControl()
    frames = []

    def stop_in_second_section(event):
        if isinstance(event, Progress) and event.position == 1 and event.step == 1:
            control.stop()

    request = build_request(**{**FAST, "image": image(), "prompt": "x", "duration": SECTION_SECONDS * 3, "variant": "f1"})
    done = SectionLoop(pipes["f1"], request, frames.append, control=control).run(stop_in_second_section)
    assert done.status == "interrupted"
    assert done.frames == sum(len(f) for f in frames) == 4 * 3 + 1  # the whole first section, nothing half-sampled


def test_stop_in_inverted_mode_flushes_the_end_of_the_video(pipes):
    control = GenerationControl()
    frames = []

    def stop_in_second_section(event):
        if isinstance(event, Progress) and event.position == 1:
            control.stop()

    request = build_request(**{**FAST, "image": image(), "prompt": "x", "duration": SECTION_SECONDS * 3})
    done = SectionLoop(pipes["original"], request, frames.append, control=control).run(stop_in_second_section)
    assert done.status == "interrupted" and done.frames == 4 * 3 - 3


@pytest.mark.parametrize("teacache", [False, True])
def test_skip_section_ends_it_early(pipes, teacache):
    """Skip acts at the next step whether TeaCache computes or skips it (issue 8, item 9)."""
    control = GenerationControl()

    def skip_at_first_step(event):
        if isinstance(event, Progress) and event.position == 0 and event.step == 1:
            control.skip()

    events = []
    request = build_request(**{**FAST, "image": image(), "prompt": "x", "duration": SECTION_SECONDS * 2, "steps": 4,
                               "teacache": teacache, "teacache_threshold": 0.5})
    done = SectionLoop(pipes["original"], request, lambda f: None, control=control).run(
        lambda e: (events.append(e), skip_at_first_step(e)))
    steps = [(e.position, e.step) for e in events if isinstance(e, Progress)]
    assert steps[:2] == [(0, 1), (1, 1)] and len(steps) == 5
    assert [e.skipped for e in events if isinstance(e, SectionDone)] == [True, False]
    assert done.status == "completed" and done.frames == expected_frames(2)


def test_pause_and_resume_a_running_loop(pipes):
    reference, *_ = generate(pipes, sections=2)
    control = GenerationControl()
    request = build_request(**{**FAST, "image": image(), "prompt": "a red fox", "duration": SECTION_SECONDS * 2})
    paused_at = threading.Event()
    steps_seen = []
    frames = []

    def on_event(event):
        if isinstance(event, Progress):
            steps_seen.append((event.position, event.step))
            if len(steps_seen) == 1:
                control.pause()
                paused_at.set()

    worker = threading.Thread(target=lambda: SectionLoop(pipes["original"], request, frames.append,
                                                         control=control).run(on_event))
    worker.start()
    assert paused_at.wait(30)
    threading.Event().wait(0.3)
    assert steps_seen == [(0, 1)] and worker.is_alive()  # held between steps
    control.resume()
    worker.join(60)
    assert not worker.is_alive()
    np.testing.assert_array_equal(np.concatenate(frames), reference)


@pytest.mark.parametrize("teacache, cfg", [(False, 1.0), (True, 1.0), (True, 2.0)])
def test_stop_acts_before_the_next_model_call_whether_teacache_computes_or_skips(pipes, monkeypatch, teacache, cfg):
    """Issue 8, item 9: a Stop that arrives during a model call ends the run before the next one.

    With TeaCache most calls skip the blocks and are far shorter than computed ones; a Stop must
    not wait for a step boundary that a run of skipped calls races past (nor, with real CFG,
    for the second pass of the step).
    """
    from framepack.engine import loop as loop_module

    control = GenerationControl()
    caches = []
    real = loop_module.section_forward

    def cancel_during_the_ninth_call(transformer, *args, **kwargs):
        caches.append(kwargs["cache"])
        if len(caches) == 9:
            control.stop()  # what DELETE /jobs/{id}, the tab's Stop or Ctrl-C do, from another thread
        return real(transformer, *args, **kwargs)

    monkeypatch.setattr(loop_module, "section_forward", cancel_during_the_ninth_call)
    _, done, events, _ = generate(pipes, sections=2, control=control, steps=25, teacache=teacache,
                                  teacache_threshold=0.5, cfg=cfg)
    assert done.status == "interrupted"
    assert len(caches) == 9  # not one model call after the Stop
    stopped_in_step = 9 if cfg == 1.0 else 5
    assert max(e.step for e in events if isinstance(e, Progress)) <= stopped_in_step
    if teacache:
        assert sum(cache.skipped_steps for cache in {id(c): c for c in caches}.values()) > 0  # skipped calls ran


def test_pause_holds_the_next_model_call_in_the_middle_of_a_step(pipes, monkeypatch):
    from framepack.engine import loop as loop_module

    control = GenerationControl()
    calls = []
    real = loop_module.section_forward

    def pause_at_the_third_call(transformer, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            control.pause()
        return real(transformer, *args, **kwargs)

    monkeypatch.setattr(loop_module, "section_forward", pause_at_the_third_call)
    worker = threading.Thread(target=generate, args=(pipes,), kwargs=dict(sections=1, control=control, steps=6,
                                                                         teacache=True, cfg=2.0))
    worker.start()
    wait = threading.Event()
    try:
        while len(calls) < 3 and worker.is_alive():
            wait.wait(0.01)
        wait.wait(0.3)
        assert len(calls) == 3 and worker.is_alive()  # the fourth call (the step's second pass) waits
    finally:
        control.resume()
        worker.join(60)
    assert not worker.is_alive() and len(calls) == 12


def test_f1_streams_frames_before_the_last_section(pipes):
    events = []
    generate(pipes, sections=3, variant="f1", noise_fn=None)[2]
    _, _, events, _ = generate(pipes, sections=3, variant="f1")
    kinds = [type(e).__name__ for e in events]
    first_frames, last_section = kinds.index("Frames"), len(kinds) - 1 - kinds[::-1].index("SectionDone")
    assert first_frames < last_section


def test_inverted_mode_spills_to_disk_and_cleans_up(pipes, tmp_path):
    request = build_request(**{**FAST, "image": image(), "prompt": "x", "duration": SECTION_SECONDS * 3})
    seen_files = []
    frames = []

    def watch(event):
        if isinstance(event, SectionDone):
            seen_files.extend(p.name for p in tmp_path.iterdir())

    SectionLoop(pipes["original"], request, frames.append, spill_dir=str(tmp_path)).run(watch)
    assert any(name.startswith("framepack-spill-") for name in seen_files)
    assert list(tmp_path.iterdir()) == []
    assert sum(len(f) for f in frames) == expected_frames(3)


def test_memory_holds_only_the_overlap():
    """The assembler never keeps more than the overlap, however long the video."""
    received = []
    assembler = FrameAssembler(overlap=5, sink=received.append, reverse=False)
    assembler.add(torch.zeros(1, 3, 9, 4, 4))
    for _ in range(50):
        assembler.add(torch.zeros(1, 3, 13, 4, 4))
        assert assembler.pending.shape[2] == 5
    assert assembler.finish() == 9 + 50 * 8


@pytest.mark.parametrize("reverse", [False, True])
def test_assembler_matches_a_full_history_cross_fade(reverse):
    """Streaming blend == the reference's whole-history soft append, frame for frame."""
    overlap = 5
    rng = torch.Generator().manual_seed(0)
    sections = [torch.rand(1, 3, 9, 2, 2, generator=rng) * 2 - 1] + [
        torch.rand(1, 3, 13, 2, 2, generator=rng) * 2 - 1 for _ in range(4)]
    history = sections[0]
    for current in sections[1:]:
        weights = torch.linspace(1, 0, overlap).view(1, 1, -1, 1, 1)
        if reverse:
            blend = weights * current[:, :, -overlap:] + (1 - weights) * history[:, :, :overlap]
            history = torch.cat([current[:, :, :-overlap], blend, history[:, :, overlap:]], dim=2)
        else:
            blend = weights * history[:, :, -overlap:] + (1 - weights) * current[:, :, :overlap]
            history = torch.cat([history[:, :, :-overlap], blend, current[:, :, overlap:]], dim=2)
    received = []
    assembler = FrameAssembler(overlap, received.append, reverse=reverse)
    for section in sections:
        assembler.add(section)
    assembler.finish()
    streamed = np.concatenate(received)
    expected = ((history[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(streamed, expected)


def test_section_noise_is_per_section_and_reproducible():
    a = section_noise(1, 0, (1, 2, 3))
    np.testing.assert_array_equal(a, section_noise(1, 0, (1, 2, 3)))
    assert not torch.equal(a, section_noise(1, 1, (1, 2, 3)))
    assert not torch.equal(a, section_noise(2, 0, (1, 2, 3)))


def test_changing_one_section_prompt_keeps_other_sections_noise(pipes):
    """Per-section seeds: sections sampled before the changed one come out identical."""
    a, *_ = generate(pipes, sections=3, variant="f1", section_prompts="3: jumps")
    b, *_ = generate(pipes, sections=3, variant="f1", section_prompts="3: sleeps")
    untouched = 4 * 3 * 2 + 1 - (4 * 3 - 3)  # frames final before section 3's blend region
    np.testing.assert_array_equal(a[:untouched], b[:untouched])
    assert np.abs(a[untouched:].astype(int) - b[untouched:]).mean() > 0.1
