"""OpenAPI documentation for the REST API: response models and the request body schemas.

The endpoints validate bodies themselves (framepack.api.validation) and return JSONResponse
objects, so these models only describe the API in `/docs` and `/openapi.json`; they never
filter or reject what the endpoints return.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from framepack.api.validation import OUTPUT_KEY, PLAN_FIELDS

IMAGE_DOC = "base64 image data or a data URL (data:image/png;base64,...); null for none"


class JobState(BaseModel):
    """A job as `GET /jobs/{id}` reports it (its record, plus links and queue position)."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str = Field(description="queued, running, completed, interrupted (stopped while running), failed or "
                                    "cancelled (removed before it started)")
    created: float
    started: float | None = None
    finished: float | None = None
    stage: str | None = Field(None, description="what the running job does now: loading (the model), sample, ...")
    section: int | None = Field(None, description="section being sampled (number in time order)")
    sections_done: int = 0
    sections: int = 0
    step: int = 0
    steps: int = 0
    progress: float = Field(0.0, description="0..1")
    it_per_s: float = 0.0
    eta: float | None = Field(None, description="seconds left (estimate)")
    error: str | None = None
    seed: int
    plan: str = Field(description="plan summary: frames, true duration, sections")
    video: bool = Field(description="a video file was saved")
    frames: bool = Field(description="a raw frames .safetensors file was saved")
    frame_count: int | None = None
    timings: dict[str, float] = {}
    cancel_requested: bool = False
    ahead: int = Field(0, description="jobs that run before this one (queued jobs only)")
    video_url: str | None = None
    frames_url: str | None = None
    kind: str = Field("generate", description="generate, reroll (from a section of another job) or extend")
    source: dict[str, Any] = Field({}, description="what a re-roll or extension came from")
    resumes: int = Field(0, description="times this job was resumed")
    resumable: bool = Field(False, description="interrupted or failed with a checkpoint: POST .../resume continues it")
    checkpoints: bool = Field(False, description="the job's checkpoints are kept: it can be re-rolled or resumed; "
                                                 "DELETE deletes them")
    resume_url: str | None = None


class JobList(BaseModel):
    jobs: list[JobState]


class Codecs(BaseModel):
    codecs: list[str] = Field(description="encoders that really open here; 'none' writes no video")
    hardware: list[str]
    default: str
    containers: list[str]


class PlanResult(BaseModel):
    summary: str
    table: list[dict[str, Any]] = Field(description="one row per section, in time order")
    plan: dict[str, Any] = Field(description="VideoPlan.to_dict()")
    resources: Optional[dict[str, Any]] = Field(
        None, description="predicted vram_peak_bytes, ram_peak_bytes, disk_bytes, seconds (null when unknown), "
                          "the offload and vae_tiling auto picks, fits, and refusal (what would fit) when it does not")


class Problem(BaseModel):
    detail: str


def job_body_schema() -> dict[str, Any]:
    """JSON schema of the POST /jobs body: GenerationRequest fields + "output": OutputOptions."""
    from framepack.request.model import GenerationRequest
    from framepack.request.output import OutputOptions

    schema = _inline(GenerationRequest.model_json_schema())
    properties = schema["properties"]
    for name in ("image", "end_image"):
        properties[name] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None,
                            "description": f"{name.replace('_', ' ')}: {IMAGE_DOC}"}
    properties["keyframes"]["items"]["properties"]["image"] = {"type": "string", "description": IMAGE_DOC}
    output = _inline(OutputOptions.model_json_schema())
    output["description"] = "Output options (all optional): " + output.get("description", "")
    properties[OUTPUT_KEY] = output
    schema["title"] = "JobSubmission"
    schema["description"] = ("Generation settings at the top level, output options under \"output\". "
                             "Give `image` or choose a `blank_start` (text-to-video).")
    schema["examples"] = [{"image": "iVBORw0KGgo...", "prompt": "a paper boat drifts down a stream",
                         "duration": 5, "fps": 30, "resolution": 640, "steps": 25, "seed": -1,
                          OUTPUT_KEY: {"codec": "libx264", "save_frames": True}}]
    return schema


