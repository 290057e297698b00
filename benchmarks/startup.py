#!/usr/bin/env python
"""Startup benchmark: what the FramePack extension costs SD.Next at startup.

Each run is a fresh Python process with the fake SD.Next (tests/fake_sdnext) on the path and
gradio already imported (SD.Next has loaded it long before extension scripts). Timed: loading
`scripts/framepack_tab.py` the way SD.Next does (extension root on sys.path only during the
import, stdout captured) plus the registration of everything it registers at startup: the three
callbacks and the settings section (`on_ui_settings`). Best of --runs is reported; target < 0.3 s.

Also reported, untimed by the target: which heavy modules that registration imported (torch,
diffusers, transformers, framepack.engine must not be among them), and the time to build the tab
(`on_ui_tabs`) and register the REST routes (`on_app_started`), which happen once the UI is built
and may import gradio-level and pydantic-level modules that SD.Next has loaded anyway.

The last line is exactly `registration: X.XXX s`. Usage: python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fake_sdnext"
TARGET_S = 0.3
HEAVY = ("torch", "diffusers", "transformers", "framepack.engine", "framepack.jobs", "av", "cv2")

WORKER = r"""
import json, os, sys, time
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, os.environ["FAKE_SDNEXT"])
import gradio  # SD.Next has it loaded before any extension script
from modules import shared, script_callbacks  # the host's own modules, loaded before extensions
from harness import load_entry_script, ENTRY_SCRIPT

def heavy():  # which of the HEAVY packages are imported (package names, not every submodule)
    prefixes = json.loads(os.environ["HEAVY"])
    return sorted({p for p in prefixes for m in sys.modules if m == p or m.startswith(p + ".")})

before = set(sys.modules)
started = time.perf_counter()
module, stdout = load_entry_script(ENTRY_SCRIPT)
imported = time.perf_counter()
script_callbacks.ui_settings_callback()
registered = time.perf_counter()
report = {"import_s": imported - started, "registration_s": registered - started, "stdout": stdout,
          "heavy_after_registration": heavy(),
          "framepack_modules": sorted(m for m in set(sys.modules) - before if m.startswith("framepack")),
          "callbacks": {k: len(v) for k, v in script_callbacks.callback_map.items()},
          "settings": sum(1 for k in shared.opts.data_labels if k.startswith("framepack_")),
          "errors": [repr(e) for *_, e in script_callbacks.fake_exceptions]}
if os.environ.get("FULL") == "1":
    from fastapi import FastAPI
    from modules.api.api import Api
    shared.api = Api(FastAPI())
    t = time.perf_counter(); tabs = script_callbacks.ui_tabs_callback(); report["tab_s"] = time.perf_counter() - t
    report["tabs"] = [(title, elem_id) for _, title, elem_id in tabs]
    t = time.perf_counter()
    script_callbacks.app_started_callback(None, None)
    report["routes_s"] = time.perf_counter() - t
    report["routes"] = len(shared.api.fake_routes)
    report["heavy_after_ui"] = heavy()
    from modules import errors
    report["errors"] = [repr(e) for *_, e in script_callbacks.fake_exceptions] + \
        [f"{task}: {e!r}" for task, e in errors.fake_displayed]
    from framepack.host import sdnext
    sdnext.shutdown()
print("RESULT " + json.dumps(report))
"""


def run_once(full: bool) -> dict:
    env = dict(os.environ, FAKE_SDNEXT=str(FAKE), HEAVY=json.dumps(HEAVY), FULL="1" if full else "0",
               HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("PYTHONPATH", None)
    # cwd = the (fake) SD.Next root, like SD.Next: the extension root is NOT importable by accident
    done = subprocess.run([sys.executable, "-c", WORKER], cwd=str(FAKE), env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes; the best is reported")
    parser.add_argument("--no-ui", action="store_true", help="skip the (untimed) tab and routes measurement")
    args = parser.parse_args()

    results = [run_once(full=False) for _ in range(max(1, args.runs))]
    best = min(results, key=lambda r: r["registration_s"])
    print(f"runs: {len(results)}; registration times: "
          + ", ".join(f"{r['registration_s']:.3f}" for r in results) + " s")
    print(f"import of scripts/framepack_tab.py: {best['import_s']:.3f} s (best run)")
    print(f"callbacks registered: {best['callbacks']}; FramePack settings: {best['settings']}")
    print(f"framepack modules imported: {', '.join(best['framepack_modules']) or 'none'}")
    heavy = best["heavy_after_registration"]
    print(f"heavy modules after import + settings registration: {', '.join(heavy) or 'none'}")
    problems = []
    if heavy:
        problems.append(f"heavy modules imported at startup: {', '.join(heavy)}")
    if best["stdout"]:
        problems.append(f"the entry script printed at import: {best['stdout']!r}")
    if best["errors"]:
        problems.append(f"callback errors: {best['errors']}")
    if not args.no_ui:
        full = run_once(full=True)
        print(f"tab creation (on_ui_tabs, after startup): {full['tab_s']:.3f} s, tabs {full['tabs']}")
        print(f"route registration (on_app_started): {full['routes_s']:.3f} s, {full['routes']} routes")
        print(f"heavy modules after tab + routes: {', '.join(full['heavy_after_ui']) or 'none'}")
        if full["errors"]:
            problems.append(f"tab/route errors: {full['errors']}")
    status = "OK" if best["registration_s"] < TARGET_S else "SLOW"
    print(f"target: < {TARGET_S:.1f} s -> {status}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"registration: {best['registration_s']:.3f} s")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
