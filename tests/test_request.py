"""The request model: every bad input becomes one clear message, good inputs become RGB arrays."""

from __future__ import annotations

import base64
import gc
import io
import weakref

import numpy as np
import pytest
from PIL import Image

from framepack.request.images import to_rgb_array
from framepack.engine.pipeline import FramePackPipeline, PipelineManager
from framepack.errors import InputError, ModelError
from framepack.request.model import build_request
from framepack.models.recipe import local_recipe


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def request_with(**fields):
    return build_request(**{"prompt": "a lighthouse at dusk", "image": np.zeros((64, 64, 3), np.uint8), **fields})


def test_rgba_is_composited_on_white():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    rgb = request_with(image=Image.fromarray(rgba, "RGBA")).image
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[0, 31]) == (255, 255, 255)


def test_grayscale_and_palette_become_rgb():
    gray = Image.fromarray(np.full((20, 30), 77, np.uint8), "L")
    rgb = request_with(image=gray).image
    assert rgb.shape == (20, 30, 3) and (rgb == 77).all()
    palette = gray.convert("P")
    assert request_with(image=palette).image.shape == (20, 30, 3)


def test_sixteen_bit_images_are_scaled_not_clipped():
    deep = np.full((24, 24), 65535, np.uint16)
    deep[:, :12] = 32896  # ~ half scale
    rgb = request_with(image=Image.fromarray(deep, "I;16")).image
    assert rgb[0, 0, 0] == 128 and rgb[0, 20, 0] == 255
    assert to_rgb_array(np.full((24, 24, 3), 1.0, np.float32))[0, 0, 0] == 255


@pytest.mark.parametrize("size", [(1, 1), (8, 64)])
def test_tiny_images_are_refused(size):
    with pytest.raises(InputError, match=r"image: .* too small"):
        request_with(image=np.zeros((*size, 3), np.uint8))


def test_huge_images_are_refused_before_decoding():
    huge = Image.new("L", (9000, 20))
    with pytest.raises(InputError, match=r"end image: 9000x20 is too large"):
        request_with(end_image=png_bytes(huge))


@pytest.mark.parametrize(
    "value, message",
    [
        (b"plain text, not an image at all" * 4, "not a readable image"),
        (b"\x89PNG\r\n\x1a\n garbage", "not a readable image"),
        (12345, "expected an image, got int"),
        (np.zeros((4, 4, 4, 4), np.uint8), "expected an H x W"),
        (np.full((20, 20, 3), 2.0, np.float32), "float pixel values"),
    ],
)
def test_undecodable_images_name_the_problem(value, message):
    with pytest.raises(InputError, match=message):
        request_with(image=value)


def test_file_bytes_decode():
    data = png_bytes(Image.new("RGB", (20, 20), (1, 2, 3)))
    for value in (data, bytearray(data), memoryview(data)):
        assert tuple(request_with(image=value).image[0, 0]) == (1, 2, 3)


@pytest.mark.parametrize("text", ["/etc/hostname", __file__, "data:image/png;base64,iVBORw0KGgo=",
                                  base64.b64encode(png_bytes(Image.new("RGB", (20, 20)))).decode()])
def test_text_is_never_read_as_a_path_or_guessed_as_base64(text):
    """Paths are read by the CLI and base64 decoded by the API; the request takes only image data."""
    with pytest.raises(InputError, match="not text"):
        request_with(image=text)
    with pytest.raises(InputError, match="not text"):
        request_with(keyframes=[{"image": text, "when": "1"}])


def test_declared_size_is_checked_from_the_header():
    from framepack.request.images import declared_pixels

    assert declared_pixels(png_bytes(Image.new("RGB", (30, 20)))) == 600
    assert declared_pixels(b"not an image") == 0
    with pytest.raises(InputError, match=r"end image: 9000x20 is too large"):
        declared_pixels(png_bytes(Image.new("L", (9000, 20))), "end image")


@pytest.mark.parametrize("duration", [0, -1.0])
def test_zero_duration_is_refused(duration):
    with pytest.raises(InputError, match="duration: Input should be greater than 0"):
        request_with(duration=duration)


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("9: too late", "line 1.*section 9"),
        ("1: a\n1: b", "lines 1 and 2 both cover section 1"),
        ("2s-1s: backwards", "line 1"),
        ("30s: way past the end", "line 1.*past the end"),
    ],
)
def test_bad_prompt_schedules_name_the_line(schedule, message):
    with pytest.raises(InputError, match=message):
        request_with(duration=2.0, section_prompts=schedule)


def test_field_errors_are_joined_into_one_message():
    with pytest.raises(InputError) as raised:
        request_with(resolution=100, steps=0, sampler="ddim")
    text = str(raised.value)
    assert "resolution: resolution must be a multiple of 16" in text
    assert "steps:" in text and "sampler:" in text


def test_every_problem_is_located_at_its_field():
    with pytest.raises(InputError) as raised:
        build_request(image=None, resolution=100, steps=0, sampler="ddim", keyframes=[{"image": b"junk", "when": "1"}])
    assert [problem.field for problem in raised.value.problems()] == [
        ("keyframes", 0, "image"), ("resolution",), ("steps",), ("sampler",)]
    with pytest.raises(InputError) as raised:  # the combinations and the plan, once the fields are valid
        build_request(variant="f1", end_image=np.zeros((64, 64, 3), np.uint8), duration=1, section_prompts="7: x")
    assert [problem.field for problem in raised.value.problems()] == [
        ("image",), ("end_image",), ("section_prompts",)]


