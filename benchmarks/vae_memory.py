"""Calibrate the planner's VAE decode model: live-tensor peaks of real decodes on the CPU.

The planner (`framepack.models.component_costs.vae_decode_bytes`) predicts the decode peak as
`VAE_DECODE_TENSORS` tensors of `block_out_channels[1]` x pixel frames x height x width (the
upsampler at full resolution), or the mid-block's causal attention mask when that is larger.
This script measures the factor:

1. *calibration VAE*, decoded for real on the CPU: the HunyuanVideo VAE's structure (4 blocks,
   2 layers per block, mid-block attention) with the real channel ratios at 1/8 width
   (16, 32, 64, 64), random weights;
2. *tiny VAE* (`framepack.models.tiny.VAE_CONFIG`, 8 channels everywhere), for comparison: a
   different channel profile keeps more alive relative to `block_out_channels[1]`;
3. *full-size VAE* on the meta device (no memory, no weights): the real shapes, traced the same
   way; `--tiled` adds tiled decodes (slow on the meta device: diffusers blends tiles row by row).

The peak is the largest sum of live tensor storages created during the decode
(`benchmarks/tensor_peak.py`): what CUDA's `max_memory_allocated` counts above the weights,
without allocator caching or kernel workspaces.

    .venv/bin/python benchmarks/vae_memory.py            # about a minute on 2 cores
    .venv/bin/python benchmarks/vae_memory.py --quick    # the smallest size only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

CALIBRATION_CHANNELS = (16, 32, 64, 64)  # the real (128, 256, 512, 512) at 1/8 width
MiB = 2**20


def _vae(config: dict, device: str, dtype):
    import torch
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(0)
    if device == "meta":
        with torch.device("meta"):
            return AutoencoderKLHunyuanVideo(**config).to(dtype).eval()
    return AutoencoderKLHunyuanVideo(**config).to(dtype).eval()


def measure(name: str, config: dict, device: str, dtype, frames: int, size: int, tiled: bool) -> dict:
    """Trace one decode of `frames` latent frames at size x size latent pixels."""
    import torch

    from framepack.models.component_costs import vae_decode_bytes
    from tensor_peak import peak_bytes

    vae = _vae(config, device, dtype)
    if tiled:
        vae.enable_tiling()
    z = torch.randn(1, config.get("latent_channels", 16), frames, size, size, device=device, dtype=dtype)
    started = time.perf_counter()
    peak, out = peak_bytes(vae.decode, z, return_dict=False)
    seconds = time.perf_counter() - started
    _, _, pixel_frames, height, width = out[0].shape
    elem = dtype.itemsize
    channels = config["block_out_channels"][1]
    predicted = vae_decode_bytes(config, frames, size, size, elem, tiled)
    return {"model": name, "device": device, "frames": frames, "latent": size, "tiled": tiled, "peak": peak,
            # per chunk of 5 latent frames (17 pixel frames): longer decodes run chunk by chunk
            "factor": peak / (channels * pixel_frames * height * width * elem) if not tiled and frames <= 5 else None,
            "predicted": predicted, "error": predicted / peak - 1.0, "seconds": seconds}


def run(args) -> list[dict]:
    import torch

    from framepack.models.component_sizes import load_config
    from framepack.models.tiny import VAE_CONFIG

    real = {k: v for k, v in load_config("vae").items() if not k.startswith("_")}
    calibration = {**real, "block_out_channels": CALIBRATION_CHANNELS, "norm_num_groups": 8}
    sizes = (8,) if args.quick else (8, 16, 24)
    rows = []
    for size in sizes:
        rows.append(measure("calibration (1/8 width)", calibration, "cpu", torch.float32, 5, size, False))
    rows.append(measure("tiny (8 channels)", dict(VAE_CONFIG), "cpu", torch.float32, 5, 16, False))
    for frames, size in ((5, 16), (5, 32), (19, 52), (19, 80)):
        rows.append(measure("full size", real, "meta", torch.float16, frames, size, False))
    if args.tiled:
        for frames, size in ((5, 80), (19, 52)):
            rows.append(measure("full size", real, "meta", torch.float16, frames, size, True))
    return rows


def report(rows: list[dict]) -> None:
    print("model                   | device | latent (frames x px) | tiled |   peak MiB | factor | planner MiB | error")
    for r in rows:
        factor = "   -  " if r["factor"] is None else f"{r['factor']:6.3f}"
        print(f"{r['model']:23s} | {r['device']:6s} | {r['frames']:3d} x {r['latent']:3d}^2         | "
              f"{'yes' if r['tiled'] else 'no ':5s} | {r['peak'] / MiB:10.1f} | {factor} | "
              f"{r['predicted'] / MiB:11.1f} | {r['error']:+.1%}")
    calibration = [r["factor"] for r in rows if r["model"].startswith("calibration")]
    print(f"calibration factor (tensors of block_out_channels[1] at full resolution): "
          f"{min(calibration):.3f}-{max(calibration):.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Live-tensor peaks of VAE decodes, for the planner's VAE model.")
    parser.add_argument("--quick", action="store_true", help="one calibration size only")
    parser.add_argument("--tiled", action="store_true", help="also trace tiled full-size decodes (minutes)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    report(run(args))


if __name__ == "__main__":
    main()
