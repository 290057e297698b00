"""Checkpoints: what a job's work folder holds so the job can be resumed, re-rolled and listed later.

    <output>/.framepack-work/<job id>/
        owner-<pid>-<start>          the process running it now (framepack.io.workdir)
        job.json                     its JobRecord (status, progress, outputs), rewritten as it changes
        spec.json                    format and version, kind (generate, reroll, extend), the request
                                     (images as PNG), the output options, where it came from
        sections/000003.safetensors  the state after 3 sections (in generation order): one per section
        frames.log                   frames already streamed to the outputs (framepack.io.framelog)
        framepack-spill-*.raw        the inverted model's finished frames (framepack.engine.frames)

A section file holds the latent context (tensors) and, in its JSON metadata, the frame
assembler's state without its pending overlap frames (the loop decodes them again from the
context: a few MB per section instead of a few hundred), the frame log's length and the spill
file's chunks at that moment. Each file is written under a temporary name, flushed to disk and
renamed over its final name, after the spill file and frame log it counts are on disk: a crash at
any moment leaves the previous checkpoint whole. The latest section file is the checkpoint a
resume starts from; earlier ones let a re-roll start from any section.

Tensors are stored losslessly in the smallest float type that holds their values exactly (the
latents of a bf16 transformer take half the room of float32). Everything read back is checked
(format, version, types, shapes, file names) and every problem is an `CheckpointError` naming the
file: a damaged checkpoint is refused, never half-used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepack.errors import FramePackError, OutputError
from framepack.jobs.record import JobRecord
from framepack.request.model import GenerationRequest
from framepack.request.output import OutputOptions, build_output_from

if TYPE_CHECKING:
    import torch

log = logging.getLogger("framepack.jobs")

FORMAT = "framepack-checkpoint"
VERSION = 1
SPEC_NAME, RECORD_NAME, SECTIONS_DIR = "spec.json", "job.json", "sections"
KINDS = ("generate", "reroll", "extend")
MAX_SPEC_BYTES = 512 * 1024 * 1024
"""A spec holds the request's images as PNG: generous, but a spec file is never read without a bound."""
MAX_RECORD_BYTES = 16 * 1024 * 1024
_SECTION_FILE = re.compile(r"(\d{6})\.safetensors")
_EXACT_TYPES = ("bfloat16", "float16")  # torch dtypes by name: the CLI's companion commands never import torch


class CheckpointError(OutputError):
    """A checkpoint that is missing, damaged or not ours: it cannot be resumed from."""


@dataclass(frozen=True)
class JobSpec:
    """What a job makes, written once when it starts: enough to run it again from any checkpoint."""

    id: str
    kind: str
    request: GenerationRequest
    options: OutputOptions
    source: dict[str, Any] = field(default_factory=dict)
    """Where a re-roll or extension came from (job id, section, input clip), for people and records."""
    name: str | None = None
    """The exact output file stem the user chose (the CLI's `--out FILE`), or None."""
    overwrite: bool = False
    """Whether existing files of that exact name are replaced."""

    @property
    def stem(self) -> str:
        """The output file name (before its extension): the exact name, else the name, the seed, and
        what kind of job."""
        from framepack.io.paths import sanitize_filename

        if self.name is not None:
            return self.name
        suffix = {"reroll": f"-from{self.source.get('from_section', '')}", "extend": "-extended"}.get(self.kind, "")
        return f"{sanitize_filename(self.options.filename)}-{self.request.seed}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "id": self.id, "kind": self.kind,
                "request": self.request.to_dict(), "output": self.options.model_dump(mode="json"),
                "source": self.source, "name": self.name, "overwrite": self.overwrite, "written": time.time()}


@dataclass(frozen=True)
class SectionCheckpoint:
    """The state of a job after `position` sections (generation order), as a section file holds it."""

    position: int
    context_state: dict[str, Any]
    assembler_state: dict[str, Any]
    decoded_latents: int
    log_frames: int
    frame_size: tuple[int, int] | None
    """(height, width) of the frame log; None while no frame was logged."""
    spec_sha256: str
    path: Path


