"""Issue 12's speed and reproduction options on the tiny model: the section-cached forward, the fp32
output head, MagCache, torch.compile of the blocks and the reference app's noise stream."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.engine import forward
from framepack.engine.conditioning import encode_latent
from framepack.engine.loop import SectionLoop
from framepack.engine.magcache import MAG_RATIOS_25, MagCacheState, mag_ratios
from framepack.engine.noise import ReferenceNoise
from framepack.engine.teacache import run_transformer, split_inputs
from framepack.request.model import build_request
from tests.test_engine import FAST, SECTION_SECONDS, generate, image, pipes  # noqa: F401 - the fixture
from tests.test_teacache import make_inputs, section_inputs, transformer  # noqa: F401 - the fixture


# ---------------------------------------------------------------------------- section-cached forward

def test_prepared_inputs_are_reused_across_steps_and_give_the_model_output(transformer):
    """One preparation per section serves every step: each step equals the model's own forward."""
    steps = section_inputs()
    with torch.no_grad():
        section, text, _ = split_inputs(transformer, **steps[0])
        for kwargs in steps:
            ours = forward.section_forward(transformer, section, text, kwargs["hidden_states"], kwargs["timestep"])
            torch.testing.assert_close(ours, transformer(**kwargs, return_dict=False)[0], atol=1e-5, rtol=1e-5)
    assert isinstance(text.valid, int)  # the valid length was read once, not per step


# ---------------------------------------------------------------------------- fp32 head

def test_fp32_head_is_the_models_own_head_for_a_float32_model(transformer):
    kwargs = make_inputs(3, 0.6)
    with torch.no_grad():
        torch.testing.assert_close(run_transformer(transformer, None, fp32_head=True, **kwargs),
                                   run_transformer(transformer, None, **kwargs), atol=1e-6, rtol=1e-6)
    assert forward.fp32_head_modules(transformer, torch.device("cpu")) == (transformer.norm_out, transformer.proj_out)


def test_fp32_head_of_a_bf16_model_is_closer_to_full_precision(transformer):
    """bf16 blocks, then the head in float32: nearer the float32 model's output than a bf16 head."""
    import copy

    low = copy.deepcopy(transformer).to(torch.bfloat16)
    kwargs = make_inputs(4, 0.5)
    low_kwargs = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in kwargs.items()}
    with torch.no_grad():
        bf16_head = run_transformer(low, None, **low_kwargs).float()
        fp32_head = run_transformer(low, None, fp32_head=True, **low_kwargs)
        # the float32 reference: the same bf16 blocks, the head with the float32 model's weights
        section, text, call = split_inputs(low, **low_kwargs)
        hidden = torch.cat([section.history, low.x_embedder(call["hidden_states"])], dim=1)
        temb, _ = low.time_text_embed(call["timestep"], text.pooled, section.guidance)
        context = torch.cat([section.image, low.context_embedder(text.states, call["timestep"], text.mask)], 1)
        hidden = forward._run_blocks(low, hidden, context[:, : text.valid], temb, None, section.rotary)
        grid = section.latent_grid
        full = forward.project_out(transformer, hidden.float(), temb.float(), grid)
    assert fp32_head.dtype == torch.float32
    assert (fp32_head - full).abs().max() < (bf16_head - full).abs().max()
    copies = forward.fp32_head_modules(low, torch.device("cpu"))
    assert copies is forward.fp32_head_modules(low, torch.device("cpu"))  # made once per set of weights
    with torch.no_grad():
        low.proj_out.weight.mul_(2.0)  # weights edited in place (a fused LoRA): a fresh copy
    assert forward.fp32_head_modules(low, torch.device("cpu"))[1].weight.equal(low.proj_out.weight.float())


def test_fp32_head_is_the_default_and_can_be_turned_off(pipes):
    assert build_request(prompt="x", blank_start="black").fp32_head is True
    on, *_ = generate(pipes, sections=1)
    off, *_ = generate(pipes, sections=1, fp32_head=False)
    np.testing.assert_array_equal(on, off)  # the tiny model is float32: its head already is


# ---------------------------------------------------------------------------- MagCache

def test_mag_ratios_follow_the_calibration_and_stretch_to_other_step_counts():
    assert mag_ratios("original", 25) == MAG_RATIOS_25["original"]
    assert len(mag_ratios("f1", 50)) == 50 and mag_ratios("f1", 50)[-1] == MAG_RATIOS_25["f1"][-1]
    assert mag_ratios("original", 1) == (MAG_RATIOS_25["original"][-1],)


def test_magcache_decisions_keep_early_steps_cap_skips_and_compute_the_last():
    ratios = [1.0] * 12
    cache = MagCacheState(ratios, threshold=1.0, max_skips=2, retention=0.25)
    decisions = []
    for step in range(12):
        compute = cache.should_compute(step)
        if compute:
            cache.residual = torch.zeros(1)
        cache.record(compute)
        decisions.append(compute)
    # steps 0-2 retained, then at most two skips in a row, and the last step computes
    assert decisions[:3] == [True, True, True]
    assert decisions[3:] == [False, False, True, False, False, True, False, False, True]
    assert cache.skipped_steps == 6


