"""Standalone upscaling (Lanczos, ESRGAN-family files through spandrel) and RIFE interpolation.

The model files are built here: a small randomly initialised ESRGAN (RRDBNet, spandrel's own
class) and RIFE IFNet (ours, the published layout) saved to `.safetensors`, then loaded through
the real loaders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from framepack.errors import InputError, InputErrors, ModelError
from framepack.io.interpolate import InterpolatingSink, blend_between, interpolate
from framepack.io.upscale import Lanczos, ModelUpscaler, UpscalingSink, make_upscaler, scaled_size
from framepack.models.rife import IFNet, load_rife
from framepack.models.upscalers import import_spandrel, load_upscaler_model


def frames(count=3, height=20, width=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def esrgan_file(tmp_path_factory):
    import_spandrel()  # also where torchvision is missing
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
    path = tmp_path_factory.mktemp("upscalers") / "tiny-esrgan-x2.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return path


# ----------------------------------------------------------------------------- upscaling


@pytest.mark.parametrize("size, factor, expected", [((20, 28), 2.0, (40, 56)), ((21, 33), 1.5, (32, 50)),
                                                    ((20, 28), 1.0, (20, 28))])
def test_scaled_sizes_are_even(size, factor, expected):
    assert scaled_size(*size, factor) == expected


def test_lanczos_upscales_every_frame_alike():
    batch = frames()
    out = Lanczos(2.0)(batch)
    assert out.shape == (3, 40, 56, 3) and out.dtype == np.uint8
    flat = np.full((1, 10, 10, 3), 77, np.uint8)
    assert (Lanczos(3.0)(flat) == 77).all()  # a flat image stays flat


def test_esrgan_file_loads_with_spandrel_and_upscales(esrgan_file):
    descriptor = load_upscaler_model(esrgan_file)
    assert descriptor.architecture.name == "ESRGAN" and descriptor.scale == 2
    upscaler = make_upscaler(str(esrgan_file), 2.0)
    assert isinstance(upscaler, ModelUpscaler)
    batch = frames()
    out = upscaler(batch)
    assert out.shape == (3, 40, 56, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - Lanczos(2.0)(batch).astype(int)).mean() > 1  # the model ran, not Lanczos
    assert make_upscaler(str(esrgan_file), 3.0)(batch).shape == (3, 60, 84, 3)  # native x2, then Lanczos to x3
    np.testing.assert_array_equal(upscaler(batch[1:2]), out[1:2])  # frame by frame: batching changes nothing


def test_upscaling_sink_streams(esrgan_file):
    got = []
    sink = UpscalingSink(got.append, Lanczos(2.0))
    for batch in np.split(frames(4), [1, 3]):
        sink(batch)
    assert [len(batch) for batch in got] == [1, 2, 1] and got[0].shape[1:] == (40, 56, 3)


def test_pickles_and_strangers_are_refused(tmp_path):
    pickle = tmp_path / "model.pth"
    torch.save({"x": torch.zeros(1)}, pickle)
    with pytest.raises(InputError, match="only .safetensors"):
        load_upscaler_model(pickle)
    other = tmp_path / "other.safetensors"
    save_file({"some.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ModelError, match="not a model architecture spandrel knows"):
        load_upscaler_model(other)
    with pytest.raises(InputError, match="not found"):
        load_upscaler_model(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- RIFE


def save_ifnet(path, widths=(16, 16, 8, 8, 8), zero=False, seed=0):
    torch.manual_seed(seed)
    net = IFNet(widths)
    if zero:
        for parameter in net.parameters():
            parameter.data.zero_()
    save_file({f"module.{key}": value.contiguous() for key, value in net.state_dict().items()}, str(path))
    return path


def test_rife_between_frames_keeps_endpoints_and_shapes(tmp_path):
    rife = load_rife(save_ifnet(tmp_path / "rife.safetensors"))
    assert rife.net.widths == (16, 16, 8, 8, 8)
    batch = frames(3, 36, 52)
    out = list(interpolate([batch], 2, "rife", model=rife))
    assert len(out) == 7 and all(frame.shape == (36, 52, 3) and frame.dtype == np.uint8 for frame in out)
    for index in range(3):
        np.testing.assert_array_equal(out[index * 3], batch[index])


def test_rife_without_flow_is_the_midpoint_blend(tmp_path):
    """All-zero weights predict zero flow and a 0.5 mask: the frame between is the two frames' mean,
    which only comes out if warping along zero flow returns every pixel exactly."""
    rife = load_rife(save_ifnet(tmp_path / "zero.safetensors", zero=True))
    a, b = frames(2, 30, 40)
    [middle] = rife.between(a, b, 1)
    [blend] = blend_between(a, b, 1)
    assert np.abs(middle.astype(int) - blend.astype(int)).max() <= 1


def test_rife_sink_matches_the_iterator(tmp_path):
    rife = load_rife(save_ifnet(tmp_path / "rife.safetensors"))
    batch = frames(3, 32, 32)
    got = []
    sink = InterpolatingSink(got.append, 1, "rife", model=rife)
    sink(batch[:2])
    sink(batch[2:])
    np.testing.assert_array_equal(np.concatenate(got), np.stack(list(interpolate([batch], 1, "rife", model=rife))))


def test_rife_refuses_other_files(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"some.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ModelError, match="not a RIFE"):
        load_rife(other)
    broken = tmp_path / "broken.safetensors"
    state = {key: value for key, value in IFNet((8, 8)).state_dict().items() if "beta" not in key}
    save_file(state, str(broken))
    with pytest.raises(ModelError, match="does not fit"):
        load_rife(broken)
    with pytest.raises(InputError, match="needs a RIFE model"):
        interpolate([frames(2)], 1, "rife")


# ----------------------------------------------------------------------------- jobs, CLI, API


def test_job_upscales_and_interpolates_with_rife(tiny_model_dir, tmp_path, esrgan_file):
    """A job writes the video at the upscaled size and the raw frames as generated."""
    from framepack.io.raw import RawFrames
    from framepack.io.reader import open_frames
    from framepack.jobs.output import run_job
    from framepack.request.model import build_request
    from framepack.request.output import OutputOptions
    from tiny_runs import FAST, load_pipe, start_image

    rife = save_ifnet(tmp_path / "rife.safetensors")
    request = build_request(**{**FAST, "image": start_image(), "interpolation": 1, "fps": 30})
    options = OutputOptions(save_frames=True, upscale=2.0, upscaler=str(esrgan_file),
                            interpolation_method="rife", interpolation_model=str(rife))
    result = run_job(load_pipe(tiny_model_dir), request, options, tmp_path)
    raw = RawFrames(result.frames)
    with open_frames(str(result.video)) as video:
        assert (video.height, video.width) == (raw.height * 2, raw.width * 2)
        assert len(video) == (len(raw) - 1) * 2 + 1


def test_submission_refuses_missing_model_files(tmp_path):
    from framepack.jobs.checks import check_job
    from framepack.request.model import build_request
    from framepack.request.output import OutputOptions
    from tiny_runs import FAST, start_image

    request = build_request(**{**FAST, "image": start_image(), "interpolation": 1})
    options = OutputOptions(upscale=2, upscaler=str(tmp_path / "x.safetensors"), interpolation_method="rife",
                            interpolation_model=str(tmp_path / "r.pth"))
    with pytest.raises(InputErrors) as caught:
        check_job(request, options)
    assert {problem.field for problem in caught.value.problems()} == {("output", "upscaler"),
                                                                      ("output", "interpolation_model")}
    from framepack.request.output import build_output

    with pytest.raises(InputError, match="needs a RIFE model"):
        build_output(interpolation_method="rife")


def test_cli_encode_upscales_and_interpolates(tmp_path, esrgan_file):
    import framepack_cli
    from framepack.io.raw import RawFramesWriter
    from framepack.io.reader import open_frames

    source = tmp_path / "clip.safetensors"
    with RawFramesWriter(source, 20, 28, {"fps": 10}) as raw:
        raw.write(frames(3))
    rife = save_ifnet(tmp_path / "rife.safetensors")
    out = tmp_path / "clip.mp4"
    code = framepack_cli.main(["--quiet", "encode", str(source), "--out", str(out), "--upscale", "2", "--upscaler",
                               str(esrgan_file), "--interpolate", "1", "--method", "rife", "--rife-model", str(rife)])
    assert code == 0
    with open_frames(str(out)) as video:
        assert (len(video), video.height, video.width) == (5, 40, 56)
    assert framepack_cli.main(["--quiet", "encode", str(source), "--out", str(tmp_path / "b.mp4"), "--upscale",
                               "1.5"]) == 0
    assert framepack_cli.main(["--quiet", "encode", str(source), "--out", str(tmp_path / "c.mp4"), "--method",
                               "rife", "--interpolate", "1"]) != 0


def test_api_takes_model_and_lora_names_from_the_folders_only(tmp_path, esrgan_file):
    from framepack.api.validation import BodyError, parse_job_body
    from framepack.models.library import ModelFolder

    loras = tmp_path / "loras"
    (loras / "styles").mkdir(parents=True)
    (loras / "styles" / "ink.safetensors").write_bytes(b"{}")
    models = ModelFolder(esrgan_file.parent, "model", "framepack_model_dir")
    lora_folder = ModelFolder(loras, "LoRA", "framepack_lora_dir")
    assert lora_folder.names() == ["styles/ink.safetensors"]
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frames(1, 32, 32)[0]).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    body = {"image": image, "duration": 0.4, "fps": 30, "latent_window_size": 3,
            "loras": ["styles/ink:0.8@1", {"name": "styles/ink.safetensors", "weight": 0.5}],
            "output": {"upscale": 2, "upscaler": esrgan_file.name}}
    request, options = parse_job_body(body, lora_folder=lora_folder, model_folder=models)
    assert [spec.path for spec in request.loras] == [str((loras / "styles" / "ink.safetensors").resolve())] * 2
    assert request.loras[0].schedule[0].weight == 0.8 and options.upscaler == str(esrgan_file.resolve())
    for loras_field, output, loc in [
        (["../x"], {}, ["body", "loras", 0]),
        (["/etc/passwd"], {}, ["body", "loras", 0]),
        ([{"path": "/x.safetensors"}], {}, ["body", "loras", 0, "path"]),
        (["missing"], {}, ["body", "loras", 0]),
        ([], {"upscale": 2, "upscaler": str(esrgan_file)}, ["body", "output", "upscaler"]),
        ([], {"interpolation_method": "rife", "interpolation_model": "../r.safetensors"},
         ["body", "output", "interpolation_model"]),
    ]:
        with pytest.raises(BodyError) as caught:
            parse_job_body({**body, "loras": loras_field, "output": output}, lora_folder=lora_folder,
                           model_folder=models)
        assert loc in [entry["loc"] for entry in caught.value.items], caught.value.items
    with pytest.raises(BodyError, match="LoRA folder is not set"):
        parse_job_body({**body, "output": {}})
