"""The tab's Stop / Skip / Pause, as small routes the page calls with `fetch` (javascript/framepack.js).

    POST {prefix}/stop   {"job": id, "task": page task id} -> {"status": html}
    POST {prefix}/skip   {"job": ..., "task": ...}         -> {"status": html}
    POST {prefix}/pause  {"job": ..., "task": ...}         -> {"status": html, "label": "Pause" | "Resume"}
    POST {prefix}/jobs   {}                                -> {"html": the jobs panel (running, queued, history)}
    POST {prefix}/resume {"job": id}                       -> {"status": html} (JobQueue.resume, as the API's resume)
    POST {prefix}/cancel-batch {"job": batch id}           -> {"status": html} (the batch's unfinished jobs)

Why not Gradio events: inside SD.Next every Gradio event makes the browser re-render the
loading state of SD.Next's whole page (thousands of components), which takes seconds of
browser time while a generation keeps both CPU cores busy. A fetch costs the page nothing, so
these buttons answer at once during a run. The rules are `framepack.ui.logic`'s (the job this
page started, found by job id or by the page's task id; Stop also reaches a job not yet
submitted). Registered through the host's `add_api_route` (SD.Next's puts them under `--auth`).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime.

import json
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from framepack.ui import continue_actions, logic

PAGE_PREFIX = "/framepack/v1/page"
MAX_BODY = 4096
MAX_ID = 200


class _BadBody(ValueError):
    pass


class _NotJson(ValueError):
    pass


async def _ids(request: Request) -> tuple[str, str]:
    # only application/json: another site's page can POST text/plain or a form here without asking (no CORS
    # preflight) and stop the user's job; it cannot send application/json
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise _NotJson(f"the body must be sent as Content-Type: application/json (got {media_type or 'none'!r})")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _BadBody(f"body larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise _BadBody("body: expected a JSON object like {\"job\": \"...\", \"task\": \"...\"}") from None
    if not isinstance(data, dict):
        raise _BadBody("body: expected a JSON object like {\"job\": \"...\", \"task\": \"...\"}")
    ids = []
    for name in ("job", "task"):
        value = data.get(name) or ""
        if not isinstance(value, str) or len(value) > MAX_ID:
            raise _BadBody(f"{name}: expected a text of at most {MAX_ID} characters")
        ids.append(value)
    return ids[0], ids[1]


def register_page_routes(add_api_route: Callable[..., Any], queue, prefix: str = PAGE_PREFIX) -> list[str]:
    """Add the routes; returns "POST path" for each."""

    def endpoint(action: Callable[[str, str], dict]):
        async def handle(request: Request) -> JSONResponse:
            try:
                job, task = await _ids(request)
            except _NotJson as error:
                return JSONResponse({"detail": str(error)}, status_code=415)
            except _BadBody as error:
                return JSONResponse({"detail": str(error)}, status_code=400)
            return JSONResponse(await run_in_threadpool(action, job, task))

        return handle

    def stop(job: str, task: str) -> dict:
        return {"status": logic.stop_job(queue, job or None, task or None)}

    def skip(job: str, task: str) -> dict:
        return {"status": logic.skip_section(queue, job or None, task or None)}

    def pause(job: str, task: str) -> dict:
        label, status = logic.toggle_pause(queue, job or None, task or None)
        return {"status": status, "label": label}

    def jobs(job: str, task: str) -> dict:
        return {"html": logic.jobs_html(queue)}

    def resume(job: str, task: str) -> dict:
        return {"status": continue_actions.resume_job(queue, job)}

    def cancel_batch(job: str, task: str) -> dict:
        return {"status": continue_actions.cancel_batch(queue, job)}

    registered = []
    for name, action in (("stop", stop), ("skip", skip), ("pause", pause), ("jobs", jobs), ("resume", resume),
                         ("cancel-batch", cancel_batch)):
        path = f"{prefix.rstrip('/')}/{name}"
        add_api_route(path, endpoint(action), methods=["POST"], include_in_schema=False)
        registered.append(f"POST {path}")
    return registered