def test_magcache_refuses_a_step_whose_ratio_deviates_or_errors_add_up():
    deviating = MagCacheState([1.0, 1.0, 1.2, 1.0], threshold=1.0, max_skips=3, retention=0.0)
    deviating.residual = torch.zeros(1)
    assert deviating.should_compute(1) is False
    assert deviating.should_compute(2) is True  # |1 - 1.2| > 0.06
    tight = MagCacheState([1.0, 0.95, 0.95, 0.95, 1.0], threshold=0.1, max_skips=5, retention=0.0)
    tight.residual = torch.zeros(1)
    assert [tight.should_compute(s) for s in (1, 2, 3)] == [False, True, False]  # 0.05 + 0.0975 > 0.1


def test_magcache_skips_steps_and_changes_the_video_little(pipes):
    exact, *_ = generate(pipes, sections=2, steps=12, teacache=False)
    cached, _, _, loop = generate(pipes, sections=2, steps=12, cache="magcache", magcache_threshold=0.5)
    assert cached.shape == exact.shape
    difference = np.abs(cached.astype(int) - exact).mean()
    assert 0.0 < difference < 10.0
    assert isinstance(loop.new_cache(), MagCacheState)
    assert build_request(prompt="x", blank_start="black", teacache=False).step_cache == "none"
    assert build_request(prompt="x", blank_start="black").step_cache == "teacache"
    assert build_request(prompt="x", blank_start="black", teacache=False, cache="magcache").step_cache == "magcache"


def test_magcache_skips_model_calls_in_the_loop(pipes, monkeypatch):
    from framepack.engine import loop as loop_module

    states = {}
    real = loop_module.section_forward

    def recording(transformer, *args, **kwargs):
        states[id(kwargs["cache"])] = kwargs["cache"]
        return real(transformer, *args, **kwargs)

    monkeypatch.setattr(loop_module, "section_forward", recording)
    generate(pipes, sections=1, steps=12, cache="magcache", magcache_threshold=0.5)
    (state,) = states.values()
    assert state.skipped_steps > 0 and state.computed_steps + state.skipped_steps == 12


# ---------------------------------------------------------------------------- torch.compile

def test_compiled_blocks_give_the_same_output(transformer):
    kwargs = make_inputs(5, 0.4)
    with torch.no_grad():
        section, text, call = split_inputs(transformer, **kwargs)
        plain = forward.section_forward(transformer, section, text, call["hidden_states"], call["timestep"])
        try:
            blocks = forward.compiled_blocks(transformer)
            compiled = forward.section_forward(transformer, section, text, call["hidden_states"], call["timestep"],
                                               blocks=blocks)
        except Exception as error:  # noqa: BLE001 - no compiler toolchain on this machine
            pytest.skip(f"torch.compile is not available here: {type(error).__name__}: {error}"[:300])
    torch.testing.assert_close(compiled, plain, atol=1e-4, rtol=1e-4)
    assert forward.compiled_blocks(transformer) is blocks  # compiled once per model


# ---------------------------------------------------------------------------- reference noise

@pytest.mark.parametrize("variant", ["original", "f1"])
def test_reference_noise_is_one_generator_in_generation_order(pipes, variant):
    drawn = []

    class Recording(ReferenceNoise):
        def __call__(self, section_index, shape):
            noise = super().__call__(section_index, shape)
            drawn.append((section_index, noise))
            return noise

    seed = 31337
    request = build_request(**{**FAST, "image": image(), "prompt": "a red fox", "duration": SECTION_SECONDS * 3,
                               "variant": variant, "seed": seed, "noise": "reference"})
    loop = SectionLoop(pipes[variant], request, lambda frames: None, noise_fn=Recording(seed))
    loop.run(lambda event: None)
    generator = torch.Generator("cpu").manual_seed(seed)
    assert [index for index, _ in drawn] == list(request.plan().generation_order)
    for _, noise in drawn:
        assert noise.shape == (1, 16, 3, 4, 4)
        assert torch.equal(noise, torch.randn(noise.shape, generator=generator))


def test_reference_noise_is_what_the_request_chooses_and_reproducible(pipes):
    request = build_request(prompt="x", blank_start="black", noise="reference", seed=5)
    loop = SectionLoop(pipes["original"], request, lambda frames: None)
    assert isinstance(loop.noise_fn, ReferenceNoise) and loop.posterior_generator() is not None
    assert build_request(prompt="x", blank_start="black").noise == "section"
    first, *_ = generate(pipes, sections=2, noise="reference")
    again, *_ = generate(pipes, sections=2, noise="reference")
    np.testing.assert_array_equal(first, again)
    per_section, *_ = generate(pipes, sections=2)
    assert np.abs(first.astype(int) - per_section).mean() > 0.05