def plan_body_schema() -> dict[str, Any]:
    """JSON schema of the POST /plan body (the planner's fields; a full job body is also accepted)."""
    full = job_body_schema()
    keep = (*PLAN_FIELDS, "keyframes")
    properties = {name: copy.deepcopy(full["properties"][name]) for name in keep}
    properties["keyframes"] = {
        "type": "array", "description": "WHEN strings, or keyframe objects (their images are ignored)",
        "items": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"when": {"type": "string"}}}]},
    }
    return {"title": "PlanBody", "type": "object", "properties": properties,
            "description": "The planner's settings; the same body as POST /jobs is accepted (other fields are "
                           "checked for unknown names, then ignored).",
            "examples": [{"duration": 5, "fps": 30, "section_prompts": "1: she smiles\n2-3: she waves"}]}


def reroll_body_schema() -> dict[str, Any]:
    """JSON schema of the POST /jobs/{id}/reroll body."""
    from framepack.request.output import OutputOptions

    output = _inline(OutputOptions.model_json_schema())
    return {"title": "RerollBody", "type": "object", "required": ["from_section"], "additionalProperties": False,
            "properties": {
                "from_section": {"type": "integer", "minimum": 1, "description": "first section (time order, from 1) "
                                 "to generate again; F1 reuses sections 1..N-1, the original model N+1..last"},
                "seed": {"type": ["integer", "null"], "description": "seed of the new sections (-1 or left out: "
                         "random, unless section_prompts is given)"},
                "section_prompts": {"type": ["string", "null"], "description": "a new prompt schedule"},
                OUTPUT_KEY: {**output, "description": "output options over the job's own"}},
            "examples": [{"from_section": 3, "seed": 7}]}


def extend_body_schema() -> dict[str, Any]:
    """JSON schema of the POST /extend body: a clip (job id or video) + request fields + output."""
    from framepack.jobs.continuation import EXTEND_REFUSED

    full = job_body_schema()
    properties = {name: value for name, value in full["properties"].items()
                  if name not in (*EXTEND_REFUSED, "loras")}
    properties["job"] = {"type": "string", "description": "a finished job whose video (or raw frames) to continue"}
    properties["video"] = {"type": "string", "description": "a video file (MP4, MOV, MKV, WebM, AVI, GIF) as base64 "
                                                            "or a data URL; at most the request body limit"}
    properties["variant"] = {**properties["variant"], "default": None,
                             "description": "f1 continues the clip (default); original bridges its last frame to "
                                            "end_image (the default when end_image is given)"}
    return {"title": "ExtendBody", "type": "object", "properties": properties,
            "description": "Give \"job\" or \"video\". The start image, fps and frame size come from the clip.",
            "examples": [{"job": "3f2a9c0d1b7e", "duration": 4, "prompt": "the boat reaches the shore"}]}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` value documenting a JSON request body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace local `#/$defs/...` references with their definitions (OpenAPI has no $defs here)."""
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(definitions[ref.rsplit("/", 1)[1]]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


def batch_body_schema() -> dict[str, Any]:
    """JSON schema of the POST /batches body: shared settings, "items" (each a job's own settings), "name"."""
    from framepack.request.limits import MAX_BATCH_JOBS

    job = job_body_schema()
    shared = {key: value for key, value in job["properties"].items()}
    return {"title": "BatchSubmission", "type": "object",
            "description": "Settings every job shares at the top level; each entry of \"items\" holds one job's "
                           "own settings (its uploaded \"image\" as base64, its \"prompt\", ...) over them.",
            "properties": {**shared, "name": {"type": "string", "maxLength": 200},
                           "items": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_JOBS,
                                     "items": {"type": "object", "properties": shared}}},
            "required": ["items"]}