def test_the_request_is_frozen_and_planned_once():
    request = request_with(duration=2.0)
    with pytest.raises(ValueError):
        request.duration = 3.0
    assert request.plan() is request.plan() and request.plan().num_sections == 2
    assert isinstance(request.keyframes, tuple) and isinstance(request.loras, tuple)


def test_the_seed_is_resolved_into_a_new_request():
    request = request_with(seed=-1)
    assert request.seed == -1  # validation never changes a value
    resolved = request.resolve_seed()
    assert resolved is not request and request.seed == -1 and 0 <= resolved.seed < 2**32
    assert resolved.plan() is request.plan() and resolved.image is request.image
    assert resolved.resolve_seed() is resolved and request_with(seed=5).resolve_seed().seed == 5
    settings = resolved.settings()
    assert settings["image"] == "64x64 RGB" and settings["seed"] == resolved.seed


def test_replace_validates_the_changes():
    request = request_with(duration=2.0, seed=3)
    longer = request.replace(duration=5.0)
    assert longer.plan().num_sections == 4 and longer.seed == 3 and request.plan().num_sections == 2
    with pytest.raises(InputError) as raised:
        request.replace(section_prompts="9: x")
    assert raised.value.problems()[0].field == ("section_prompts",)


def test_a_request_round_trips_through_json_losslessly():
    rng = np.random.default_rng(4)
    request = build_request(
        image=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), end_image=rng.integers(0, 256, (32, 32, 3), np.uint8),
        keyframes=[{"image": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "when": "2"}],
        prompt="a fox \u00e9", section_prompts="1: runs\n2: stops", duration=2.0, seed=12, shift=3.0,
        loras=["style.safetensors:0.5"])
    text = request.to_json()
    assert isinstance(text, str) and "iVBOR" in text  # PNG, base64
    again = type(request).from_json(text)
    for (field, before), (same, after) in zip(request.located_images(), again.located_images(), strict=True):
        assert field == same
        np.testing.assert_array_equal(before, after)
    assert again.settings() == request.settings() and again.plan() == request.plan()
    assert again.loras[0].path == "style.safetensors" and again.loras[0].weight == 0.5


def test_missing_model_folder_is_a_model_error(tmp_path):
    manager = PipelineManager(lambda variant: local_recipe(tmp_path / "nowhere", variant))
    with pytest.raises(ModelError, match="nowhere"):
        manager.get("original")


def test_manager_loads_lazily_switches_and_unloads(tiny_model_dir):
    loads = []
    manager = PipelineManager(lambda variant: (loads.append(variant), local_recipe(tiny_model_dir, variant))[1])
    assert manager.loaded_variant is None and loads == []
    pipe = manager.get("original")
    assert isinstance(pipe, FramePackPipeline) and manager.get("original") is pipe
    assert manager.loaded_variant == "original"
    watcher = weakref.ref(pipe.transformer)
    del pipe
    manager.get("f1")
    gc.collect()
    assert manager.loaded_variant == "f1" and watcher() is None
    manager.unload()
    assert manager.loaded_variant is None


def test_two_variants_requested_at_once_never_build_two_pipelines(monkeypatch):
    """The manager loads under its lock: while one variant is being built, a request for the other
    waits for it (then unloads it) instead of building a second pipeline next to it."""
    import threading
    from types import SimpleNamespace

    from framepack.engine import pipeline as pipeline_module

    class WatchedLock:
        """The manager's lock, telling the test when a caller finds it taken."""

        def __init__(self):
            self.lock, self.found_taken = threading.Lock(), threading.Event()

        def __enter__(self):
            if not self.lock.acquire(blocking=False):
                self.found_taken.set()
                self.lock.acquire()

        def __exit__(self, *exc):
            self.lock.release()

    building, log = [], []
    original_started, f1_started = threading.Event(), threading.Event()

    def slow_build(recipe, runtime, device="cpu", **options):
        building.append(recipe.variant)
        original_started.set()
        log.append((recipe.variant, list(building), manager.loaded_variant))
        if recipe.variant == "original":  # slow: the other caller arrives meanwhile
            assert manager._lock.found_taken.wait(10) or f1_started.is_set(), "the second caller never came"
        else:
            f1_started.set()
        building.remove(recipe.variant)
        return SimpleNamespace(variant=recipe.variant)

    monkeypatch.setattr(pipeline_module, "build_pipeline", slow_build)
    manager = PipelineManager(lambda variant: SimpleNamespace(variant=variant))
    manager._lock = WatchedLock()
    got = {}
    first = threading.Thread(target=lambda: got.setdefault("original", manager.get("original")))
    first.start()
    assert original_started.wait(30)
    second = threading.Thread(target=lambda: got.setdefault("f1", manager.get("f1")))
    second.start()
    first.join(30), second.join(30)
    assert log == [("original", ["original"], None), ("f1", ["f1"], None)]  # one at a time, the old one gone
    assert got["original"].variant == "original" and got["f1"].variant == "f1"
    assert manager.loaded_variant == "f1"


def test_decompression_bomb_headers_are_refused_as_too_large():
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    with pytest.raises(InputError, match="image: too large"):
        request_with(image=bomb)
