"""`framepack_cli.py serve`: the standalone web app (tab + REST API) on the standalone host.

Binds 127.0.0.1:7870 by default: only programs on this machine can reach it, and requests
naming another host (DNS rebinding) are refused. `--auth USER:PASS` or `--auth-file FILE` puts
the API (HTTP Basic) and the tab (a login page) behind credentials; binding another address
without them prints a warning. Ctrl-C (or SIGTERM) stops the server gracefully: a running job
stops after its current step (its partial video is kept when keep-incomplete is on), queued
jobs are cancelled, then the process exits.
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
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="server log level (default info)")
    parser.set_defaults(func=run_serve)


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
    from framepack.host.standalone import StandaloneHost

    auth = credentials(args)

    _log_jobs(args.log_level)
    host = StandaloneHost(output_dir=args.output_dir, videos=args.output_dir, model=args.model, cache_dir=args.cache_dir,
                          offline=True if args.offline else None, device=args.device,
                          settings={"keep_incomplete": not args.no_keep_incomplete})
    loopback = _is_loopback(args.host)
    app = create_app(host, ui=not args.no_ui, max_body_bytes=int(args.max_body_mb * 1024 * 1024), auth=auth,
                     allowed_hosts=sorted(LOOPBACK_HOSTS | {args.host}) if loopback else None)
    queue = app.state.framepack_queue
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
        queue.shutdown()  # normally already done by the app's shutdown handler; harmless twice
    if not server.started:
        return 1  # the port could not be bound (uvicorn has said why)
    print("FramePack: stopped", file=sys.stderr, flush=True)
    return 0
