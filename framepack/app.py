"""The standalone web app: the REST API and the FramePack tab in one FastAPI application.

    app = create_app(StandaloneHost("outputs", model="tiny"))   # then: uvicorn.run(app)

`framepack_cli.py serve` builds it. The API routes are registered first and the Gradio tab is
mounted at "/" afterwards: a Gradio mount at "/" swallows every route added after it.
Without the tab (`ui=False`, or framepack.ui missing) "/" answers a short JSON index instead.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from framepack.api import API_PREFIX, DEFAULT_MAX_BODY, register_routes

log = logging.getLogger("framepack")

UiBuilder = Callable[[Any, Any], Any]  # (host, queue) -> gr.Blocks


def create_app(host, queue=None, ui: bool | UiBuilder = True, *, max_body_bytes: int = DEFAULT_MAX_BODY):
    """FastAPI app serving the API under /framepack/v1 and, with `ui`, the tab at "/".

    `queue`: the JobQueue to share (one is made when omitted; the app then shuts it down with
    the server). `ui`: True mounts `framepack.ui.create_ui(host, queue)` when that package is
    installed, False serves the API only, a callable builds the Blocks itself.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from fastapi import FastAPI

    from framepack import __version__
    from framepack.jobs.queue import JobQueue

    owns_queue = queue is None
    if owns_queue:
        queue = JobQueue(host)
    app = FastAPI(title="FramePack", version=__version__,
                  description=f"FramePack video generation. REST API under {API_PREFIX}.")
    app.state.framepack_host, app.state.framepack_queue = host, queue
    register_routes(app.add_api_route, host, queue, max_body_bytes=max_body_bytes)
    if owns_queue:
        app.add_event_handler("shutdown", queue.shutdown)  # stop a running job cleanly, cancel the rest

    builder = _ui_builder(ui)
    app.state.framepack_ui = None
    if builder is None:
        app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
        return app
    import gradio as gr

    from framepack.ui.routes import register_page_routes

    register_page_routes(app.add_api_route, queue)  # the tab's Stop / Skip / Pause (before the mount)
    blocks = builder(host, queue)
    app.state.framepack_ui = blocks
    gr.mount_gradio_app(app, blocks.queue(), path="/")  # last: a mount at "/" swallows later routes
    return app


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
