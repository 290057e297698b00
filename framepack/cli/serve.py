"""`framepack_cli.py serve`: the standalone web app (tab + REST API) on the standalone host.

Binds 127.0.0.1:7870 by default: only programs on this machine can reach it, and requests
naming another host (DNS rebinding) are refused. `--auth USER:PASS` or `--auth-file FILE` puts
the API (HTTP Basic) and the tab (a login page) behind credentials; binding another address
without them prints a warning. Ctrl-C (or SIGTERM) stops the server gracefully: a running job
stops after its current step (its partial video is kept when keep-incomplete is on), queued
jobs stay queued in the output folder's job store and run when the server starts again (a
SIGKILL or a crash keeps them too; the job that was running becomes resumable, or resumes by
itself with --auto-resume).

`--workers N` runs the jobs in N worker processes (one per GPU by default when there are several),
each with its own loaded model, all fed from the same store; `--cluster ray` (a local Ray) or
`--cluster ray://ADDRESS` runs them as Ray actors, one per GPU (framepack.jobs.cluster). This
process stays the only HTTP face either way.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 7870
GRACEFUL_SHUTDOWN_S = 10


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the standalone web app (FramePack tab + REST API)",
        description="Serve the FramePack tab at / and the REST API at /framepack/v1 (OpenAPI docs at /docs) "
                    "on this machine, with the standalone host. Jobs run one at a time. "
                    "Use --model tiny for the random-weight smoke-test model (its output is noise).")
    parser.add_argument("--host", default=DEFAULT_BIND, metavar="ADDRESS",
                        help=f"address to bind (default {DEFAULT_BIND}, this machine only; before 0.0.0.0, "
                             f"set --auth)")
    parser.add_argument("--auth", default=None, metavar="USER:PASS[,USER:PASS]",
                        help="require these credentials for the tab (login page) and the API (HTTP Basic)")
    parser.add_argument("--auth-file", default=None, metavar="FILE",
                        help="like --auth, read from FILE (one USER:PASS per line; keeps it out of the "
                             "process list)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--model", default=None, metavar="DIR|tiny",
                        help="'tiny', a local model folder, or omit for the hub models")
    parser.add_argument("--output-dir", default="outputs", metavar="DIR",
                        help="output folder: videos go straight into DIR, as with `generate --out DIR` "
                             "(created when missing)")
    parser.add_argument("--no-ui", action="store_true", help="serve the REST API only, without the tab")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache folder")
    parser.add_argument("--offline", action="store_true", help="never download models")
    parser.add_argument("--device", default=None, help="cuda, xpu, mps or cpu (default: best available)")
    parser.add_argument("--no-keep-incomplete", action="store_true",
                        help="write nothing for stopped jobs (default: keep the partial video)")
    parser.add_argument("--max-body-mb", type=float, default=64.0, metavar="MB",
                        help="largest accepted API request body (default 64)")
    parser.add_argument("--workers", type=_worker_count, default=None, metavar="N",
                        help="run jobs in N worker processes, each with its own model (default: one per GPU when "
                             "there are several, else jobs run in this process)")
    parser.add_argument("--cluster", default=None, metavar="ray|ray://ADDRESS",
                        help="run jobs on Ray actors, one per GPU: 'ray' starts a local Ray, ray://HOST:10001 "
                             "joins a cluster (pip install .[cluster]); --workers sets the actor count")
    parser.add_argument("--auto-resume", action="store_true",
                        help="resume a job interrupted by a crash, kill or restart when the server starts again "
                             "(default: list it as resumable)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="server log level (default info)")
    parser.set_defaults(func=run_serve)


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers, got {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"--workers must be between 1 and 64, got {value}")
    return value


def worker_host(output_dir: str, model: str | None, cache_dir: str | None, offline: bool | None, device: str,
                settings: dict):
    """A worker's own host (built in the worker process: module level, so it pickles by name)."""
    from framepack.host.standalone import StandaloneHost

    return StandaloneHost(output_dir=output_dir, videos=output_dir, model=model, cache_dir=cache_dir, offline=offline,
                          device=device, settings=settings)