class JobCheckpoints:
    """The checkpoint files of one job's work folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.spec_path = self.folder / SPEC_NAME
        self.record_path = self.folder / RECORD_NAME
        self.sections = self.folder / SECTIONS_DIR
        self._spec_sha256: str | None = None

    # ---- writing ---------------------------------------------------------------------------
    def write_spec(self, spec: JobSpec) -> None:
        data = json.dumps(spec.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        write_atomic(self.spec_path, data)
        self._spec_sha256 = hashlib.sha256(data).hexdigest()

    def write_record(self, record: JobRecord) -> None:
        data = json.dumps(record.to_dict(), ensure_ascii=False, default=str, allow_nan=False).encode("utf-8")
        write_atomic(self.record_path, data)

    def save(self, position: int, context_state: dict, assembler_state: dict, decoded_latents: int,
             log_frames: int, frame_size: tuple[int, int] | None) -> Path:
        """Write the section file for `position`; the spill file and frame log must be on disk already.

        The pending overlap frames are left out when the loop can decode them again (after a
        section); before the first section of a continued clip they are the clip's own frames, kept.
        """
        from safetensors.torch import save

        tensors = {"context.start_latent": context_state["start_latent"], "context.history": context_state["history"]}
        pending = assembler_state.get("pending")
        if pending is not None and not decoded_latents:
            tensors["assembler.pending"] = pending
        stored, dtypes = {}, {}
        for name, tensor in tensors.items():
            stored[name], dtypes[name] = compact(tensor)
        meta = {
            "format": FORMAT, "version": VERSION, "position": position, "decoded_latents": decoded_latents,
            "spec_sha256": self._spec_digest(),
            "context": {key: context_state[key] for key in ("variant", "window", "anchor_strength", "generated")},
            "assembler": {key: assembler_state[key] for key in ("overlap", "reverse", "emitted", "spill")},
            "log": {"frames": log_frames, "height": frame_size[0], "width": frame_size[1]} if frame_size else None,
            "dtypes": dtypes,
        }
        self.sections.mkdir(exist_ok=True)
        path = self.section_path(position)
        write_atomic(path, save(stored, metadata={"framepack": json.dumps(meta, separators=(",", ":"))}))
        return path

    def section_path(self, position: int) -> Path:
        return self.sections / f"{position:06d}.safetensors"

    # ---- reading ---------------------------------------------------------------------------
    def read_spec(self) -> JobSpec:
        """The job's spec, every part validated (the request as strictly as a new submission)."""
        data = self._spec_json()
        try:
            request = GenerationRequest.from_dict(data["request"])
            options = build_output_from(data["output"])
        except FramePackError as error:
            raise CheckpointError(f"{self._name(self.spec_path)}: the saved settings are not valid: {error}") from None
        source = data.get("source") or {}
        if not isinstance(source, dict):
            raise self._damaged(self.spec_path, "'source' is not an object")
        name, overwrite = data.get("name"), data.get("overwrite", False)
        if name is not None and (not isinstance(name, str) or not name or Path(name).name != name
                                 or name in (".", "..")):
            raise self._damaged(self.spec_path, "'name' is not one file name")
        if not isinstance(overwrite, bool):
            raise self._damaged(self.spec_path, "'overwrite' is not true or false")
        return JobSpec(data["id"], data["kind"], request, options, source, name, overwrite)

    def read_record(self) -> JobRecord | None:
        """The job's last saved record, or None when it has none (or it cannot be read)."""
        try:
            data = json.loads(_read_bounded(self.record_path, MAX_RECORD_BYTES))
            return JobRecord.from_dict(data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError, CheckpointError):
            return None

    def positions(self) -> list[int]:
        """Positions that have a section file, in order."""
        try:
            names = [entry.name for entry in self.sections.iterdir() if entry.is_file() and not entry.is_symlink()]
        except OSError:
            return []
        return sorted(int(match[1]) for match in map(_SECTION_FILE.fullmatch, names) if match)

    def latest(self) -> SectionCheckpoint:
        """The newest checkpoint, checked against the spec; a damaged one is an error, never skipped."""
        positions = self.positions()
        if not positions:
            raise CheckpointError(f"{self._name(self.folder)} holds no checkpoint (the job stopped before it "
                                  f"saved one)")
        return self.at(positions[-1])

    def at(self, position: int) -> SectionCheckpoint:
        """The checkpoint after `position` sections."""
        from safetensors import SafetensorError, safe_open

        path = self.section_path(position)
        if path.is_symlink() or not path.is_file():
            raise CheckpointError(f"{self._name(path)} is missing")
        try:
            with safe_open(str(path), framework="pt") as file:
                meta = json.loads((file.metadata() or {}).get("framepack", "null"))
                tensors = {name: file.get_tensor(name) for name in file.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise self._damaged(path, f"not a readable safetensors file ({error})") from None
        return _checked_section(meta, tensors, position, path, self._spec_digest())

    def resumable(self) -> bool:
        """Cheap check for sweeps and listings: a readable spec and a readable newest section header."""
        self._spec_json()
        positions = self.positions()
        if not positions:
            return False
        _section_meta(self.section_path(positions[-1]))
        return True

    # ---- details ---------------------------------------------------------------------------
    def _spec_json(self) -> dict[str, Any]:
        try:
            raw = _read_bounded(self.spec_path, MAX_SPEC_BYTES)
        except FileNotFoundError:
            raise CheckpointError(f"{self._name(self.spec_path)} is missing: this is not a resumable job") from None
        except OSError as error:
            raise CheckpointError(f"cannot read {self._name(self.spec_path)}: {error.strerror or error}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise self._damaged(self.spec_path, "not valid JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise self._damaged(self.spec_path, "not a FramePack job spec")
        if data.get("version") != VERSION:
            raise CheckpointError(f"{self._name(self.spec_path)} has format version {data.get('version')!r}; this "
                                  f"version of FramePack reads version {VERSION}")
        if not isinstance(data.get("id"), str) or data.get("kind") not in KINDS \
                or not isinstance(data.get("request"), dict) or not isinstance(data.get("output"), dict):
            raise self._damaged(self.spec_path, "its id, kind, request or output is missing")
        self._spec_sha256 = hashlib.sha256(raw).hexdigest()
        return data

    def _spec_digest(self) -> str:
        if self._spec_sha256 is None:
            self._spec_json()
        return self._spec_sha256

    def _name(self, path: Path) -> str:
        return str(path)

    def _damaged(self, path: Path, why: str) -> CheckpointError:
        return CheckpointError(f"the checkpoint file {self._name(path)} is damaged: {why}")


# ------------------------------------------------------------------------------------- section files

def _section_meta(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            meta = json.loads((file.metadata() or {}).get("framepack", "null"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"the checkpoint file {path} is damaged: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"the checkpoint file {path} is not a FramePack checkpoint of version {VERSION}")
    return meta


def _checked_section(meta: Any, tensors: dict, position: int, path: Path, spec_sha256: str) -> SectionCheckpoint:
    """A section file's content as plain state, or a `CheckpointError` saying what is wrong with it."""

    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"the checkpoint file {path} is damaged: {why}")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise damaged("it is not a FramePack checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"the checkpoint file {path} has format version {meta.get('version')!r}; "
                              f"this version of FramePack reads version {VERSION}")
    if meta.get("position") != position:
        raise damaged(f"it records position {meta.get('position')!r}, its name says {position}")
    if meta.get("spec_sha256") != spec_sha256:
        raise CheckpointError(f"the checkpoint file {path} belongs to other settings than this job's "
                              f"{SPEC_NAME} (it was changed or replaced)")
    dtypes = meta.get("dtypes")
    if not isinstance(dtypes, dict) or set(dtypes) != set(tensors):
        raise damaged("its tensors do not match its description")
    restored = {name: tensor.float() for name, tensor in tensors.items()}
    context, assembler = meta.get("context"), meta.get("assembler")
    if not isinstance(context, dict) or not isinstance(assembler, dict):
        raise damaged("the context or assembler state is missing")
    try:
        context_state = {**{key: context[key] for key in ("variant", "window", "anchor_strength", "generated")},
                         "start_latent": restored["context.start_latent"], "history": restored["context.history"]}
        assembler_state = {**{key: assembler[key] for key in ("overlap", "reverse", "emitted", "spill")},
                           "pending": restored.get("assembler.pending")}
    except KeyError as error:
        raise damaged(f"{error} is missing") from None
    decoded = meta.get("decoded_latents")
    if type(decoded) is not int or decoded < 0 or (decoded == 0) != (position == 0):
        raise damaged(f"invalid count of decoded latents {decoded!r}")
    log_frames, frame_size = 0, None
    log_meta = meta.get("log")
    if log_meta is not None:
        if not isinstance(log_meta, dict) or not all(type(log_meta.get(k)) is int and log_meta[k] >= 0
                                                     for k in ("frames", "height", "width")) \
                or not (log_meta["height"] and log_meta["width"]):
            raise damaged(f"invalid frame log description {log_meta!r}")
        log_frames, frame_size = log_meta["frames"], (log_meta["height"], log_meta["width"])
    return SectionCheckpoint(position, context_state, assembler_state, decoded, log_frames, frame_size,
                             spec_sha256, path)


# --------------------------------------------------------------------------------------- helpers

def compact(tensor: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The tensor in the smallest float type that holds every value exactly, and that type's name."""
    tensor = tensor.detach().cpu().contiguous()
    import torch
    if tensor.dtype == torch.float32:
        for dtype in (getattr(torch, name) for name in _EXACT_TYPES):
            smaller = tensor.to(dtype)
            if torch.equal(smaller.float(), tensor):
                return smaller, str(dtype).removeprefix("torch.")
    return tensor, str(tensor.dtype).removeprefix("torch.")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`, never a mix."""
    temp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        with os.fdopen(os.open(temp, flags, 0o644), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise OutputError(f"cannot write the checkpoint file {path}: {error.strerror or error}") from error
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); nothing to do where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _read_bounded(path: Path, limit: int) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    with os.fdopen(os.open(path, flags), "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{path} is larger than any checkpoint file ({limit} bytes)")
    return data


def is_resumable(folder: Path) -> bool:
    """Whether a work folder holds a job that can be resumed or re-rolled (the sweep's test)."""
    try:
        return JobCheckpoints(folder).resumable()
    except CheckpointError:
        return False


def sweep_output_folder(output_dir: str | os.PathLike):
    """Remove the work folders of finished or killed runs that cannot be resumed; keep and report the rest."""
    from framepack.io.workdir import sweep

    return sweep(output_dir, is_resumable)
