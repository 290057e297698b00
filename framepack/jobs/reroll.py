"""Re-rolling from a section: a new job that starts from another job's checkpoint.

Every section's noise comes from (seed, section) and every section's state is checkpointed, so a
new video can reuse the sections the model generated before section N exactly and generate the
rest with a new seed or prompts. "Before" is in the model's order: F1 generates in time order
(sections 1 .. N-1 are kept), the original model generates the end first (sections N+1 .. last
are kept and N .. 1 are generated again, because they are conditioned on what follows them).

The new job gets its own work folder holding a copy of the source's checkpoint at that point:
the frames already streamed out (frame log) or spilled (inverted order), cut to what that
checkpoint counted, and the latent context. It then runs as a resume of that checkpoint.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from framepack.errors import InputError
from framepack.jobs.checkpoint import CheckpointError, JobCheckpoints, JobSpec, SectionCheckpoint
from framepack.request.planner import VideoPlan

COPY_CHUNK = 16 << 20


def reroll_position(plan: VideoPlan, from_section: int) -> int:
    """How many sections (in generation order) a re-roll from section `from_section` reuses."""
    if type(from_section) is not int or not 1 <= from_section <= plan.num_sections:
        raise InputError(f"from_section must be a section number from 1 to {plan.num_sections}, got {from_section!r}",
                         ("from_section",))
    return plan.generation_order.index(from_section - 1)


def reused_sections(plan: VideoPlan, position: int) -> list[int]:
    """Numbers (time order) of the sections a re-roll at `position` keeps."""
    return sorted(plan.sections[index].number for index in plan.generation_order[:position])


def prepare_reroll(source: JobCheckpoints, target: JobCheckpoints, spec: JobSpec, position: int) -> SectionCheckpoint:
    """Write the new job's spec and its starting checkpoint (a copy of the source's at `position`)."""
    state = source.at(position)
    target.write_spec(spec)
    spill = state.assembler_state.get("spill")
    if spill is not None:
        name = f"framepack-spill-{secrets.token_hex(6)}.raw"
        length = sum(_size(chunk) for chunk in spill["chunks"])
        _copy_prefix(source.folder / spill["name"], target.folder / name, length)
        spill = {"name": name, "chunks": spill["chunks"]}
    if state.frame_size is not None:
        from framepack.io.framelog import LOG_NAME

        height, width = state.frame_size
        _copy_prefix(source.folder / LOG_NAME, target.folder / LOG_NAME, state.log_frames * height * width * 3)
    target.save(position, state.context_state, {**state.assembler_state, "spill": spill}, state.decoded_latents,
                state.log_frames, state.frame_size)
    return target.at(position)


def _size(chunk) -> int:
    frames, height, width, channels = chunk
    return frames * height * width * channels


def _copy_prefix(source: Path, target: Path, length: int) -> None:
    """The first `length` bytes of `source` into a new file `target`; a shorter source is an error."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        reader = os.fdopen(os.open(source, flags), "rb")
    except OSError as error:
        raise CheckpointError(f"cannot read {source} of the job to re-roll: {error.strerror or error}") from None
    create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    with reader, os.fdopen(os.open(target, create, 0o644), "wb") as writer:
        left = length
        while left:
            data = reader.read(min(COPY_CHUNK, left))
            if not data:
                raise CheckpointError(f"{source} holds fewer bytes than its checkpoint records ({length}): "
                                      f"it was cut short")
            writer.write(data)
            left -= len(data)
        writer.flush()
        os.fsync(writer.fileno())
