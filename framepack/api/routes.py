"""The REST API endpoints, registered through any FastAPI-style `add_api_route`.

SD.Next passes `shared.api.add_api_route` (which puts the routes under the host's `--auth`);
the standalone app passes `app.add_api_route`. Nothing here knows which one it got: the
endpoints only use Starlette request/response classes, return `JSONResponse`s themselves and
word their own errors, so the host's exception handlers and response-model filtering never
change what a client sees.

    POST   {prefix}/jobs              submit -> 202 job state (its "id" at once)
    GET    {prefix}/jobs              list (?status=queued|running|completed|interrupted|failed|cancelled)
    GET    {prefix}/jobs/{id}         state: status, section, step, progress, error, resumable, ...
    DELETE {prefix}/jobs/{id}         cancel (queued: at once; running: stops between steps); on a
                                      finished job with checkpoints: delete them
    POST   {prefix}/jobs/{id}/resume  continue an interrupted or failed job from its last checkpoint
    POST   {prefix}/jobs/{id}/reroll  a new job from section N on, reusing the sections before it
    POST   {prefix}/extend            continue a finished job's video, or an uploaded video
    GET    {prefix}/jobs/{id}/video   the video file          (409 until finished)
    GET    {prefix}/jobs/{id}/frames  the raw frames file      (409 until finished)
    GET    {prefix}/jobs/{id}/preview the latest preview (PNG)
    POST   {prefix}/batches           many jobs as one batch (items: uploaded images + prompts) -> 202
    GET    {prefix}/batches           list batches
    GET    {prefix}/batches/{id}      a batch: counts by status and its jobs
    DELETE {prefix}/batches/{id}      cancel its queued jobs, stop its running ones
    POST   {prefix}/batches/{id}/retry run its failed, cancelled and interrupted jobs again
    GET    {prefix}/codecs            encoders that work here
    POST   {prefix}/plan              the section plan for given settings
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime.

import inspect
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from framepack.api import schema
from framepack.api.validation import (BodyError, error_items, item, parse_batch_body, parse_extend_body, parse_job_body,
                                      parse_plan_body, parse_reroll_body, parse_resource_fields, parse_resume_body,
                                      reroll_options)
from framepack.errors import FramePackError, InputError
from framepack.jobs.continuation import EXTEND_REFUSED, JobConflict, JobNotFound
from framepack.jobs.queue import QueueFull
from framepack.jobs.resources import assess, distinct_prompts, resources_dict, workload_inputs
from framepack.request.events import STATUSES, Status

log = logging.getLogger("framepack")

API_PREFIX = "/framepack/v1"
DEFAULT_MAX_BODY = 64 * 1024 * 1024
"""Largest accepted JSON body (images are base64 inside it); larger ones get 413."""

VIDEO_MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mkv": "video/x-matroska",
                     ".mov": "video/quicktime", ".webm": "video/webm", ".avi": "video/x-msvideo"}
FRAMES_MEDIA_TYPE = "application/octet-stream"
TAGS = ["FramePack"]


def register_routes(add_api_route: Callable[..., Any], host, queue, *, prefix: str = API_PREFIX,
                    max_body_bytes: int = DEFAULT_MAX_BODY) -> list[str]:
    """Register every endpoint; returns "METHOD path" for each, for logs and tests.

    `add_api_route(path, endpoint, methods=[...], response_model=..., status_code=...)` is
    FastAPI's signature; documentation extras (summary, tags, request body schema) are passed
    only when the function accepts them.
    """
    api = FramePackApi(host, queue, prefix.rstrip("/"), max_body_bytes)
    routes = [
        ("/jobs", api.submit_job, "POST", schema.JobState, 202, "Submit a generation job",
         schema.request_body(schema.job_body_schema())),
        ("/jobs", api.list_jobs, "GET", schema.JobList, 200, "List jobs (oldest first)", None),
        ("/jobs/{job_id}", api.get_job, "GET", schema.JobState, 200, "Job state and progress", None),
        ("/jobs/{job_id}", api.cancel_job, "DELETE", schema.JobState, 200,
         "Cancel a queued or running job, or delete a finished job's checkpoints", None),
        ("/jobs/{job_id}/resume", api.resume_job, "POST", schema.JobState, 202,
         "Resume an interrupted or failed job from its last checkpoint", None),
        ("/jobs/{job_id}/reroll", api.reroll_job, "POST", schema.JobState, 202,
         "Generate a job again from a section on (a new job)", schema.request_body(schema.reroll_body_schema())),
        ("/extend", api.extend, "POST", schema.JobState, 202, "Continue a video (a new job)",
         schema.request_body(schema.extend_body_schema())),
        ("/jobs/{job_id}/video", api.get_video, "GET", None, 200, "Download the video", None),
        ("/jobs/{job_id}/frames", api.get_frames, "GET", None, 200,
         "Download the raw frames (.safetensors)", None),
        ("/jobs/{job_id}/preview", api.get_preview, "GET", None, 200, "Latest preview image (PNG)", None),
        ("/batches", api.submit_batch, "POST", None, 202, "Submit a batch of jobs (uploaded images and prompts)",
         schema.request_body(schema.batch_body_schema())),
        ("/batches", api.list_batches, "GET", None, 200, "List batches", None),
        ("/batches/{batch_id}", api.get_batch, "GET", None, 200, "A batch and its jobs", None),
        ("/batches/{batch_id}", api.cancel_batch, "DELETE", None, 200, "Cancel a batch's unfinished jobs", None),
        ("/batches/{batch_id}/retry", api.retry_batch, "POST", None, 202,
         "Run a batch's failed, cancelled and interrupted jobs again", None),
        ("/codecs", api.list_codecs, "GET", schema.Codecs, 200, "Video encoders that work here", None),
        ("/plan", api.plan, "POST", schema.PlanResult, 200, "Plan sections, frames and prompts",
         schema.request_body(schema.plan_body_schema())),
    ]
    accepts = _accepted_keywords(add_api_route)
    registered = []
    for path, endpoint, method, model, status, summary, openapi_extra in routes:
        kwargs: dict[str, Any] = {"methods": [method], "status_code": status}
        if model is not None:
            kwargs["response_model"] = model
        extras = {"summary": summary, "tags": TAGS, "openapi_extra": openapi_extra,
                  "responses": _ERROR_RESPONSES}
        kwargs.update({key: value for key, value in extras.items() if value is not None and accepts(key)})
        add_api_route(api.prefix + path, endpoint, **kwargs)
        registered.append(f"{method} {api.prefix}{path}")
    return registered


_ERROR_RESPONSES = {404: {"model": schema.Problem, "description": "no such job, or nothing saved"},
                    409: {"model": schema.Problem, "description": "not finished yet / already finished"},
                    413: {"model": schema.Problem, "description": "request body too large"},
                    415: {"model": schema.Problem, "description": "the body is not sent as application/json"},
                    429: {"model": schema.Problem, "description": "too many jobs are waiting"}}


def _accepted_keywords(function: Callable) -> Callable[[str], bool]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return lambda name: False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return lambda name: True
    names = {p.name for p in parameters}
    return lambda name: name in names


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a field name holding a lone surrogate (valid in
    JSON text, not encodable as UTF-8) is echoed back as \\udxxx instead of failing with a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _problem(status: int, detail: Any) -> JSONResponse:
    return AsciiJSONResponse({"detail": detail}, status_code=status)


def _refused(error: FramePackError) -> JSONResponse:
    """What the queue says to a submission, a continuation or a batch, as its HTTP answer."""
    from framepack.jobs.checkpoint import CheckpointError

    if isinstance(error, JobNotFound):
        return _problem(404, str(error))
    if isinstance(error, (JobConflict, CheckpointError)):
        return _problem(409, str(error))
    if isinstance(error, InputError):  # what the submission checks refuse (LoRA files, encoder settings)
        return _problem(422, error_items(error))
    if isinstance(error, QueueFull):
        return _problem(429, str(error))
    return _problem(503, str(error))  # the queue is shutting down


class FramePackApi:
    """The endpoint functions, bound to one host and queue."""

    def __init__(self, host, queue, prefix: str, max_body_bytes: int):
        self.host, self.queue, self.prefix, self.max_body_bytes = host, queue, prefix, int(max_body_bytes)

    # ---- jobs --------------------------------------------------------------------------
    async def submit_job(self, request: Request) -> Response:
        parsed = await self._parse_with_defaults(request, parse_job_body, self.host.lora_folder(),
                                                 self.host.model_folder())
        if isinstance(parsed, Response):
            return parsed
        generation, options = parsed
        try:
            job = await run_in_threadpool(self.queue.submit, generation, options)
        except FramePackError as error:
            return _refused(error)
        log.info("FramePack API: job %s queued (%s)", job.id, generation.plan().summary())
        return AsciiJSONResponse(self._state(job), status_code=202,
                            headers={"Location": f"{self.prefix}/jobs/{job.id}"})

    def list_jobs(self, status: Optional[str] = None) -> Response:
        if status is not None and status not in STATUSES:
            return _problem(422, [{"loc": ["query", "status"], "type": "enum",
                                   "msg": f"status: must be one of {', '.join(STATUSES)}, not {status!r}"}])
        jobs = self.queue.list()
        ahead = self._ahead(jobs)
        states = [self._state(job, ahead.get(job.id, 0)) for job in jobs if status is None or job.status == status]
        return AsciiJSONResponse({"jobs": states})

    def get_job(self, job_id: str) -> Response:
        job = self.queue.get(job_id)
        if job is None:
            return self._unknown(job_id)
        return AsciiJSONResponse(self._state(job))

    def cancel_job(self, job_id: str) -> Response:
        job = self.queue.get(job_id)
        if job is None:
            return self._unknown(job_id)
        if job.status.finished and job.record.checkpoint:  # an interrupted job's checkpoint, or kept ones
            try:
                job = self.queue.discard(job_id)
            except FramePackError as error:
                return _problem(409, str(error))
            log.info("FramePack API: checkpoints of job %s deleted", job_id)
            return AsciiJSONResponse(self._state(job))
        if job.status in (Status.COMPLETED, Status.FAILED):
            return _problem(409, f"job {job_id} has already finished ({job.status}); there is nothing to cancel")
        self.queue.cancel(job_id)
        # a queued job is cancelled at once; a running one stops after its current step (202)
        return AsciiJSONResponse(self._state(job), status_code=202 if job.status == Status.RUNNING else 200)

    async def resume_job(self, job_id: str, request: Request) -> Response:
        body = await self._read_json(request, optional=True)
        if isinstance(body, Response):
            return body
        try:
            parse_resume_body(body)
        except BodyError as error:
            return _problem(422, error.items)
        return await self._start(lambda: self.queue.resume(job_id), f"job {job_id} resumed")

    async def reroll_job(self, job_id: str, request: Request) -> Response:
        body = await self._read_json(request)
        if isinstance(body, Response):
            return body
        try:
            arguments = parse_reroll_body(body)
        except BodyError as error:
            return _problem(422, error.items)
        output = arguments.pop("output")

        def reroll():
            job = self.queue.get(job_id)
            options = None if job is None or not output else reroll_options(job.options, output)
            return self.queue.reroll(job_id, **arguments, options=options)

        return await self._start(reroll, f"job {job_id} re-rolled from section {arguments['from_section']}")

    async def extend(self, request: Request) -> Response:
        parsed = await self._parse_with_defaults(request, parse_extend_body, EXTEND_REFUSED)
        if isinstance(parsed, Response):
            return parsed
        source, fields, options = parsed

        def extend():
            if "job" in source:
                return self.queue.extend(self.queue.clip_of(source["job"]), fields, options, strict=True,
                                         source={"job": source["job"]})
            return self.queue.extend(source["video"], fields, options, strict=True)

        return await self._start(extend, "extension queued")

    async def _parse_with_defaults(self, request: Request, parse: Callable[..., Any], *args: Any) -> Any:
        """The JSON body through `parse(body, output defaults, *args)`, or the Response refusing it.

        Parsers decode images and videos and probe codecs: they run off the event loop."""
        body = await self._read_json(request)
        if isinstance(body, Response):
            return body
        defaults = {"keep_incomplete": bool(self.host.keep_incomplete())}
        try:
            return await run_in_threadpool(parse, body, defaults, *args)
        except BodyError as error:
            return _problem(422, error.items)

    async def _start(self, start: Callable[[], Any], what: str) -> Response:
        """Run a queue call that makes a job; its errors as 404 / 409 / 422 / 429 / 503."""
        try:
            job = await run_in_threadpool(start)
        except BodyError as error:
            return _problem(422, error.items)
        except FramePackError as error:
            return _refused(error)
        log.info("FramePack API: %s: job %s (%s)", what, job.id, job.record.plan)
        return AsciiJSONResponse(self._state(job), status_code=202, headers={"Location": f"{self.prefix}/jobs/{job.id}"})

    # ---- batches -----------------------------------------------------------------------
    async def submit_batch(self, request: Request) -> Response:
        from framepack.jobs.batch import BatchEntry, submit_batch

        parsed = await self._parse_with_defaults(request, parse_batch_body)
        if isinstance(parsed, Response):
            return parsed
        name, jobs = parsed
        entries = [BatchEntry(generation, options, f"items #{n + 1}") for n, (generation, options) in enumerate(jobs)]
        try:
            batch_id, _ = await run_in_threadpool(submit_batch, self.queue, entries, name)
        except FramePackError as error:
            return _refused(error)
        log.info("FramePack API: batch %s queued (%d jobs)", batch_id, len(entries))
        return AsciiJSONResponse(await run_in_threadpool(self._batch, batch_id), status_code=202,
                                 headers={"Location": f"{self.prefix}/batches/{batch_id}"})

    def list_batches(self) -> Response:
        from framepack.jobs.batch import list_batches

        return AsciiJSONResponse({"batches": [self._batch_view(state, jobs=False)
                                              for state in list_batches(self.queue)]})

    def get_batch(self, batch_id: str) -> Response:
        from framepack.jobs.batch import BatchNotFound

        try:
            return AsciiJSONResponse(self._batch(batch_id))
        except BatchNotFound as error:
            return _problem(404, str(error))

    def cancel_batch(self, batch_id: str) -> Response:
        from framepack.jobs.batch import BatchNotFound, cancel_batch

        try:
            cancel_batch(self.queue, batch_id)
            return AsciiJSONResponse(self._batch(batch_id))
        except BatchNotFound as error:
            return _problem(404, str(error))

    async def retry_batch(self, batch_id: str) -> Response:
        from framepack.jobs.batch import BatchNotFound, retry_batch

        try:
            await run_in_threadpool(retry_batch, self.queue, batch_id)
        except BatchNotFound as error:
            return _problem(404, str(error))
        except (JobConflict, FramePackError) as error:
            return _problem(409, str(error))
        return AsciiJSONResponse(self._batch(batch_id), status_code=202)

    def _batch(self, batch_id: str) -> dict[str, Any]:
        from framepack.jobs.batch import batch_state

        return self._batch_view(batch_state(self.queue, batch_id))

    def _batch_view(self, state: dict[str, Any], jobs: bool = True) -> dict[str, Any]:
        view = {key: state[key] for key in ("id", "name", "created", "total", "counts", "finished")}
        view["url"] = f"{self.prefix}/batches/{state['id']}"
        if jobs:
            view["jobs"] = [self._state(job) for job in state["jobs"]]
        return view

    # ---- results -----------------------------------------------------------------------
    def get_video(self, job_id: str) -> Response:
        return self._download(job_id, "video")

    def get_frames(self, job_id: str) -> Response:
        return self._download(job_id, "frames")

    def get_preview(self, job_id: str) -> Response:
        job = self.queue.get(job_id)
        if job is None:
            return self._unknown(job_id)
        preview = job.preview
        if preview is None:
            return _problem(404, f"job {job_id} has no preview yet (previews arrive after the first step "
                                 f"when 'preview' is on)")
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(preview).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})

    def _download(self, job_id: str, kind: str) -> Response:
        job = self.queue.get(job_id)
        if job is None:
            return self._unknown(job_id)
        what = "video" if kind == "video" else "raw frames file"
        if not job.status.finished:
            return _problem(409, f"job {job_id} is {job.status}; its {what} can be downloaded when it has "
                                 f"finished (poll GET {self.prefix}/jobs/{job_id})")
        path = job.record.outputs.get(kind)
        if path is None:
            return _problem(404, self._why_nothing(job, kind))
        path = Path(path)
        if not path.is_file():
            return _problem(404, f"the {what} of job {job_id} ({path.name}) no longer exists on the server")
        if kind == "video":
            media_type = VIDEO_MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
            return FileResponse(path, media_type=media_type, filename=path.name, content_disposition_type="inline")
        return FileResponse(path, media_type=FRAMES_MEDIA_TYPE, filename=path.name)

    def _why_nothing(self, job, kind: str) -> str:
        what = "video" if kind == "video" else "raw frames"
        if job.status == Status.FAILED:
            return f"job {job.id} failed, so no {what} was saved: {job.record.error}"
        if job.status == Status.CANCELLED:
            return f"job {job.id} was cancelled before it started; nothing was saved"
        if job.status == Status.INTERRUPTED:
            return (f"job {job.id} was interrupted and saved no {what} (stopped before the first frames, or "
                    f"output.keep_incomplete is off)")
        if kind == "video":
            return f"job {job.id} did not save a video (output.save_video is off or output.codec is 'none')"
        return f"job {job.id} did not save raw frames; submit with \"output\": {{\"save_frames\": true}}"

    # ---- settings ----------------------------------------------------------------------
    def list_codecs(self, refresh: bool = False) -> Response:
        from framepack.io.codecs import available_encoders, is_hardware
        from framepack.request.limits import CONTAINERS
        from framepack.request.output import OutputOptions

        codecs = available_encoders(refresh=refresh)
        return AsciiJSONResponse({"codecs": codecs, "hardware": [c for c in codecs if is_hardware(c)],
                                  "default": OutputOptions.model_fields["codec"].default,
                                  "containers": list(CONTAINERS)})

    async def plan(self, request: Request) -> Response:
        body = await self._read_json(request)
        if isinstance(body, Response):
            return body
        try:
            return AsciiJSONResponse(await run_in_threadpool(plan_response, body, self.host))
        except BodyError as error:
            return _problem(422, error.items)

    # ---- helpers -----------------------------------------------------------------------
    async def _read_json(self, request: Request, optional: bool = False):
        """The decoded JSON body, or the error Response (415 not JSON, 413 too large, 422 not valid JSON).

        Only `application/json` is read: a web page can send `text/plain` or a form to a local
        server without asking first (no CORS preflight), but not `application/json`. With
        `optional`, an empty body reads as None (still sent as application/json: an action a web
        page could trigger with a plain POST is not taken).
        """
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            shown = f"{media_type!r}" if media_type else "none"
            return _problem(415, f"the body must be sent as Content-Type: application/json (got {shown})")
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return _problem(400, f"invalid Content-Length header {declared!r}")
            if size > limit:
                return self._too_large(size)
        data = bytearray()
        try:
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    return self._too_large(None)
        except ClientDisconnect:
            return _problem(400, "the client disconnected before the body was complete")
        if not data.strip():
            if optional:
                return None
            return _problem(422, [item((), "the body is empty; send a JSON object of settings", "missing")])
        try:
            return json.loads(bytes(data), parse_constant=float, parse_int=_json_int)
        except RecursionError:
            return _problem(422, [item((), "the body is not valid JSON here: it is nested too deeply", "json_invalid")])
        except (ValueError, UnicodeDecodeError) as error:
            return _problem(422, [item((), f"the body is not valid JSON: {error}", "json_invalid")])

    def _too_large(self, size: Optional[int]) -> Response:
        limit_mb = self.max_body_bytes / (1024 * 1024)
        shown = f" ({size / (1024 * 1024):.1f} MB)" if size is not None else ""
        return _problem(413, f"the request body is too large{shown}; the limit is {limit_mb:g} MB. Send smaller "
                             f"images (JPEG or WebP, or resized near the generation resolution)")

    def _unknown(self, job_id: str) -> Response:
        kept = getattr(self.queue, "history", None)
        note = f" (finished jobs are kept for the last {kept} submissions)" if kept else ""
        return _problem(404, f"no job with id {job_id!r}{note}")

    def _ahead(self, jobs) -> dict[str, int]:
        """For each queued job, how many jobs run before it."""
        ahead, count = {}, 0
        for job in jobs:  # the queue lists in submission order, which is run order
            if job.status == Status.QUEUED:
                ahead[job.id] = count
            if not job.status.finished:
                count += 1
        return ahead

    def _state(self, job, ahead: Optional[int] = None) -> dict[str, Any]:
        """What a client sees of a job: its record, with links and queue position."""
        record = job.record
        base = f"{self.prefix}/jobs/{job.id}"
        if ahead is None:
            ahead = self._ahead(self.queue.list()).get(job.id, 0) if job.status == Status.QUEUED else 0
        return {
            "id": record.id, "status": record.status.value, "created": record.created, "started": record.started,
            "finished": record.finished, "stage": record.stage, "section": record.section,
            "sections_done": record.sections_done, "sections": record.sections, "step": record.step,
            "steps": record.steps, "progress": round(record.progress, 4), "it_per_s": round(record.it_per_s, 3),
            "eta": None if record.eta is None else round(record.eta, 1), "error": record.error, "seed": record.seed,
            "plan": record.plan, "video": record.video is not None, "frames": record.frames is not None,
            "frame_count": record.frame_count, "timings": {k: round(v, 3) for k, v in record.timings.items()},
            "ahead": ahead, "cancel_requested": not job.status.finished and job.control.should_stop(),
            "video_url": f"{base}/video" if record.video else None,
            "frames_url": f"{base}/frames" if record.frames else None,
            "kind": record.kind, "source": record.source, "resumes": record.resumes, "worker": record.worker,
            "batch": getattr(job, "batch", None),
            "resumable": bool(record.resumable and job.status.finished),
            "checkpoints": bool(record.checkpoint and job.status.finished),
            "resume_url": f"{base}/resume" if record.resumable and job.status.finished else None,
        }


def plan_response(body: Any, host: Any = None) -> dict[str, Any]:
    """What POST /plan answers for a JSON body (raises BodyError): the summary, table and plan, and
    the resources the run needs on the host's machine (`resources`: VRAM, RAM, disk, time, the
    offload and VAE tiling auto picks, whether it fits and what would otherwise). Images are not
    decoded: the largest bucket at the resolution is planned, the worst case for any image."""
    plan = parse_plan_body(body)
    answer = {"summary": plan.summary(), "table": plan.table(), "plan": plan.to_dict()}
    describe = getattr(host, "resource_machine", None)
    if describe is not None:
        values, save_raw = parse_resource_fields(body)
        workload = workload_inputs({**values, "variant": plan.variant, "latent_window_size": plan.latent_window_size,
                                    "interpolation": plan.interpolation}, plan.num_sections,
                                   distinct_prompts(plan), save_raw=save_raw)
        answer["resources"] = resources_dict(*assess(describe(plan.variant), workload))
    return answer


def _json_int(text: str):
    """JSON integers as Python ints, except absurdly long ones (Python refuses to convert more than
    4300 digits): those become infinities, which every numeric field refuses, naming itself."""
    if len(text) <= 1000:
        return int(text)
    return float("-inf") if text.startswith("-") else float("inf")