def test_reference_noise_fast_forwards_to_continue_a_run():
    stream, replay = ReferenceNoise(9), ReferenceNoise(9)
    draws = [stream(i, (1, 2, 3)) for i in range(3)]
    replay.fast_forward(2, (1, 2, 3))
    assert torch.equal(replay(2, (1, 2, 3)), draws[2])
    with pytest.raises(ValueError, match="cannot go back"):
        replay.fast_forward(1, (1, 2, 3))


def test_start_latent_is_a_posterior_sample_with_reference_noise(pipes):
    pipe = pipes["f1"]
    pixels = image(size=(32, 32))
    mean = encode_latent(pipe, pixels, "cpu")
    sample = encode_latent(pipe, pixels, "cpu", generator=torch.Generator().manual_seed(3))
    again = encode_latent(pipe, pixels, "cpu", generator=torch.Generator().manual_seed(3))
    assert torch.equal(sample, again) and not torch.equal(sample, mean)


# ---------------------------------------------------------------------------- background encoding

def test_background_sink_keeps_order_and_bounds_the_queue():
    import threading

    from framepack.io.background import BackgroundSink

    written, gate = [], threading.Event()

    def slow_sink(frames):
        gate.wait(5)
        written.append(int(frames[0, 0, 0, 0]))

    sink = BackgroundSink(slow_sink, max_batches=2)
    handed = []

    def produce():
        for i in range(6):
            sink(np.full((1, 2, 2, 3), i, np.uint8))
            handed.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(0.5)
    assert len(handed) <= 4  # one being written, two queued, one waiting to be queued: bounded
    gate.set()
    producer.join(5)
    sink.drain()
    assert written == list(range(6))


def test_background_sink_bounds_the_bytes_it_holds():
    import threading

    from framepack.io.background import BackgroundSink

    gate, largest = threading.Event(), []
    sink_ref = {}

    def slow_sink(frames):
        gate.wait(5)
        largest.append(sink_ref["sink"].held_bytes)

    batch = np.zeros((4, 8, 8, 3), np.uint8)  # 768 bytes
    sink = BackgroundSink(slow_sink, max_batches=10, max_bytes=2 * batch.nbytes)
    sink_ref["sink"] = sink
    handed = []

    def produce():
        for _ in range(6):
            sink(batch.copy())
            handed.append(sink.held_bytes)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(0.5)
    assert len(handed) == 2 and sink.held_bytes == 2 * batch.nbytes  # the byte bound, not the batch count, holds it
    gate.set()
    producer.join(5)
    sink.drain()
    assert max(largest) <= 2 * batch.nbytes and sink.held_bytes == 0
    huge = BackgroundSink(lambda frames: None, max_bytes=10)  # a batch over the bound still goes, alone
    huge(batch)
    huge.drain()
    assert huge.held_bytes == 0


def test_release_free_heap_runs_where_glibc_is_and_is_a_no_op_elsewhere():
    from framepack.engine.heap import release_free_heap

    released = release_free_heap()
    assert isinstance(released, bool)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert released


_MMAP_PROBE = """
import ctypes, json, sys
sys.path.insert(0, {root!r})
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
from benchmarks.memory import heap_stats  # glibc's mallinfo2
set_up = {set_up}
if set_up:
    import framepack_cli
    framepack_cli.start_process()
libc.free(libc.malloc(8 << 20))  # a large block, mapped and freed: glibc's default raises its threshold to 8 MiB
before = heap_stats()["mmapped"]
block = libc.malloc(4 << 20)
print(json.dumps({{"mapped": heap_stats()["mmapped"] - before}}))
"""


def _mapped_bytes_of_a_4_mib_block(set_up: bool, env: dict | None = None) -> int:
    import json
    import os
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    result = subprocess.run([sys.executable, "-c", _MMAP_PROBE.format(root=root, set_up=set_up)], capture_output=True,
                            text=True, env={**environment, **(env or {})}, timeout=60, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["mapped"]


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc's allocator only")
def test_a_command_line_process_keeps_large_buffers_out_of_the_heap():
    # glibc's default: after an 8 MiB block is freed, a 4 MiB one comes from the heap (which then fragments)
    assert _mapped_bytes_of_a_4_mib_block(set_up=False) == 0
    # the CLI's start (also serve's workers and Ray actors): every block of 1 MiB or more is mapped, returned when freed
    assert _mapped_bytes_of_a_4_mib_block(set_up=True) >= 4 << 20
    # a user's own MALLOC_MMAP_THRESHOLD_ wins
    assert _mapped_bytes_of_a_4_mib_block(set_up=True, env={"MALLOC_MMAP_THRESHOLD_": str(64 << 20)}) == 0


def test_background_sink_raises_the_writers_error_in_the_generating_thread():
    from framepack.io.background import BackgroundSink

    def broken(frames):
        raise OSError("disk full")

    sink = BackgroundSink(broken)
    sink(np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(OSError, match="disk full"):
        for _ in range(10):  # raised at a later batch or at the latest by drain
            sink(np.zeros((1, 2, 2, 3), np.uint8))
        sink.drain()
    sink.cancel()
