"""The job runner: engine frames -> raw file, interpolation, video, images, decoded back."""

from __future__ import annotations

import numpy as np
import pytest

from framepack.engine.control import GenerationControl
from framepack.request.events import Progress
from framepack.engine.pipeline import FramePackPipeline
from framepack.errors import InputError
from framepack.io.raw import RawFrames
from framepack.io.reader import VideoFrames
from framepack.io.writer import read_video_metadata
from framepack.jobs.output import run_job
from framepack.request.output import OutputOptions
from framepack.request.model import build_request
from framepack.models.loader import load_components
from framepack.models.recipe import local_recipe

FAST = dict(resolution=32, steps=2, latent_window_size=3, fps=30, seed=11, teacache=False, preview=False)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return FramePackPipeline.from_components(load_components(local_recipe(tiny_model_dir, "f1")))


def request(**fields):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return build_request(**{**FAST, "image": image, "prompt": "waves", "variant": "f1", "duration": 0.8, **fields})


def test_video_raw_and_images_hold_the_same_frames(pipe, tmp_path):
    options = OutputOptions(codec="libx264rgb", container="mkv", crf=0, save_frames=True, save_images=True)
    result = run_job(pipe, request(), options, tmp_path)
    assert result.done.status == "completed" and result.done.frames == 25
    raw = RawFrames(result.frames)
    assert len(raw) == 25 and raw.fps == 30 and raw.settings["seed"] == 11
    generated = np.concatenate(list(raw.iter_batches(8)))
    with VideoFrames(result.video) as video:
        decoded = np.concatenate(list(video.iter_batches(8)))
    np.testing.assert_array_equal(decoded, generated)  # lossless RGB codec: exact
    images = sorted(result.images.iterdir())
    assert len(images) == 25 and images[0].name == "frame_000001.png"
    assert read_video_metadata(result.video)["settings"]["prompt"] == "waves"
    assert {p.parent for p in result.outputs} == {tmp_path}


def test_interpolation_keeps_duration_with_fewer_generated_frames(pipe, tmp_path):
    job = request(interpolation=1, duration=1.6)
    plan = job.plan()
    assert plan.generated_fps == 15 and plan.num_sections == 2
    result = run_job(pipe, job, OutputOptions(save_frames=True), tmp_path)
    assert len(RawFrames(result.frames)) == plan.generated_frames == 25
    with VideoFrames(result.video) as video:
        assert video.frame_count == plan.total_frames == 49 and float(video.fps) == 30


@pytest.mark.parametrize("keep", [True, False])
def test_stopped_job_keeps_partial_outputs_only_when_asked(pipe, tmp_path, keep):
    control = GenerationControl()

    def stop_in_second_section(event):
        if isinstance(event, Progress) and event.position == 1:
            control.stop()

    result = run_job(pipe, request(duration=1.2), OutputOptions(save_frames=True, keep_incomplete=keep),
                     tmp_path, control=control, on_event=stop_in_second_section)
    assert result.done.status == "interrupted"
    if keep:
        assert len(RawFrames(result.frames)) == result.done.frames == 13
        assert result.video.exists()
    else:
        assert result.video is None and list(tmp_path.iterdir()) == []


def test_a_failing_generation_leaves_no_files(pipe, tmp_path):
    def explode(event):
        if isinstance(event, Progress) and event.position == 1:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        run_job(pipe, request(duration=1.2), OutputOptions(save_frames=True, save_images=True), tmp_path,
                on_event=explode)
    assert [p for p in tmp_path.rglob("*")] == []


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"codec": "nope264"}, ("output", "codec"), "unknown video codec"),
        ({"codec": "libx264", "container": "webm"}, ("output", "container"), "cannot be stored in a .webm"),
        ({"codec_options": "preset"}, ("output", "codec_options"), "preset"),
        ({"codec": "libx264", "pix_fmt": "rgb48"}, ("output", "pix_fmt"), "cannot encode pixel format"),
        ({"codec": "mpeg4", "crf": 20}, ("output", "crf"), "no crf"),
        ({"codec": "none", "save_frames": False}, ("output",), "nothing to save"),
        ({"crf": 64}, ("output", "crf"), "less than or equal to 63"),
        ({"container": "flv"}, ("output", "container"), "'mp4'"),
    ],
)
def test_bad_output_options_are_refused_before_sampling_naming_their_field(fields, field, message):
    from framepack.jobs.checks import check_output
    from framepack.request.output import build_output

    with pytest.raises(InputError, match=message) as refused:
        check_output(build_output(**fields))
    assert [problem.field for problem in refused.value.problems()] == [field]


def test_output_names_are_sanitized_and_unique(pipe, tmp_path):
    options = OutputOptions(filename="../../etc/passwd", save_frames=False)
    first = run_job(pipe, request(duration=0.4), options, tmp_path)
    second = run_job(pipe, request(duration=0.4), options, tmp_path)
    assert first.video.parent == tmp_path and second.video.parent == tmp_path
    assert first.video != second.video and ".." not in first.video.name
