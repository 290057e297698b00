#!/usr/bin/env python
"""Planning under adversarial input: POST /plan's work and the tab's live plan, worst cases.

Each case is what the API accepts at its limits (1000 sections, 8000-character prompt, 1000
schedule lines of up to 1000 characters, 32 keyframes) or just past them (refused at once). For
each, the best of several runs is printed as CPU time of this thread (what the server spends;
other processes on a shared machine do not count) and wall time, plus the response size. The
target is under 50 ms; the last line is `worst plan cpu ms: X.X`.

Before issue 8 a run of 16,000 digits before a colon took 16 s (quadratic regex), and a plan of
10,000 sections with a 20,000-character prompt produced a JSON answer of hundreds of MB.

Usage: python benchmarks/plan.py [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framepack.api.routes import AsciiJSONResponse, plan_response  # noqa: E402
from framepack.api.validation import BodyError  # noqa: E402

LONGEST = {"duration": 550, "fps": 240, "latent_window_size": 33, "prompt": "p" * 8000}
CASES = {
    "16,000 digits before a colon": {"duration": 5, "section_prompts": "1" * 16000 + "x: y"},
    "90 lines of 995 digits + x": {"duration": 5, "section_prompts": ("1" * 995 + "x: y\n") * 90},
    "1000 sections, 8000-char prompt": LONGEST,
    "1000 sections, a line each": {**LONGEST, "section_prompts": "\n".join(f"{i + 1}: x{i}" for i in range(1000))},
    "1000 sections, one 1000-char line": {**LONGEST, "section_prompts": "1-1000: " + "x" * 990},
    "1000 time ranges": {**LONGEST, "section_prompts": "\n".join(
        f"{i * 0.55:.2f}s-{(i + 1) * 0.55:.2f}s: p" for i in range(1000))},
    "50,000 lines (refused)": {**LONGEST, "section_prompts": "x\n" * 50000},
    "32 keyframes": {**LONGEST, "keyframes": [f"{i * 17}s" for i in range(32)]},
}


def answer(body) -> bytes:
    try:
        return AsciiJSONResponse(plan_response(body)).body
    except BodyError as error:
        return AsciiJSONResponse({"detail": error.items}, status_code=422).body


def best(action, runs: int) -> tuple[float, float]:
    cpu = wall = float("inf")
    for _ in range(runs):
        started_cpu, started_wall = time.thread_time(), time.perf_counter()
        action()
        cpu = min(cpu, time.thread_time() - started_cpu)
        wall = min(wall, time.perf_counter() - started_wall)
    return cpu * 1000, wall * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from framepack.ui import logic

    worst = 0.0
    for name, body in CASES.items():
        size = len(answer(body))
        cpu, wall = best(lambda: answer(body), args.runs)
        worst = max(worst, cpu)
        print(f"POST /plan  {name:36s} cpu {cpu:6.1f} ms  wall {wall:6.1f} ms  {size / 1e3:7.1f} kB")
    schedule = "\n".join(f"{i * 10 + 1}-{i * 10 + 10}: " + "x" * 990 for i in range(100))
    live = (550, 240, 0, 33, "original", "p" * 8000, schedule, [])
    cpu, wall = best(lambda: logic.plan_html(*live), args.runs)
    worst = max(worst, cpu)
    print(f"tab plan    {'1000 sections, 100 long lines':36s} cpu {cpu:6.1f} ms  wall {wall:6.1f} ms")
    print(f"worst plan cpu ms: {worst:.1f}")


if __name__ == "__main__":
    main()
