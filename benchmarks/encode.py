#!/usr/bin/env python
"""Encode benchmark: our VideoWriter against the ffmpeg command line, and CLI memory on 1 GB.

1. The same frames and settings (libx264, crf 16, yuv420p, 30 fps) are encoded by
   `framepack.io.writer.VideoWriter` and by `ffmpeg -f rawvideo ... -i -` reading them from a
   pipe; runs alternate and the best of each is kept (the machine is shared and noisy).
2. A raw frames file of at least 1 GiB is streamed to disk (never held in RAM) and
   `framepack_cli.py encode` runs on it in a subprocess; its peak RSS is polled from /proc (VmHWM).

The last line is exactly `encode speed ratio vs ffmpeg: X.XX` (ffmpeg time / our time;
above 1 means we are faster). Usage: python benchmarks/encode.py [--runs 3] [--skip-rss]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framepack.io.raw import RawFramesWriter  # noqa: E402
from framepack.io.writer import VideoWriter  # noqa: E402

CRF = 16
FPS = 30
RSS_LIMIT_MB = 500


def synthetic_batch(start: int, count: int, height: int, width: int) -> np.ndarray:
    """Moving, textured frames: x264 has real work to do, and every frame differs."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(0).integers(0, 24, (height, width, 3), dtype=np.uint8)
    batch = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        t = start + i
        batch[i, ..., 0] = 128 + 100 * np.sin((xx + 3 * t) / 37)
        batch[i, ..., 1] = 128 + 100 * np.cos((yy - 2 * t) / 23)
        batch[i, ..., 2] = (xx + yy + 5 * t) % 256
        batch[i] += np.roll(noise, t, axis=1)
    return batch


def time_ours(frames: np.ndarray, out: Path, batch: int = 8) -> float:
    if out.exists():
        out.unlink()
    start = time.perf_counter()
    with VideoWriter(out, FPS, codec="libx264", crf=CRF, pix_fmt="yuv420p") as writer:
        for i in range(0, len(frames), batch):
            writer.write(frames[i:i + batch])
    return time.perf_counter() - start


def time_ffmpeg(frames: np.ndarray, out: Path) -> float:
    _, height, width, _ = frames.shape
    command = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(FPS), "-i", "-", "-c:v", "libx264",
               "-crf", str(CRF), "-pix_fmt", "yuv420p", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    for frame in frames:
        process.stdin.write(frame.tobytes())
    process.stdin.close()
    if process.wait() != 0:
        raise SystemExit("ffmpeg failed")
    return time.perf_counter() - start


def speed(args, work: Path) -> float:
    frames = np.concatenate([synthetic_batch(i, min(30, args.frames - i), args.size, args.size)
                             for i in range(0, args.frames, 30)])
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    print(f"frames: {args.frames} x {args.size}x{args.size}, libx264 crf {CRF}, yuv420p, "
          f"{FPS} fps; {os.cpu_count()} cpus")
    ours, theirs = [], []
    for _ in range(args.runs):
        theirs.append(time_ffmpeg(frames, work / "ffmpeg.mp4"))
        ours.append(time_ours(frames, work / "ours.mp4"))
    print(f"ffmpeg CLI ({version.split()[2]}):  best {min(theirs):.2f} s  "
          f"runs {', '.join(f'{t:.2f}' for t in theirs)}  "
          f"{(work / 'ffmpeg.mp4').stat().st_size / 1e6:.1f} MB")
    import av
    print(f"VideoWriter (PyAV {av.__version__}): best {min(ours):.2f} s  "
          f"runs {', '.join(f'{t:.2f}' for t in ours)}  "
          f"{(work / 'ours.mp4').stat().st_size / 1e6:.1f} MB")
    return min(theirs) / min(ours)


def build_raw(path: Path, target_bytes: int, size: int) -> tuple[Path, int]:
    """Stream a raw file of at least target_bytes to disk; returns (its path, frame count)."""
    frame_bytes = size * size * 3
    count = -(-target_bytes // frame_bytes)
    base = synthetic_batch(0, 16, size, size)
    with RawFramesWriter(path, size, size, {"fps": FPS, "settings": {"benchmark": True}}) as raw:
        for i in range(0, count, 16):
            n = min(16, count - i)
            raw.write(np.roll(base[:n], i, axis=2))  # cheap variation, one batch in RAM
    return raw.path, count


def _high_water_mb(pid: int) -> float:
    """The process's peak RSS so far (VmHWM), 0 if unreadable; psutil's RSS off Linux.

    Not wait4()'s ru_maxrss: Linux carries the parent's high-water mark into a child created
    with vfork+exec, so this benchmark's own ~200 MB of test frames would be billed to the CLI.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss / (1 << 20)
    except Exception:
        return 0.0


def peak_rss_of_encode(raw: Path, out: Path) -> tuple[float, float, int]:
    """Run the CLI encode; return (seconds, peak RSS in MB, exit code), polling every 20 ms."""
    command = [sys.executable, str(ROOT / "framepack_cli.py"), "--quiet", "encode", str(raw),
               "--out", str(out), "--crf", str(CRF), "--overwrite"]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _high_water_mb(process.pid))
        time.sleep(0.02)
    return time.perf_counter() - start, peak, process.returncode


def memory(args, work: Path) -> None:
    start = time.perf_counter()
    raw, count = build_raw(work / "big.safetensors", int(args.raw_gib * (1 << 30)), args.size)
    print(f"raw file: {raw.stat().st_size / 1e9:.2f} GB ({count} frames of "
          f"{args.size}x{args.size}) streamed in {time.perf_counter() - start:.1f} s")
    seconds, peak, code = peak_rss_of_encode(raw, work / "big.mp4")
    if code != 0:
        raise SystemExit(f"framepack_cli.py encode failed with exit code {code}")
    verdict = "OK" if peak < RSS_LIMIT_MB else f"OVER the {RSS_LIMIT_MB} MB limit"
    print(f"framepack_cli.py encode of {count} frames: {seconds:.1f} s "
          f"({count / seconds:.0f} fps), peak RSS {peak:.0f} MB: {verdict}")
    raw.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames for the speed race")
    parser.add_argument("--size", type=int, default=640, help="frame width and height")
    parser.add_argument("--runs", type=int, default=3, help="runs per encoder (best is kept)")
    parser.add_argument("--raw-gib", type=float, default=1.0, help="size of the raw file")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 1 GB memory check")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg not found: apt-get install ffmpeg")
    work = Path(tempfile.mkdtemp(prefix="fp-bench-", dir=args.workdir))
    try:
        ratio = speed(args, work)
        if not args.skip_rss:
            memory(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"encode speed ratio vs ffmpeg: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
