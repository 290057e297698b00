#!/usr/bin/env python
"""Throughput benchmark (issue 15): jobs per hour with 1 and 2 workers, and the cost of the job store and Ray.

All on this machine's CPU with the tiny random-weight model (built in a temporary folder), every
job the same: F1, 32 px, 2 steps, latent window 3, `--sections` sections, TeaCache off.

    workers   1 and 2 worker processes (framepack.jobs.workers) fed from one store; each worker has run
              a warm-up job (model loaded) before the clock starts; `--jobs` jobs are then queued at
              once and timed until the last one completes: jobs per hour and the 2/1 ratio.
    store     the same jobs run in this process through a JobQueue without a store and with one: the
              difference per job is what the store costs (writes of the request, claims, progress,
              the end); also the store's own operations for one job, timed alone (add, claim, 10
              progress saves, finish).
    ray       1 Ray actor (a local Ray, 2 CPUs, no dashboard) against 1 worker process: the difference
              per job is what dispatching through Ray costs (payload, progress polling, results).

On a machine whose cores other work shares, two workers cannot be twice as fast: the tiny model's
step is CPU-bound and both workers want the same cores. Usage:
    python benchmarks/throughput.py [--jobs 6] [--sections 2] [--quick] [--no-ray]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def job_request(seed: int, sections: int):
    import numpy as np

    from framepack.request.model import build_request

    image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return build_request(image=image, prompt="rain", seed=seed, duration=0.4 * sections, resolution=32, steps=2,
                         latent_window_size=3, fps=30, teacache=False, preview=False, variant="f1")


def wait(queue, jobs) -> None:
    for job in jobs:
        while not queue.get(job.id).wait(0.1):
            pass
        assert queue.get(job.id).status == "completed", queue.get(job.id).record


def timed_pool(model: str, workers: int, jobs: int, sections: int, ray: bool = False) -> float:
    """Seconds for `jobs` jobs on warm workers (processes, or Ray actors)."""
    from framepack.cli.serve import worker_host
    from framepack.host.standalone import StandaloneHost
    from framepack.jobs.queue import JobQueue
    from framepack.jobs.store import JobStore

    out = Path(tempfile.mkdtemp(prefix="fp-throughput-"))
    host = StandaloneHost(output_dir=out, videos=out, model=model, device="cpu")
    store = JobStore.in_folder(host.video_dir())
    queue = JobQueue(host, store=store, run_here=False)
    factory = functools.partial(worker_host, output_dir=str(out), model=model, cache_dir=None, offline=True,
                                settings={"keep_incomplete": True})
    if ray:
        from framepack.jobs.cluster import RayWorkers

        pool = RayWorkers("ray", store, factory, count=workers, shared_output=str(host.video_dir()), device="cpu",
                          local_cpus=2)
    else:
        from framepack.jobs.workers import WorkerPool

        pool = WorkerPool(store.path, [functools.partial(factory, device="cpu")] * workers,
                          [f"worker-{n + 1}" for n in range(workers)])
    pool.start()
    try:
        warm = [queue.submit(job_request(900 + n, 1)) for n in range(workers)]
        wait(queue, warm)
        if len({queue.get(job.id).record.worker for job in warm}) < workers:  # one worker took both: warm the other
            wait(queue, [queue.submit(job_request(950 + n, 1)) for n in range(workers)])
        start = time.perf_counter()
        wait(queue, [queue.submit(job_request(seed, sections)) for seed in range(jobs)])
        return time.perf_counter() - start
    finally:
        pool.stop()
        queue.shutdown()


def timed_in_process(model: str, jobs: int, sections: int, with_store: bool) -> float:
    from framepack.host.standalone import StandaloneHost
    from framepack.jobs.queue import JobQueue
    from framepack.jobs.store import JobStore

    out = Path(tempfile.mkdtemp(prefix="fp-throughput-"))
    host = StandaloneHost(output_dir=out, videos=out, model=model, device="cpu")
    queue = JobQueue(host, store=JobStore.in_folder(host.video_dir()) if with_store else None, recover=False)
    try:
        wait(queue, [queue.submit(job_request(999, 1))])  # model loaded
        start = time.perf_counter()
        wait(queue, [queue.submit(job_request(seed, sections)) for seed in range(jobs)])
        return time.perf_counter() - start
    finally:
        queue.shutdown()


def store_operations(rounds: int = 50) -> float:
    """Seconds of store work for one job: add, claim, 10 progress saves, finish."""
    from framepack.jobs.record import JobRecord
    from framepack.jobs.store import JobStore, owner_id
    from framepack.request.events import Status

    store = JobStore.in_folder(tempfile.mkdtemp(prefix="fp-store-"))
    request, owner = job_request(1, 1).to_json(), owner_id("bench")
    start = time.perf_counter()
    for _ in range(rounds):
        record = JobRecord()
        store.add(record, request, {})
        job = store.claim_next(owner)
        for step in range(10):
            job.record.step = step
            store.save_record(job.record, owner)
        job.record.status = Status.COMPLETED
        store.finish(job.record, owner)
    return (time.perf_counter() - start) / rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--sections", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 jobs of 1 section (a smoke test)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    parser.add_argument("--ray-only", action="store_true", help="only 1 Ray actor against 1 worker process")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.sections = 2, 1
    from framepack.models.tiny import build_tiny_model

    model = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="fp-tiny-")) / "tiny-random"))
    n = args.jobs
    print(f"{n} jobs of {args.sections} section(s), tiny model, CPU ({os.cpu_count()} cores)")
    one = timed_pool(model, 1, n, args.sections)
    if args.ray_only:
        return ray_overhead(model, n, args.sections, one)
    two = timed_pool(model, 2, n, args.sections)
    print(f"1 worker:  {n / one * 3600:8.0f} jobs/hour ({one / n:.2f} s/job)")
    print(f"2 workers: {n / two * 3600:8.0f} jobs/hour ({two / n:.2f} s/job)")
    print(f"ratio 2/1 workers: {one / two:.2f}")
    plain = timed_in_process(model, n, args.sections, with_store=False)
    stored = timed_in_process(model, n, args.sections, with_store=True)
    print(f"in-process, no store: {plain / n:.3f} s/job; with the store: {stored / n:.3f} s/job; "
          f"store overhead {(stored - plain) / n * 1000:+.0f} ms/job")
    print(f"store operations of one job (add, claim, 10 saves, finish): {store_operations() * 1000:.1f} ms")
    return 0 if args.no_ray else ray_overhead(model, n, args.sections, one)


def ray_overhead(model: str, n: int, sections: int, one: float) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray: not installed (pip install -r requirements-cluster.txt)")
        return 0
    actor = timed_pool(model, 1, n, sections, ray=True)
    print(f"1 Ray actor: {actor / n:.3f} s/job vs 1 worker process {one / n:.3f} s/job; "
          f"Ray overhead {(actor - one) / n * 1000:+.0f} ms/job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
