"""LoRA schedules: a weight per section with the WHEN syntax (`style.safetensors:0.8@1-3`).

Parsing and planning are pure request-layer checks. The engine properties are exact, on the
tiny model, and follow from what each section sees: a section is sampled from its own noise, the
latent history before it and its LoRA weights. So

- a schedule with one weight everywhere gives the frames of that plain weight, bit for bit;
- weight 0 adds exactly nothing to a LoRA layer, so sections sampled before the first one with a
  nonzero weight give the frames of the run without the LoRA (up to the frames the next section's
  cross-fade touches), and the first scheduled section differs;
- two schedules that agree up to a section give the same frames up to that section's cross-fade
  and differ from there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from framepack.engine.loop import SectionLoop
from framepack.errors import InputErrors
from framepack.models import lora
from framepack.models.lora import apply_loras, section_schedule, unload_loras
from framepack.request.model import GenerationRequest, LoraSpec, build_request, plan_for
from framepack.request.planner import VideoPlan
from test_lora import write_lora
from tiny_runs import FAST, load_pipe, start_image

needs_peft = pytest.mark.skipif(not lora.peft_available(), reason="LoRA loading needs the peft package")
FOUR_SECTIONS = dict(FAST, duration=1.6)  # 4 sections of 12 frames (latent window 3)
OVERLAP = 4 * FAST["latent_window_size"] - 3  # frames a section's cross-fade changes before it


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, weight, schedule", [
    ("style.safetensors:0.8@1-3", 0.0, (("1-3", 0.8),)),
    ("style.safetensors:0.3,1@4", 0.3, (("4", 1.0),)),
    ("style.safetensors:0.5@1s-2s,1@3", 0.0, (("1s-2s", 0.5), ("3", 1.0))),
    ("style.safetensors: -1 @ 2 ", 0.0, (("2", -1.0),)),
    ("style.safetensors:0.7", 0.7, ()),
])
def test_schedule_text(text, weight, schedule):
    spec = LoraSpec.parse(text)
    assert spec.path == "style.safetensors" and spec.weight == weight
    assert tuple((entry.when, entry.weight) for entry in spec.schedule) == schedule
    assert LoraSpec.parse(str(spec)) == spec  # the text form round-trips


@pytest.mark.parametrize("text, message", [
    ("style.safetensors:0.8@1-x", "not a section or time"),
    ("style.safetensors:0.8@", "at least 1 character"),
    ("style.safetensors:0.8@1,abc", "not WEIGHT or WEIGHT@WHEN"),
    ("style.safetensors:0.5,0.6", "one weight without @WHEN"),
    ("style.safetensors:nan@1", "must be a finite number"),
    ("style.safetensors:" + ",".join(["1@1"] * 70), "more than 64 schedule entries"),
])
def test_schedule_text_errors(text, message):
    with pytest.raises(InputErrors, match=message):
        LoraSpec.parse(text)


def test_a_file_name_with_at_or_colons_stays_a_path():
    assert LoraSpec.parse("dir:x/me@home.safetensors").path == "dir:x/me@home.safetensors"
    assert LoraSpec.parse("C:\\loras\\x@2.safetensors").path == "C:\\loras\\x@2.safetensors"


def test_json_schedule_without_a_weight_is_off_elsewhere():
    spec = LoraSpec.model_validate({"path": "s.safetensors", "schedule": [{"when": "2", "weight": 0.5}]})
    assert spec.weight == 0.0
    spec = LoraSpec.model_validate({"path": "s.safetensors", "weight": 0.2, "schedule": [{"when": "2", "weight": 1}]})
    assert spec.weight == 0.2


def test_long_when_text_is_refused_quickly():
    with pytest.raises(InputErrors, match="too long"):
        LoraSpec.parse("s.safetensors:1@" + "1" * 100_000)


# ----------------------------------------------------------------------------- the plan


def _request(**fields) -> GenerationRequest:
    return build_request(**{**FOUR_SECTIONS, "image": start_image(), **fields})


def test_plan_shows_each_sections_weights():
    request = _request(loras=["a/style.safetensors:0.8@2-3", "motion.safetensors:0.5"])
    plan = request.plan()
    assert plan.lora_names == ("style", "motion")
    assert [s.lora_weights for s in plan.sections] == [(0.0, 0.5), (0.8, 0.5), (0.8, 0.5), (0.0, 0.5)]
    assert [row["loras"] for row in plan.table()] == ["style 0, motion 0.5", "style 0.8, motion 0.5",
                                                      "style 0.8, motion 0.5", "style 0, motion 0.5"]
    assert VideoPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert GenerationRequest.from_json(request.to_json()).plan() == plan
    assert "loras" not in _request().plan().table()[0]  # no column without LoRAs


def test_times_place_weights_like_prompt_lines():
    plan = _request(loras=["s.safetensors:1@0.5s-1s"]).plan()
    assert [s.lora_weights for s in plan.sections] == [(0.0,), (1.0,), (1.0,), (0.0,)]


def test_plan_preview_takes_the_schedule():
    plan = plan_for({"duration": 1.6, "fps": 30, "latent_window_size": 3, "loras": ["s.safetensors:1@4"]})
    assert [s.lora_weights for s in plan.sections] == [(0.0,), (0.0,), (0.0,), (1.0,)]


@pytest.mark.parametrize("loras, field, message", [
    (["s.safetensors:1@5"], ("loras", 0, "schedule", 0, "when"), "section 5 does not exist"),
    (["x.safetensors", "s.safetensors:1@1-2,0.5@2"], ("loras", 1, "schedule", 1, "when"),
     "entries 1 and 2 both cover section 2"),
    (["s.safetensors:1@9s"], ("loras", 0, "schedule", 0, "when"), "past the end"),
])
def test_schedule_errors_name_their_entry(loras, field, message):
    with pytest.raises(InputErrors) as caught:
        _request(loras=loras)
    [problem] = caught.value.problems()
    assert problem.field == field and message in str(problem)


# ----------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return load_pipe(tiny_model_dir)


@pytest.fixture(scope="module")
def style(tmp_path_factory, pipe):
    return write_lora(tmp_path_factory.mktemp("loras") / "style.safetensors", pipe.transformer, seed=3)


_RUNS: dict = {}


def run(pipe, loras=(), variant="f1") -> np.ndarray:
    """All frames of one run, LoRAs applied and weighted per section as a job does it (each run once)."""
    key = (tuple(loras), variant)
    if key not in _RUNS:
        _RUNS[key] = _run(pipe, loras, variant)
    return _RUNS[key]


def _run(pipe, loras, variant) -> np.ndarray:
    request = _request(loras=list(loras), variant=variant)
    applied = apply_loras(pipe, request.loras)
    frames: list[np.ndarray] = []
    try:
        SectionLoop(pipe, request, frames.append,
                    on_section_start=section_schedule(pipe, applied, request.plan())).run(lambda event: None)
    finally:
        unload_loras(pipe)
    return np.concatenate(frames).astype(np.int16)


def first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    differs = np.flatnonzero(np.abs(a - b).reshape(len(a), -1).max(axis=1))
    return int(differs[0]) if len(differs) else None


@needs_peft
def test_one_weight_everywhere_is_the_plain_weight(pipe, style):
    np.testing.assert_array_equal(run(pipe, [f"{style}:0.7@1-4"]), run(pipe, [f"{style}:0.7"]))


@needs_peft
@pytest.mark.parametrize("variant, scheduled, untouched", [("f1", "2-3", [0]), ("original", "1-2", [3, 2])])
def test_sections_before_the_schedule_match_the_run_without_lora(pipe, style, variant, scheduled, untouched):
    """F1 samples section 1 first, the original model sections 4 then 3: weight 0 there is no LoRA."""
    plain = run(pipe, variant=variant)
    scheduled_run = run(pipe, [f"{style}:0.8@{scheduled}"], variant=variant)
    sections = _request(variant=variant).plan().sections
    first = first_difference(plain, scheduled_run)
    assert first is not None
    if variant == "f1":  # time order = sampling order: nothing before section 2's cross-fade changes
        assert first >= sections[1].frame_start - OVERLAP
        assert first < sections[1].frame_end
    else:  # the end is sampled first: the frames after section 2 (and its cross-fade) are untouched
        last = len(plain) - 1 - first_difference(plain[::-1], scheduled_run[::-1])
        assert last < sections[2].frame_start + OVERLAP
        for index in untouched:
            span = slice(sections[index].frame_start + OVERLAP, sections[index].frame_end)
            np.testing.assert_array_equal(plain[span], scheduled_run[span])


@needs_peft
def test_schedules_differ_only_from_the_first_section_they_differ_in(pipe, style):
    a = run(pipe, [f"{style}:0.8@2-3"])
    b = run(pipe, [f"{style}:0.8@2-4"])  # the same up to section 4
    sections = _request().plan().sections
    first = first_difference(a, b)
    assert first is not None and sections[3].frame_start - OVERLAP <= first < sections[3].frame_end


@needs_peft
def test_the_job_runner_weights_sections(pipe, style, tmp_path):
    """run_job wires the schedule: its raw frames are the direct run's."""
    from framepack.io.raw import RawFrames
    from framepack.jobs.output import run_job
    from framepack.request.output import OutputOptions

    request = _request(loras=[f"{style}:0.8@2"])
    result = run_job(pipe, request, OutputOptions(codec="none", save_frames=True), tmp_path)
    unload_loras(pipe)
    frames = np.asarray(RawFrames(result.frames)[:]).astype(np.int16)
    np.testing.assert_array_equal(frames, run(pipe, [f"{style}:0.8@2"]))
    assert first_difference(frames, run(pipe)) is not None
