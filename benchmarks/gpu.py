"""One FramePack section at full size on a GPU: our loop vs diffusers, TeaCache and compile.

Builds the full-size FramePack transformer (12.9 B parameters, the shipped
`framepack/models/configs` config) with random bf16 weights directly on the GPU (built on the
meta device, `to_empty` on CUDA, initialised there: no CPU copy), the real-size HunyuanVideo VAE
the same way (fp16), and encoders with the real output widths (Llama 4096, CLIP 768, SigLIP 1152
x 729 tokens) but 1-3 layers. Then it times one section of 25 steps at the 640 bucket (608x640,
latent window 9):

- through our loop (`FramePackPipeline.run`, i.e. `framepack.engine.loop.SectionLoop`), TeaCache
  off and on;
- through diffusers' `HunyuanVideoFramepackPipeline.__call__` on the same modules (diffusers has
  no TeaCache, and its FirstBlockCache needs a `cache_context` that this pipeline never opens, so
  that row is reported as skipped);
- with every transformer block `torch.compile`d (`--compile auto`: on CUDA when torch.compile
  works; its first call, compile time included, is a separate warm-up).

For each run it prints seconds per generated frame (sampling + decode of the section divided by
the 4 x window frames it adds), peak VRAM (`torch.cuda.max_memory_allocated`), the stage peaks,
model FLOP utilisation (exact FLOPs per transformer call from the planner, counted calls, over
the device's peak dense bf16 TFLOP/s from `framepack/models/device_speeds.json`) and the
resource planner's prediction of each stage's peak next to the measurement (goal: within 10%).
Random weights make outputs noise: TeaCache's skip rate is not that of a trained model.

`--tiny` runs the same code on the CPU with the tiny model's configs (framepack/models/tiny.py),
a small bucket and 3 steps; peaks are then live-tensor traces (benchmarks/tensor_peak.py). The
test suite runs it. `--json PATH` writes every number; `--update-speeds` also records the measured
speeds for this device in `device_speeds.json`, which the planner's time estimate reads.

    .venv/bin/python benchmarks/gpu.py --json gpu.json          # on a CUDA machine, < 8 min on H100/H200
    .venv/bin/python benchmarks/gpu.py --tiny                   # CPU smoke test, seconds
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PROMPT = "a paper boat drifts down a stream, the camera follows it"
SEED = 31337
FPS = 30
DISTILLED_CFG = 10.0
FULL = dict(resolution=640, window=9, steps=25, llama_layers=3, clip_layers=1, siglip_layers=1)
TINY = dict(resolution=64, window=3, steps=3)
GiB = 2**30
MiB = 2**20


# ----------------------------------------------------------------------------- components


@contextmanager
def _quiet() -> Iterator[None]:
    import logging

    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def init_on_device(module, device, dtype, seed: int):
    """Random weights written where the module will run: meta -> `to_empty(device)` -> fill.

    Matrices and kernels get N(0, 1/fan_in) (activations stay O(1) through 60 blocks), norm
    scales 1, biases 0. The modules built this way hold no buffers (checked).
    """
    import torch

    if any(True for _ in module.buffers()):
        raise RuntimeError(f"{type(module).__name__} has buffers; to_empty would leave them uninitialised")
    module = module.to(dtype=dtype).to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=generator)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)
    return module.eval().requires_grad_(False)


def bench_configs(tiny: bool) -> dict[str, dict]:
    """Component configs: the shipped full-size transformer and VAE, encoders with the real
    widths and few layers; or the tiny model's configs."""
    from framepack.models import tiny as tiny_model
    from framepack.models.component_sizes import load_config

    if tiny:
        return {"transformer": dict(tiny_model.TRANSFORMER_CONFIG), "vae": dict(tiny_model.VAE_CONFIG),
                "text_encoder": dict(tiny_model.LLAMA_CONFIG), "text_encoder_2": dict(tiny_model.CLIP_CONFIG),
                "image_encoder": dict(tiny_model.SIGLIP_CONFIG)}
    ids = {k: tiny_model.LLAMA_CONFIG[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    clip_ids = {k: tiny_model.CLIP_CONFIG[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    clean = lambda c: {k: v for k, v in c.items() if not k.startswith("_") and k not in (  # noqa: E731
        "architectures", "torch_dtype", "transformers_version", "model_type")}
    return {
        "transformer": clean(load_config("transformer")),
        "vae": clean(load_config("vae")),
        "text_encoder": {**clean(load_config("text_encoder")), "num_hidden_layers": FULL["llama_layers"],
                         "vocab_size": tiny_model.VOCAB_SIZE, **ids},
        "text_encoder_2": {**clean(load_config("text_encoder_2")), "num_hidden_layers": FULL["clip_layers"],
                           "vocab_size": tiny_model.VOCAB_SIZE, **clip_ids},
        "image_encoder": {**clean(load_config("image_encoder")), "num_hidden_layers": FULL["siglip_layers"]},
    }


def build_pipeline(configs: dict[str, dict], device, dtype, encoder_dtype, image_size: int):
    """The FramePack pipeline from `configs`, every weight created on `device`."""
    import torch
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel, SiglipVisionConfig, \
        SiglipVisionModel

    from framepack.engine.pipeline import FramePackPipeline
    from framepack.models.recipe import COMPONENT_CLASSES
    from framepack.models.tiny import build_clip_tokenizer, build_llama_tokenizer

    with _quiet():
        with torch.device("meta"):
            transformer = HunyuanVideoFramepackTransformer3DModel(**configs["transformer"])
            vae = AutoencoderKLHunyuanVideo(**configs["vae"])
        transformer = init_on_device(transformer, device, dtype, SEED)
        vae = init_on_device(vae, device, encoder_dtype, SEED + 1)
        torch.manual_seed(SEED)
        with torch.device(device):  # small encoders: the libraries' own init, on the device
            llama = LlamaModel(LlamaConfig(**configs["text_encoder"])).to(encoder_dtype).eval()
            clip = CLIPTextModel(CLIPTextConfig(**configs["text_encoder_2"])).to(encoder_dtype).eval()
            siglip = SiglipVisionModel(SiglipVisionConfig(**configs["image_encoder"])).to(encoder_dtype).eval()
        processor = COMPONENT_CLASSES["feature_extractor"].resolve()(
            size={"height": image_size, "width": image_size}, do_resize=True, do_rescale=True, do_normalize=True,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    for model in (llama, clip, siglip):
        model.requires_grad_(False)
    pipe = FramePackPipeline.from_components({
        "transformer": transformer, "vae": vae, "text_encoder": llama, "text_encoder_2": clip,
        "image_encoder": siglip, "tokenizer": build_llama_tokenizer(), "tokenizer_2": build_clip_tokenizer(),
        "feature_extractor": processor})
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- measuring


class StageMeter:
    """Per-stage peaks: CUDA's allocator counters, or a live-tensor trace on the CPU. Stages may
    nest (diffusers' decode inside its whole call): an inner reset never hides an outer peak."""

    def __init__(self, device):
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.peaks: dict[str, int] = {}  # absolute (CUDA) peak bytes per stage
        self.added: dict[str, int] = {}  # bytes above what was allocated when the stage began
        self._open: list[list] = []  # [name, allocated at start, peak so far]

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        if not self.cuda:
            from tensor_peak import LiveTensorPeak

            with LiveTensorPeak() as tracker:
                yield
            self.added[name] = max(self.added.get(name, 0), tracker.peak_bytes)
            return
        import torch

        self.sync()
        self._fold(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
        entry = [name, torch.cuda.memory_allocated(), 0]
        self._open.append(entry)
        try:
            yield
        finally:
            self.sync()
            self._fold(torch.cuda.max_memory_allocated())
            self._open.remove(entry)
            _, start, peak = entry
            self.peaks[name] = max(self.peaks.get(name, 0), peak)
            self.added[name] = max(self.added.get(name, 0), peak - start)

    def _fold(self, peak: int) -> None:
        for entry in self._open:
            entry[2] = max(entry[2], peak)


def measuring_hooks(meter: StageMeter):
    """`StageHooks` that measure every stage (hosts subclass it the same way)."""
    from framepack.engine.control import StageHooks

    class MeasuringHooks(StageHooks):
        @contextmanager
        def stage(self, name: str) -> Iterator[None]:
            with meter.measure(name), super().stage(name):
                yield

    return MeasuringHooks()


class CallCounter:
    """Counts the transformer calls that really ran the blocks (TeaCache skips don't). The hook is
    kept out of torch.compile'd graphs (one graph break in the first block)."""

    def __init__(self, transformer):
        import torch

        self.calls = 0

        @torch.compiler.disable
        def count(module, args) -> None:
            self.calls += 1

        self._handle = transformer.transformer_blocks[0].register_forward_pre_hook(count)

    def close(self) -> None:
        self._handle.remove()


# ----------------------------------------------------------------------------- runs


def start_image(height: int, width: int):
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                     ((x + y) * 127 // max(1, height + width))], axis=-1).astype(np.uint8)


def run_ours(pipe, settings: dict, teacache: bool, steps: int) -> dict:
    """One section through our loop; returns timings, stage peaks and call counts."""
    from framepack.request.model import build_request

    meter = StageMeter(pipe._execution_device)
    request = build_request(image=start_image(settings["height"], settings["width"]), prompt=PROMPT,
                            variant="original", duration=4 * settings["window"] / FPS, fps=FPS,
                            resolution=settings["resolution"], steps=steps, latent_window_size=settings["window"],
                            seed=SEED, teacache=teacache, preview=False, distilled_cfg=DISTILLED_CFG)
    frames = {"count": 0, "finite": True}

    def sink(chunk) -> None:
        frames["count"] += len(chunk)

    counter = CallCounter(pipe.transformer)
    hooks = measuring_hooks(meter)
    meter.sync()
    started = time.perf_counter()
    try:
        done = pipe.run(request, sink, hooks=hooks)
    finally:
        counter.close()
    meter.sync()
    total = time.perf_counter() - started
    return {"seconds_total": total, "seconds_sampling": done.timings.get("sample", 0.0),
            "seconds_decode": done.timings.get("vae_decode", 0.0), "frames": done.frames,
            "transformer_calls": counter.calls, "stage_peak_bytes": meter.peaks, "stage_added_bytes": meter.added}


def run_diffusers(pipe, settings: dict, steps: int) -> dict:
    """One section through diffusers' own `__call__` on the same modules."""
    import torch
    from diffusers import HunyuanVideoFramepackPipeline
    from PIL import Image

    from framepack.engine.conditioning import template_crop_start, template_for
    from framepack.request.model import DEFAULT_SYSTEM_PROMPT

    meter = StageMeter(pipe._execution_device)
    template = {"template": template_for(DEFAULT_SYSTEM_PROMPT),
                "crop_start": template_crop_start(pipe.tokenizer, DEFAULT_SYSTEM_PROMPT)}
    image = Image.fromarray(start_image(settings["height"], settings["width"]))
    counter = CallCounter(pipe.transformer)
    decode_seconds = {"value": 0.0}
    original_decode = pipe.vae.decode

    def timed_decode(*args, **kwargs):
        meter.sync()
        begun = time.perf_counter()
        with meter.measure("vae_decode"):
            out = original_decode(*args, **kwargs)
        decode_seconds["value"] += time.perf_counter() - begun
        return out

    pipe.vae.decode = timed_decode  # this instance only, removed below
    meter.sync()
    started = time.perf_counter()
    try:
        with meter.measure("whole run"):
            result = HunyuanVideoFramepackPipeline.__call__(
                pipe, image=image, prompt=PROMPT, height=settings["height"], width=settings["width"],
                num_frames=4 * settings["window"] - 3, latent_window_size=settings["window"],
                num_inference_steps=steps, guidance_scale=DISTILLED_CFG, generator=torch.Generator().manual_seed(SEED),
                output_type="pt", prompt_template=template, max_sequence_length=256,
                sampling_type="inverted_anti_drifting")
    finally:
        del pipe.vae.decode
        counter.close()
    meter.sync()
    total = time.perf_counter() - started
    frames = int(result.frames[0].shape[0])
    return {"seconds_total": total, "seconds_sampling": max(0.0, total - decode_seconds["value"]),
            "seconds_decode": decode_seconds["value"], "frames": frames, "transformer_calls": counter.calls,
            "stage_peak_bytes": meter.peaks, "stage_added_bytes": meter.added,
            "note": "sampling time includes diffusers' prompt and image encoding"}


def compile_blocks(pipe) -> str | None:
    """`torch.compile` every transformer block in place; the reason when it cannot."""
    import torch

    if not hasattr(torch, "compile"):
        return "torch.compile is not available"
    # identical blocks share one compiled graph (modules inlined); room for the two block kinds
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    try:
        for block in (*pipe.transformer.transformer_blocks, *pipe.transformer.single_transformer_blocks):
            block.compile()
    except Exception as error:  # noqa: BLE001 - report and carry on uncompiled
        return f"torch.compile failed: {type(error).__name__}: {error}"
    return None


def uncompile_blocks(pipe) -> None:
    for block in (*pipe.transformer.transformer_blocks, *pipe.transformer.single_transformer_blocks):
        block._compiled_call_impl = None


# ----------------------------------------------------------------------------- reporting


def context_tokens(pipe, settings: dict) -> tuple[int, int]:
    """(SigLIP + prompt tokens, prompt tokens) of the benchmark prompt, as the loop crops them."""
    from framepack.engine.conditioning import encode_text
    from framepack.request.model import DEFAULT_SYSTEM_PROMPT

    import torch

    with torch.no_grad():
        text = encode_text(pipe, PROMPT, DEFAULT_SYSTEM_PROMPT, 256, pipe._execution_device)
    prompt = int(text.mask.sum().item())
    config = pipe.image_encoder.config
    return (config.image_size // config.patch_size) ** 2 + prompt, prompt


def summarize(run: dict, settings: dict, flops_per_call: float, peak_tflops: float | None) -> dict:
    new_frames = 4 * settings["window"]
    sampling = run["seconds_sampling"]
    achieved = run["transformer_calls"] * flops_per_call / sampling / 1e12 if sampling > 0 else None
    run.update(
        seconds_per_frame=(run["seconds_sampling"] + run["seconds_decode"]) / new_frames,
        flops_per_call=flops_per_call,
        achieved_tflops=achieved,
        mfu=None if (achieved is None or not peak_tflops) else achieved / peak_tflops,
        peak_vram_bytes=max(run["stage_peak_bytes"].values(), default=None) if run["stage_peak_bytes"] else None,
    )
    return run


def planner_comparison(plan, run: dict, cuda: bool) -> dict:
    """Predicted vs measured per stage: absolute peaks on CUDA, working sets on the CPU."""
    rows = {}
    for stage in ("sample", "vae_decode"):
        if cuda and stage in run["stage_peak_bytes"]:
            measured, predicted = run["stage_peak_bytes"][stage], plan.stage_vram_bytes[stage]
        elif stage in run["stage_added_bytes"]:
            measured, predicted = run["stage_added_bytes"][stage], plan.working_set_bytes[stage]
        else:
            continue
        rows[stage] = {"predicted_bytes": int(predicted), "measured_bytes": int(measured),
                       "error": predicted / measured - 1.0 if measured else None}
    if cuda and run.get("peak_vram_bytes"):
        rows["peak"] = {"predicted_bytes": int(plan.vram_peak_bytes), "measured_bytes": int(run["peak_vram_bytes"]),
                        "error": plan.vram_peak_bytes / run["peak_vram_bytes"] - 1.0}
    return rows


def host_to_device_gb_per_s(device) -> float | None:
    import torch

    if torch.device(device).type != "cuda":
        return None
    source = torch.empty(GiB, dtype=torch.uint8).pin_memory()
    target = torch.empty(GiB, dtype=torch.uint8, device=device)
    best = 0.0
    for _ in range(3):
        torch.cuda.synchronize()
        begun = time.perf_counter()
        target.copy_(source, non_blocking=True)
        torch.cuda.synchronize()
        best = max(best, GiB / (time.perf_counter() - begun) / 1e9)
    del source, target
    return best


def print_table(results: dict) -> None:
    print(f"\ndevice: {results['device']}  ({results['settings']['height']}x{results['settings']['width']}, "
          f"window {results['settings']['window']}, {results['settings']['steps']} steps, one section)")
    header = (f"{'run':34s} {'s/frame':>8s} {'sampling s':>10s} {'decode s':>9s} {'calls':>5s} "
              f"{'TFLOP/s':>8s} {'MFU':>6s} {'peak GiB':>9s}")
    print(header)
    print("-" * len(header))
    for run in results["runs"]:
        if run.get("skipped"):
            print(f"{run['name']:34s} skipped: {run['skipped']}")
            continue
        tflops = "-" if run["achieved_tflops"] is None else f"{run['achieved_tflops']:.1f}"
        mfu = "-" if run["mfu"] is None else f"{run['mfu']:.1%}"
        peak = "-" if run["peak_vram_bytes"] is None else f"{run['peak_vram_bytes'] / GiB:.2f}"
        print(f"{run['name']:34s} {run['seconds_per_frame']:8.3f} {run['seconds_sampling']:10.2f} "
              f"{run['seconds_decode']:9.2f} {run['transformer_calls']:5d} {tflops:>8s} {mfu:>6s} {peak:>9s}")
    print("\nplanner vs measured (ours, TeaCache off, eager):")
    for stage, row in results["planner"].items():
        error = "-" if row["error"] is None else f"{row['error']:+.1%}"
        print(f"  {stage:10s} predicted {row['predicted_bytes'] / GiB:7.2f} GiB  measured "
              f"{row['measured_bytes'] / GiB:7.2f} GiB  error {error}")


def update_speeds(results: dict, path: Path) -> None:
    """Record this device's measured speeds in the planner's table (framepack/models/device_speeds.json)."""
    table = json.loads(path.read_text(encoding="utf-8"))
    entry = table["devices"].setdefault(results["device"], {"peak_bf16_tflops": None})
    entry.update(results["speeds"])
    entry["measured"] = {"date": results["date"], "benchmark": "benchmarks/gpu.py", "torch": results["torch"],
                         "diffusers": results["diffusers"], "bucket": f"{results['settings']['height']}x"
                                                                       f"{results['settings']['width']}",
                         "steps": results["settings"]["steps"]}
    path.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- main


def benchmark(args) -> dict:
    import diffusers
    import torch

    from framepack.engine.conditioning import pick_bucket
    from framepack.models import component_costs, resources

    started = time.perf_counter()
    device = torch.device("cpu" if args.tiny else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --tiny for the CPU smoke test")
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    encoder_dtype = torch.float16 if cuda else torch.float32
    base = TINY if args.tiny else FULL
    steps = args.steps or base["steps"]
    height, width = pick_bucket(base["resolution"], base["resolution"], base["resolution"])
    settings = {"resolution": base["resolution"], "height": height, "width": width, "window": base["window"],
                "steps": steps}
    configs = bench_configs(args.tiny)
    image_size = configs["image_encoder"]["image_size"]
    name = torch.cuda.get_device_name(device) if cuda else "cpu"

    built = time.perf_counter()
    pipe = build_pipeline(configs, device, dtype, encoder_dtype, image_size)
    build_seconds = time.perf_counter() - built
    context, prompt = context_tokens(pipe, settings)
    flops = component_costs.transformer_flops(configs["transformer"], height // 8, width // 8, settings["window"],
                                              context, prompt)
    peak_tflops = resources.peak_bf16_tflops(name) if cuda else None
    plan = resources.plan_resources(configs=configs, height=height, width=width, latent_window_size=settings["window"],
                                    steps=steps, max_prompt_tokens=prompt, device="cuda" if cuda else "cpu",
                                    dtype="bf16" if cuda else "fp32", offload="none", vae_tiling=False,
                                    device_name=name)

    runs: list[dict] = []

    def record(label: str, impl: str, teacache: bool, compiled: bool, fn: Callable[[], dict]) -> dict:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        run = summarize(fn(), settings, flops, peak_tflops)
        run.update(name=label, impl=impl, teacache=teacache, compiled=compiled)
        runs.append(run)
        print(f"  {label}: {run['seconds_per_frame']:.3f} s/frame, {run['transformer_calls']} calls, "
              f"{time.perf_counter() - started:.0f} s elapsed", flush=True)
        return run

    run_ours(pipe, settings, teacache=False, steps=min(2, steps))  # warm-up: kernels, allocator, cuBLAS
    eager = record("ours, TeaCache off", "ours", False, False, lambda: run_ours(pipe, settings, False, steps))
    record("ours, TeaCache on", "ours", True, False, lambda: run_ours(pipe, settings, True, steps))
    record("diffusers", "diffusers", False, False, lambda: run_diffusers(pipe, settings, steps))
    runs.append({"name": "diffusers, TeaCache on", "impl": "diffusers", "teacache": True, "compiled": False,
                 "skipped": "diffusers has no TeaCache; its FirstBlockCache needs a cache_context that "
                            "HunyuanVideoFramepackPipeline never opens"})
    compile_mode = args.compile if args.compile != "auto" else ("on" if cuda else "off")
    compile_seconds = None
    if compile_mode == "on":
        reason = compile_blocks(pipe)
        if reason is None:
            warm = time.perf_counter()
            try:
                run_ours(pipe, settings, teacache=False, steps=min(2, steps))  # compiles
                compile_seconds = time.perf_counter() - warm
                record("ours, TeaCache off, compiled", "ours", False, True,
                       lambda: run_ours(pipe, settings, False, steps))
                record("ours, TeaCache on, compiled", "ours", True, True, lambda: run_ours(pipe, settings, True, steps))
                record("diffusers, compiled", "diffusers", False, True, lambda: run_diffusers(pipe, settings, steps))
            except Exception as error:  # noqa: BLE001 - a compile failure must not lose the eager numbers
                reason = f"compiled run failed: {type(error).__name__}: {str(error)[:300]}"
            finally:
                uncompile_blocks(pipe)
        if reason is not None:
            runs.append({"name": "compiled runs", "compiled": True, "skipped": reason})
    else:
        reason = "--compile off" if args.compile == "off" else "--compile auto skips torch.compile off CUDA"
        runs.append({"name": "compiled runs", "compiled": True, "skipped": reason})

    latents = component_costs.decoded_latent_frames("original", settings["window"], 1)  # the window + the start latent
    decoded_pixels = component_costs.pixel_frames(latents) * height * width  # one section
    speeds = {
        "transformer_tflops": eager["achieved_tflops"],
        "transformer_tflops_compiled": next((r["achieved_tflops"] for r in runs
                                             if r.get("compiled") and not r.get("skipped") and not r["teacache"]
                                             and r["impl"] == "ours"), None),
        "vae_decode_megapixel_frames_per_s": (decoded_pixels / 1e6 / eager["seconds_decode"]
                                              if eager["seconds_decode"] else None),
        "host_to_device_gb_per_s": host_to_device_gb_per_s(device),
    }
    results = {
        "device": name, "tiny": bool(args.tiny), "date": datetime.date.today().isoformat(),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "settings": settings,
        "parameters": {"transformer": sum(p.numel() for p in pipe.transformer.parameters()),
                       "vae": sum(p.numel() for p in pipe.vae.parameters())},
        "context_tokens": context, "prompt_tokens": prompt, "image_tokens": plan.tokens["image_tokens"],
        "flops_per_call": flops, "peak_bf16_tflops": peak_tflops, "build_seconds": build_seconds,
        "compile_seconds": compile_seconds, "runs": runs, "speeds": speeds,
        "plan": {"vram_peak_bytes": plan.vram_peak_bytes, "stage_vram_bytes": dict(plan.stage_vram_bytes),
                 "working_set_bytes": dict(plan.working_set_bytes), "weight_bytes": dict(plan.weight_bytes)},
        "planner": planner_comparison(plan, eager, cuda),
        "decoded_pixel_frames_per_section": decoded_pixels,
        "total_seconds": time.perf_counter() - started,
    }
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Time one full-size FramePack section on a GPU: our loop vs "
                                                 "diffusers, TeaCache off/on, compile off/on.")
    parser.add_argument("--tiny", action="store_true", help="the same code on the CPU with the tiny configs (seconds)")
    parser.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 25; --tiny 3)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile the transformer blocks (auto: on CUDA only)")
    parser.add_argument("--json", default=None, help="write every number to this JSON file")
    parser.add_argument("--update-speeds", action="store_true",
                        help="record this device's speeds in framepack/models/device_speeds.json")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
                       "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    results = benchmark(args)
    print_table(results)
    print(f"(total {results['total_seconds']:.0f} s, model build {results['build_seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    if args.update_speeds and not args.tiny:
        from framepack.models.resources import SPEEDS_PATH

        update_speeds(results, SPEEDS_PATH)
        print(f"recorded the speeds of {results['device']} in {SPEEDS_PATH}")
    return results


if __name__ == "__main__":
    main()
