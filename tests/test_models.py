"""Recipe, loader and the tiny random-weight model (framepack.models)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from framepack.errors import ModelError
from framepack.models import tiny
from framepack.models.loader import LazyModel, check_component_folder, default_dtypes, load_component, load_components
from framepack.models.recipe import (
    COMPONENT_CLASSES,
    REFERENCE_DTYPES,
    ROLES,
    ComponentSource,
    Recipe,
    default_recipe,
    hub_recipe,
    local_recipe,
)

WEIGHT_FILES = {
    "text_encoder": "model.safetensors",
    "text_encoder_2": "model.safetensors",
    "image_encoder": "model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "transformer": "diffusion_pytorch_model.safetensors",
    "transformer_f1": "diffusion_pytorch_model.safetensors",
}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def tiny_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-copy"))


# ---------------------------------------------------------------- recipes


def test_default_recipes_follow_the_component_table():
    original, f1 = default_recipe("original"), default_recipe("f1")
    assert tuple(original.components) == ROLES
    assert original.variant == "original" and f1.variant == "f1"
    for role in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae"):
        assert original[role] == ComponentSource("hunyuanvideo-community/HunyuanVideo", role)
    for role in ("image_encoder", "feature_extractor"):
        assert original[role] == ComponentSource("lllyasviel/flux_redux_bfl", role)
    assert original["transformer"] == ComponentSource("lllyasviel/FramePackI2V_HY")
    assert f1["transformer"] == ComponentSource("lllyasviel/FramePack_F1_I2V_HY_20250503")
    differing = [r for r in ROLES if original[r] != f1[r]]
    assert differing == ["transformer"]
    assert original["text_encoder"].describe() == "hunyuanvideo-community/HunyuanVideo/text_encoder"
    assert original["transformer"].describe() == "lllyasviel/FramePackI2V_HY"
    assert not any(src.is_local() for src in original.components.values())
    with pytest.raises(ModelError, match="variant"):
        default_recipe("f2")


def test_component_classes_and_reference_dtypes():
    assert set(COMPONENT_CLASSES) == set(ROLES)
    assert REFERENCE_DTYPES["transformer"] == "bfloat16"
    assert all(REFERENCE_DTYPES[r] == "float16" for r in ("text_encoder", "text_encoder_2", "vae", "image_encoder"))
    assert not {"tokenizer", "tokenizer_2", "feature_extractor"} & set(REFERENCE_DTYPES)
    for role, spec in COMPONENT_CLASSES.items():
        assert hasattr(spec.resolve(), "from_pretrained"), role

    cpu = default_dtypes("cpu")
    assert set(cpu) == set(REFERENCE_DTYPES) and set(cpu.values()) == {torch.float32}
    gpu = default_dtypes("cuda")
    if not torch.cuda.is_available() or torch.cuda.is_bf16_supported():
        assert gpu["transformer"] == torch.bfloat16
    assert gpu["vae"] == torch.float16 and gpu["text_encoder"] == torch.float16


def test_overrides_syntax(tmp_path, monkeypatch):
    base = default_recipe("original")
    local = tmp_path / "my vae"
    local.mkdir()
    monkeypatch.chdir(tmp_path)
    r = base.with_overrides(
        {
            "transformer": "someone/FramePack-finetune",
            "image_encoder": "someone/redux/image_encoder/deeper",
            "vae": str(local),
            "text_encoder": "./my vae",  # relative folders become absolute
            "tokenizer": "",  # blank: keep the default
            "tokenizer_2": None,
        }
    )
    assert r["transformer"] == ComponentSource("someone/FramePack-finetune")
    assert r["image_encoder"] == ComponentSource("someone/redux", "image_encoder/deeper")
    assert r["vae"] == ComponentSource(str(local)) and r["vae"].is_local()
    assert r["vae"].path() == local
    assert r["text_encoder"].source == str(local) and r["text_encoder"].is_local()
    assert r["tokenizer"] == base["tokenizer"] and r["tokenizer_2"] == base["tokenizer_2"]
    assert base["vae"].source == "hunyuanvideo-community/HunyuanVideo"  # original untouched
    assert r.variant == "original"

    home = base.with_overrides({"vae": "~/models/vae"})
    assert home["vae"].source == os.path.expanduser("~/models/vae")

    with pytest.raises(ModelError) as err:
        base.with_overrides({"unet": "org/name"})
    assert "unet" in str(err.value) and all(role in str(err.value) for role in ROLES)
    for bad in ("justaname", "org/na me", "org//x"):
        with pytest.raises(ModelError, match="vae"):
            base.with_overrides({"vae": bad})


def test_recipe_validation():
    comps = dict(default_recipe("original").components)
    del comps["vae"]
    with pytest.raises(ModelError, match="vae"):
        Recipe("original", comps)
    with pytest.raises(ModelError, match="variant"):
        Recipe("nope", dict(default_recipe("original").components))


def test_recipe_json_round_trip(tmp_path):
    recipes = [
        default_recipe("original"),
        default_recipe("f1").with_overrides({"vae": str(tmp_path), "transformer": "a/b/c"}),
        local_recipe(tmp_path, "f1"),
    ]
    for recipe in recipes:
        data = json.loads(json.dumps(recipe.to_dict()))
        assert Recipe.from_dict(data) == recipe
        assert hash(Recipe.from_dict(data)) == hash(recipe)  # usable as a cache key
    data = default_recipe("original").to_dict()
    data["components"]["vae"] = "org/other/vae"  # hand-written short form is accepted
    assert Recipe.from_dict(data)["vae"] == ComponentSource("org/other", "vae")
    with pytest.raises(ModelError):
        Recipe.from_dict({"components": {}})


def test_recipe_module_import_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, framepack.models.recipe, framepack.models.loader, framepack.models.tiny; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"


def test_local_recipe_layout(tmp_path):
    original, f1 = local_recipe(tmp_path, "original"), local_recipe(tmp_path, "f1")
    assert original["vae"] == ComponentSource(str(tmp_path), "vae")
    assert original["transformer"].path() == tmp_path / "transformer"
    assert f1["transformer"].path() == tmp_path / "transformer_f1"
    assert all(src.is_local() for src in original.components.values())


# ---------------------------------------------------------------- tiny model


def test_tiny_model_layout(tiny_model_dir):
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "HunyuanVideoFramepackPipeline"
    for role in (*ROLES, "scheduler"):
        assert role in index and (tiny_model_dir / role).is_dir()
    assert (tiny_model_dir / "transformer_f1" / "config.json").is_file()
    readme = (tiny_model_dir / "README.md").read_text()
    assert "random weights, output is noise, for tests only" in readme.lower()
    sched = json.loads((tiny_model_dir / "scheduler" / "scheduler_config.json").read_text())
    assert sched["use_dynamic_shifting"] is True
    assert (sched["base_image_seq_len"], sched["max_image_seq_len"]) == (256, 4096)
    assert (sched["base_shift"], sched["max_shift"], sched["shift"]) == (0.5, 1.15, 1.0)
    vae = json.loads((tiny_model_dir / "vae" / "config.json").read_text())
    assert vae["latent_channels"] == 16 and vae["scaling_factor"] == 0.476986
    size = sum(p.stat().st_size for p in tiny_model_dir.rglob("*") if p.is_file())
    assert size < 10 * 2**20


def test_tiny_build_is_deterministic_and_idempotent(tiny_model_dir, tmp_path):
    same = tiny.build_tiny_model(tmp_path / "same", seed=tiny.TINY_SEED)
    other = tiny.build_tiny_model(tmp_path / "other", seed=tiny.TINY_SEED + 7)
    for sub, name in WEIGHT_FILES.items():
        assert (same / sub / name).read_bytes() == (tiny_model_dir / sub / name).read_bytes(), sub
        a, b = load_file(tiny_model_dir / sub / name), load_file(other / sub / name)
        assert a.keys() == b.keys()
        assert any(not torch.equal(a[k], b[k]) for k in a if a[k].numel() > 1), sub
    # the two transformers share a config but not their weights
    a = load_file(same / "transformer" / WEIGHT_FILES["transformer"])
    b = load_file(same / "transformer_f1" / WEIGHT_FILES["transformer"])
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].numel() > 1)

    stamp = (same / "vae" / WEIGHT_FILES["vae"]).stat().st_mtime_ns
    t0 = time.perf_counter()
    assert tiny.build_tiny_model(same, seed=tiny.TINY_SEED) == same
    assert time.perf_counter() - t0 < 0.5
    assert (same / "vae" / WEIGHT_FILES["vae"]).stat().st_mtime_ns == stamp
    # a different seed at the same place is not "complete": it is rebuilt
    tiny.build_tiny_model(same, seed=tiny.TINY_SEED + 7)
    assert (same / "vae" / WEIGHT_FILES["vae"]).read_bytes() == (other / "vae" / WEIGHT_FILES["vae"]).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "same"]  # no temp leftovers


def test_tiny_build_is_atomic(tmp_path, monkeypatch):
    def boom(seed):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(tiny, "_build_pipeline", boom)
    with pytest.raises(RuntimeError):
        tiny.build_tiny_model(tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == []


def test_ensure_tiny_model_uses_env(tiny_model_dir, tmp_path, monkeypatch):
    target = tmp_path / "from-env"
    shutil.copytree(tiny_model_dir, target)
    monkeypatch.setenv("FRAMEPACK_TINY_DIR", str(target))
    assert tiny.default_tiny_dir() == target
    assert tiny.ensure_tiny_model() == target
    monkeypatch.delenv("FRAMEPACK_TINY_DIR")
    assert tiny.default_tiny_dir().parts[-2:] == ("models", "tiny-random")


def test_tiny_tokenizers_round_trip(tiny_model_dir):
    from transformers import AutoTokenizer, CLIPTokenizer, LlamaTokenizerFast

    text = "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video. A cat walks, élan!<|eot_id|>"
    for cls in (LlamaTokenizerFast, AutoTokenizer):
        tok = cls.from_pretrained(tiny_model_dir / "tokenizer")
        enc = tok(text, padding="max_length", max_length=96, truncation=True)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        assert len(ids) == 96 and max(ids) < 1000
        assert ids[0] == tok.bos_token_id == tok.convert_tokens_to_ids("<|begin_of_text|>")
        assert ids[1] == tok.convert_tokens_to_ids("<|start_header_id|>")
        assert tok.padding_side == "right" and mask[0] == 1 and mask[-1] == 0 and ids[-1] == tok.pad_token_id
        assert "élan" in tok.decode(ids, skip_special_tokens=True)
        short = tok(text, padding="max_length", max_length=8, truncation=True)["input_ids"]
        assert len(short) == 8
    for cls in (CLIPTokenizer, AutoTokenizer):
        clip = cls.from_pretrained(tiny_model_dir / "tokenizer_2")
        enc = clip("A cat walks, 123!", padding="max_length", max_length=77, truncation=True)
        ids = enc["input_ids"]
        assert len(ids) == 77 and max(ids) < 1000 and clip.model_max_length == 77
        assert ids[0] == clip.bos_token_id and clip.eos_token_id in ids and enc["attention_mask"][-1] == 0


# ---------------------------------------------------------------- loading


def test_load_every_component_from_local_folder(tiny_model_dir):
    parts = load_components(local_recipe(tiny_model_dir, "original"))
    assert set(parts) == set(ROLES)
    for role, obj in parts.items():
        assert isinstance(obj, COMPONENT_CLASSES[role].resolve()), role
        if isinstance(obj, torch.nn.Module):
            assert obj.dtype == torch.float32, role
            assert not obj.training, role
            assert not any(p.requires_grad for p in obj.parameters()), role
    assert parts["transformer"].config.in_channels == 16
    assert parts["vae"].config.latent_channels == 16
    assert parts["text_encoder"].config.num_hidden_layers == 3

    bf16 = load_components(
        local_recipe(tiny_model_dir, "f1"), roles=["transformer"], dtypes={"transformer": torch.bfloat16}
    )
    assert set(bf16) == {"transformer"} and bf16["transformer"].dtype == torch.bfloat16
    # the F1 recipe really reads transformer_f1 (other weights)
    w0 = parts["transformer"].x_embedder.proj.weight
    w1 = bf16["transformer"].x_embedder.proj.weight.float()
    assert not torch.allclose(w0, w1, atol=1e-2)


def test_load_by_hub_id_from_cache_offline(tiny_model_dir, tmp_path, no_network):
    cache = tmp_path / "hf-cache"
    repo_id = tiny.install_tiny_in_cache(cache, source=tiny_model_dir)
    assert repo_id == tiny.TINY_REPO_ID and repo_id.startswith("framepack-tiny/")
    assert (cache / "models--framepack-tiny--HunyuanVideo-tiny" / "refs" / "main").is_file()
    assert tiny.install_tiny_in_cache(cache, source=tiny_model_dir) == repo_id  # idempotent
    recipe = hub_recipe(repo_id, "original")
    assert not recipe["vae"].is_local()
    parts = load_components(recipe, cache_dir=str(cache), offline=True)
    for role, obj in parts.items():
        assert isinstance(obj, COMPONENT_CLASSES[role].resolve()), role
    # and through the override syntax on the default recipe
    mixed = default_recipe("original").with_overrides({"vae": f"{repo_id}/vae"})
    vae = load_component(mixed, "vae", cache_dir=cache, offline=True)
    assert type(vae).__name__ == "AutoencoderKLHunyuanVideo"


def test_pipeline_loads_tiny_folder(tiny_model_dir):
    import numpy as np
    from diffusers import HunyuanVideoFramepackPipeline
    from PIL import Image

    pipe = HunyuanVideoFramepackPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    out = pipe(
        image=image,
        prompt="a cat walks",
        height=32,
        width=32,
        num_frames=9,
        latent_window_size=3,
        num_inference_steps=2,
        max_sequence_length=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    frames = out.frames[0]
    assert frames.shape[1:] == (32, 32, 3) and np.isfinite(frames).all()


# ---------------------------------------------------------------- errors


def _assert_user_message(err: ModelError, *needles: str) -> None:
    text = str(err)
    for needle in needles:
        assert needle in text, (needle, text)
    assert "Traceback" not in text and "\n" not in text


def test_missing_model_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError) as err:
        load_components(local_recipe(missing))
    _assert_user_message(err.value, str(missing), "does not exist")


def test_missing_config(tiny_copy):
    (tiny_copy / "vae" / "config.json").unlink()
    with pytest.raises(ModelError) as err:
        load_components(local_recipe(tiny_copy))
    _assert_user_message(err.value, "vae", "config.json", str(tiny_copy / "vae"))


def test_missing_weights(tiny_copy):
    (tiny_copy / "transformer" / WEIGHT_FILES["transformer"]).unlink()
    with pytest.raises(ModelError) as err:
        load_components(local_recipe(tiny_copy), roles=["transformer"])
    _assert_user_message(err.value, "transformer", "weights", "diffusion_pytorch_model.safetensors")
    # the F1 transformer folder is intact and still loads
    load_components(local_recipe(tiny_copy, "f1"), roles=["transformer"])


def test_missing_tokenizer_and_preprocessor_files(tiny_copy):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tiny_copy / "tokenizer_2" / name).unlink()
    (tiny_copy / "feature_extractor" / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError) as err:
        check_component_folder("tokenizer_2", tiny_copy / "tokenizer_2")
    _assert_user_message(err.value, "tokenizer_2", "tokenizer.json")
    with pytest.raises(ModelError) as err:
        load_components(local_recipe(tiny_copy), roles=["feature_extractor"])
    _assert_user_message(err.value, "feature_extractor", "preprocessor_config.json")


def test_missing_weight_shard(tiny_copy):
    folder = tiny_copy / "vae"
    index = {"metadata": {}, "weight_map": {"a.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError) as err:
        check_component_folder("vae", folder)
    _assert_user_message(err.value, "vae", "00002-of-00002")


def test_corrupt_weights_become_model_error(tiny_copy):
    (tiny_copy / "vae" / WEIGHT_FILES["vae"]).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError) as err:
        load_components(local_recipe(tiny_copy), roles=["vae"])
    _assert_user_message(err.value, "vae", str(tiny_copy / "vae"))


def test_hub_id_not_in_cache_offline(tmp_path, no_network):
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    with pytest.raises(ModelError) as err:
        load_components(default_recipe("original"), cache_dir=str(empty), offline=True)
    _assert_user_message(
        err.value,
        "text_encoder: hunyuanvideo-community/HunyuanVideo/text_encoder is not in the cache",
        "offline mode is on",
        "local folder",
    )
    # HF_HUB_OFFLINE=1 (set by conftest) counts as offline even without offline=True
    with pytest.raises(ModelError) as err:
        load_components(default_recipe("f1"), cache_dir=str(empty), roles=["transformer"])
    _assert_user_message(err.value, "transformer", "lllyasviel/FramePack_F1_I2V_HY_20250503", "offline")


def test_cached_repo_missing_component(tiny_model_dir, tmp_path, no_network):
    cache = tmp_path / "hf-cache"
    repo_id = tiny.install_tiny_in_cache(cache, source=tiny_model_dir)
    recipe = hub_recipe(repo_id).with_overrides({"vae": f"{repo_id}/no_such_vae"})
    with pytest.raises(ModelError) as err:
        load_components(recipe, cache_dir=cache, offline=True, roles=["vae"])
    _assert_user_message(err.value, "vae", f"{repo_id}/no_such_vae", "not in the cache")


# ---------------------------------------------------------------- LazyModel


def test_lazy_model_loads_once_across_threads():
    calls = []
    lock = threading.Lock()

    class Thing:
        pass

    def factory():
        with lock:
            calls.append(1)
        time.sleep(0.05)
        return Thing()

    lazy = LazyModel(factory, "thing")
    assert not lazy.loaded and lazy.peek() is None
    results = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(lazy.get())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert lazy.loaded and lazy.get() is results[0] and len(calls) == 1

    ref = weakref.ref(results[0])
    results.clear()
    lazy.unload()
    gc.collect()
    assert ref() is None and not lazy.loaded
    lazy.get()
    assert len(calls) == 2


def test_lazy_model_failed_factory_is_retried():
    attempts = []

    def factory():
        attempts.append(1)
        if len(attempts) == 1:
            raise ModelError("vae: first try fails")
        return object()

    lazy = LazyModel(factory)
    with pytest.raises(ModelError):
        lazy.get()
    assert not lazy.loaded
    assert lazy.get() is lazy.get() and len(attempts) == 2


def test_lazy_model_unload_frees_a_real_model(tiny_model_dir):
    recipe = local_recipe(tiny_model_dir)
    lazy = LazyModel(lambda: load_component(recipe, "vae"), "vae")
    ref = weakref.ref(lazy.get())
    assert ref() is not None and lazy.loaded
    lazy.unload()
    assert ref() is None