def worker_devices(device: str | None) -> list[str]:
    """The devices workers go to in turn: every GPU, else the one device asked for (or the CPU)."""
    if device in (None, "cuda"):
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{n}" for n in range(torch.cuda.device_count())]
    return [device or "cpu"]


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def credentials(args) -> list[tuple[str, str]] | None:
    """The --auth / --auth-file logins, or None; a malformed one is a usage error."""
    from framepack.api.guard import parse_credentials
    from framepack.errors import InputError

    pairs = []
    try:
        if args.auth:
            pairs += parse_credentials(args.auth, "--auth")
        if args.auth_file:
            try:
                text = Path(args.auth_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"--auth-file: cannot read {args.auth_file}: "
                                 f"{getattr(error, 'strerror', None) or error}") from None
            pairs += parse_credentials(text, "--auth-file", one_per_line=True)
    except ValueError as error:
        raise InputError(str(error)) from None
    return pairs or None


def _log_jobs(level: str) -> None:
    """Job started / finished (with the saved files) / failed lines on stderr, at the server's log level."""
    import logging

    jobs = logging.getLogger("framepack.jobs")
    jobs.setLevel(getattr(logging, level.upper()))
    if not jobs.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        jobs.addHandler(handler)
        jobs.propagate = False  # the root logger (warnings) would print them a second time


def run_serve(args) -> int:
    import uvicorn

    from framepack.api.guard import LOOPBACK_HOSTS
    from framepack.app import create_app
    from framepack.errors import InputError
    from framepack.host.standalone import StandaloneHost

    auth = credentials(args)

    if args.cluster is not None and args.cluster != "ray" and not args.cluster.startswith("ray://"):
        raise InputError(f"--cluster: use 'ray' (a local Ray) or ray://HOST:PORT, not {args.cluster!r}")
    _log_jobs(args.log_level)
    settings = {"keep_incomplete": not args.no_keep_incomplete}
    host = StandaloneHost(output_dir=args.output_dir, videos=args.output_dir, model=args.model,
                          cache_dir=args.cache_dir, offline=True if args.offline else None, device=args.device,
                          settings=settings)
    queue, workers = _queue_and_workers(args, host, settings)
    loopback = _is_loopback(args.host)
    app = create_app(host, queue, ui=not args.no_ui, max_body_bytes=int(args.max_body_mb * 1024 * 1024), auth=auth,
                     allowed_hosts=sorted(LOOPBACK_HOSTS | {args.host}) if loopback else None)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}"
    tab = f"tab {url}/, " if app.state.framepack_ui is not None else ""
    print(f"FramePack: {tab}API {url}/framepack/v1, docs {url}/docs; outputs in {host.video_dir()} "
          f"(Ctrl-C to stop)", file=sys.stderr, flush=True)
    if not loopback and auth is None:
        print(f"warning: serving on {args.host} without authentication (--auth): anyone who can reach this port "
              f"can run jobs and download results", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    finally:
        queue.shutdown()
        if workers is not None:
            workers.stop()
    if not server.started:
        return 1  # the port could not be bound (uvicorn has said why)
    print("FramePack: stopped", file=sys.stderr, flush=True)
    return 0


def _queue_and_workers(args, host, settings: dict):
    """The queue (with the output folder's store) and, with --workers or --cluster, who runs its jobs."""
    import functools

    from framepack.jobs.queue import JobQueue
    from framepack.jobs.store import JobStore

    store = JobStore.in_folder(host.video_dir())
    count = args.workers
    devices = worker_devices(args.device)
    if count is None and args.cluster is None and len(devices) > 1:
        count = len(devices)  # one worker per GPU
    if count is None and args.cluster is None:
        return JobQueue(host, store=store, auto_resume=args.auto_resume), None
    queue = JobQueue(host, store=store, run_here=False, auto_resume=args.auto_resume)
    factory = functools.partial(worker_host, output_dir=str(host.output_dir), model=args.model,
                                cache_dir=args.cache_dir, offline=True if args.offline else None, settings=settings)
    if args.cluster is not None:
        from framepack.jobs.cluster import RayWorkers

        workers = RayWorkers(args.cluster, store, factory, count=count, shared_output=str(host.video_dir()),
                             device=args.device)
        print(f"FramePack: {len(workers.names)} Ray worker(s): {', '.join(workers.names)}", file=sys.stderr,
              flush=True)
        return queue, workers.start()
    from framepack.jobs.workers import WorkerPool, worker_names

    named = worker_names(count, devices)
    factories = [functools.partial(factory, device=device) for _, device in named]
    names = [f"{name} ({device})" for name, device in named]
    print(f"FramePack: {count} worker process(es): {', '.join(names)}", file=sys.stderr, flush=True)
    return queue, WorkerPool(store.path, factories, names).start()
