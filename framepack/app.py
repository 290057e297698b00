"""The standalone web app: the REST API and the FramePack tab in one FastAPI application.

    app = create_app(StandaloneHost("outputs", model="tiny"))   # then: uvicorn.run(app)

`framepack_cli.py serve` builds it. The API routes are registered first and the Gradio tab is
mounted at "/" afterwards: a Gradio mount at "/" swallows every route added after it.
Without the tab (`ui=False`, or framepack.ui missing) "/" answers a short JSON index instead.

What the server exposes is decided here (see framepack.api.guard and README, Security):
Gradio's `/file=` route serves only the output folder and Gradio's own temporary files (not
the working directory, Gradio's default), Gradio's allow-all CORS middleware is removed, the
page uses system fonts instead of a font CDN, and with `auth` both the API (HTTP Basic) and
the tab (Gradio's login) need credentials.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from framepack.api import API_PREFIX, DEFAULT_MAX_BODY, register_routes

log = logging.getLogger("framepack")

UiBuilder = Callable[[Any, Any], Any]  # (host, queue) -> gr.Blocks


def create_app(host, queue=None, ui: bool | UiBuilder = True, *, max_body_bytes: int = DEFAULT_MAX_BODY,
               auth: list[tuple[str, str]] | None = None, allowed_hosts: list[str] | None = None):
    """FastAPI app serving the API under /framepack/v1 and, with `ui`, the tab at "/".

    `queue`: the JobQueue to share (one is made when omitted; the app then shuts it down with
    the server). `ui`: True mounts `framepack.ui.create_ui(host, queue)` when that package is
    installed, False serves the API only, a callable builds the Blocks itself. `auth`:
    (user, password) pairs required by the API and the tab. `allowed_hosts`: Host header
    names accepted (`serve` passes the loopback names when it binds to loopback).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from fastapi import FastAPI

    from framepack import __version__
    from framepack.api.guard import Credentials, Guard
    from framepack.jobs.queue import JobQueue

    owns_queue = queue is None
    if owns_queue:
        queue = JobQueue(host)  # lists the jobs a crash, kill or restart interrupted; removes unresumable leftovers
    app = FastAPI(title="FramePack", version=__version__,
                  description=f"FramePack video generation. REST API under {API_PREFIX}.")
    app.state.framepack_host, app.state.framepack_queue = host, queue
    register_routes(app.add_api_route, host, queue, max_body_bytes=max_body_bytes)
    if owns_queue:
        app.add_event_handler("shutdown", queue.shutdown)  # stop a running job cleanly, cancel the rest

    builder = _ui_builder(ui)
    app.state.framepack_ui = None
    credentials = Credentials(auth) if auth else None
    documentation = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
    if builder is None:
        app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
        protected: tuple[str, ...] = ("",)
    else:
        import gradio as gr

        blocks = builder(host, queue)
        _use_system_fonts(blocks)
        blocks.allowed_paths = [str(host.video_dir())]
        blocks.auth = list(auth) if auth else None
        blocks.auth_message = "FramePack: sign in with the --auth credentials of this server"  # launch() sets it
        app.state.framepack_ui = blocks
        gr.mount_gradio_app(app, blocks.queue(), path="/")  # last: a mount at "/" swallows later routes
        _restrict_gradio(app)
        protected = (API_PREFIX, *documentation)  # the tab itself: Gradio's login page
    app.add_middleware(Guard, credentials=credentials, protected=protected, allowed_hosts=allowed_hosts,
                       plain_pages=documentation)
    return app


def _use_system_fonts(blocks) -> None:
    """Gradio's default theme links Google Fonts stylesheets; use the same look with system fonts.

    The theme decides the page's stylesheet links when the Blocks is built, so the built Blocks
    gets the font-less theme's CSS and (empty) stylesheet list.
    """
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    blocks.theme, blocks.theme_css, blocks.stylesheets = theme, theme._get_theme_css(), theme._stylesheets


def _restrict_gradio(app) -> None:
    """The mounted Gradio app: no allow-all CORS, and `/file=` limited to what it should serve.

    Gradio 3.43 serves any file under the process's working directory through `/file=` (its
    "app directory" rule) and sends `Access-Control-Allow-Origin: *`. The working directory rule
    is pointed at Gradio's own upload folder, which it serves anyway; `blocks.allowed_paths` adds
    the output folder. Uploads, Gradio's temporary copies and outputs stay reachable.
    """
    from fastapi.middleware.cors import CORSMiddleware
    from starlette.routing import Mount

    for route in app.routes:
        if isinstance(route, Mount) and hasattr(route.app, "uploaded_file_dir"):
            gradio_app = route.app
            gradio_app.user_middleware = [m for m in gradio_app.user_middleware if m.cls is not CORSMiddleware]
            gradio_app.middleware_stack = None  # rebuilt on the first request without it
            gradio_app.cwd = str(gradio_app.uploaded_file_dir)


def _ui_builder(ui: bool | UiBuilder) -> UiBuilder | None:
    if callable(ui):
        return ui
    if not ui:
        return None
    try:
        from framepack.ui import create_ui
    except ImportError as error:
        # only a missing tab package is tolerated; a broken one must show its real error
        if getattr(error, "name", None) not in ("framepack.ui",) and "create_ui" not in str(error):
            raise
        log.warning("FramePack tab not available (%s); serving the API only", error)
        return None
    return create_ui


def _index() -> dict[str, str]:
    return {"name": "FramePack", "api": API_PREFIX, "docs": "/docs",
            "jobs": f"{API_PREFIX}/jobs", "codecs": f"{API_PREFIX}/codecs"}
