"""A tiny FramePack model with RANDOM WEIGHTS, for tests and the offline demo only.

It has the real component classes and the real folder layout (a diffusers
`HunyuanVideoFramepackPipeline` folder plus a `transformer_f1` subfolder), with configs so small
that the whole set is a few megabytes and a sampling step takes milliseconds on a CPU. Its
weights are random: **the videos it produces are noise**. It exists so that the real loading,
encoding, sampling and decoding code runs end to end without downloading 30 GB.

The build is deterministic: the same seed gives byte-identical files. It is written into a
temporary folder and renamed into place, so a crash never leaves a half model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
import uuid
from pathlib import Path

from framepack.errors import ModelError
from framepack.models.recipe import LOCAL_TRANSFORMER_SUBFOLDERS

TINY_SEED = 0
TINY_FORMAT = 1  # bump when the layout or configs change: old folders are rebuilt
TINY_REPO_ID = "framepack-tiny/HunyuanVideo-tiny"  # a made-up hub id; no such repo exists
MARKER = "framepack_tiny.json"

README = """# FramePack tiny model (RANDOM WEIGHTS)

Random weights, output is noise, for tests only.

This folder is written by `framepack.models.tiny.build_tiny_model`. It has the real component
classes and layout of a diffusers `HunyuanVideoFramepackPipeline` folder (plus
`transformer_f1`, the same transformer config with other random weights), but every model is
tiny and untrained. It lets the loading and generation code run without downloads; the
videos it makes are meaningless noise.
"""

# ------------------------------------------------------------------ configs (facts, tiny)

TRANSFORMER_CONFIG = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=2,
    attention_head_dim=10,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    patch_size=2,
    patch_size_t=1,
    text_embed_dim=16,
    pooled_projection_dim=8,
    rope_axes_dim=(2, 4, 4),
    image_condition_type=None,
    has_image_proj=True,
    image_proj_dim=32,
    has_clean_x_embedder=True,
    guidance_embeds=True,
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    down_block_types=("HunyuanVideoDownBlock3D",) * 4,
    up_block_types=("HunyuanVideoUpBlock3D",) * 4,
    block_out_channels=(8, 8, 8, 8),
    layers_per_block=1,
    norm_num_groups=4,
    spatial_compression_ratio=8,
    temporal_compression_ratio=4,
    scaling_factor=0.476986,
    mid_block_add_attention=True,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)

LLAMA_SPECIALS = (
    "<unk>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<pad>",
)
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
VOCAB_SIZE = 1000

LLAMA_CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=16,
    intermediate_size=37,
    num_hidden_layers=3,  # the encoder reads hidden_states[-3]: make it a real layer
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    bos_token_id=LLAMA_SPECIALS.index("<|begin_of_text|>"),
    eos_token_id=LLAMA_SPECIALS.index("<|end_of_text|>"),
    pad_token_id=LLAMA_SPECIALS.index("<pad>"),
)

CLIP_CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=8,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=8,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)

SIGLIP_CONFIG = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=4,
)

IMAGE_SIZE = 32

# `build_quantizable_tiny_model`: layers wide enough for quanto and NNCF int4 (group size 128)
QUANTIZABLE_TRANSFORMER_CONFIG = dict(
    TRANSFORMER_CONFIG, attention_head_dim=64, rope_axes_dim=(16, 24, 24), text_embed_dim=128
)
QUANTIZABLE_LLAMA_CONFIG = dict(LLAMA_CONFIG, hidden_size=128, intermediate_size=256)

# per-component seed offsets (the transformers use seed and seed + 1 exactly)
_SEED_OFFSETS = {"text_encoder": 11, "text_encoder_2": 12, "vae": 13, "image_encoder": 14}


# ------------------------------------------------------------------ tokenizers


def _byte_chars() -> dict[int, str]:
    """Byte -> printable unicode char, the byte-level BPE alphabet (GPT-2 / CLIP convention)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def build_llama_tokenizer():
    """Char-level BPE (empty merges, byte fallback) with the Llama-3 chat-template markers."""
    from transformers import LlamaTokenizerFast

    vocab: dict[str, int] = {}
    chars = ["\u2581"] + list(string.ascii_letters + string.digits + string.punctuation)
    for token in (*LLAMA_SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), *chars):
        vocab.setdefault(token, len(vocab))
    assert len(vocab) < VOCAB_SIZE
    tok = LlamaTokenizerFast(
        vocab=vocab,
        merges=[],
        unk_token="<unk>",
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<pad>",
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
        model_max_length=LLAMA_CONFIG["max_position_embeddings"],
    )
    tok.add_special_tokens(
        {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    return tok


def build_clip_tokenizer():
    """Byte-level char BPE (empty merges) with CLIP's bos/eos/pad, max length 77."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    alphabet = list(_byte_chars().values())
    for token in (*CLIP_SPECIALS, *alphabet, *(c + "</w>" for c in alphabet)):
        vocab.setdefault(token, len(vocab))
    assert len(vocab) < VOCAB_SIZE
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="right",
        model_max_length=77,
    )


# ------------------------------------------------------------------ build


def _seeded(seed: int, make):
    import torch

    torch.manual_seed(seed)
    return make()


def _build_pipeline(seed: int, transformer_config: dict = TRANSFORMER_CONFIG, llama_config: dict = LLAMA_CONFIG):
    import torch

    from framepack.models.recipe import quiet_image_processor_fallback

    quiet_image_processor_fallback()
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackPipeline,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel, SiglipVisionConfig, SiglipVisionModel

    from framepack.models.recipe import COMPONENT_CLASSES

    image_processor_cls = COMPONENT_CLASSES["feature_extractor"].resolve()

    with torch.random.fork_rng(devices=[]):
        text_encoder = _seeded(seed + _SEED_OFFSETS["text_encoder"], lambda: LlamaModel(LlamaConfig(**llama_config)))
        text_encoder_2 = _seeded(
            seed + _SEED_OFFSETS["text_encoder_2"], lambda: CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG))
        )
        vae = _seeded(seed + _SEED_OFFSETS["vae"], lambda: AutoencoderKLHunyuanVideo(**VAE_CONFIG))
        image_encoder = _seeded(
            seed + _SEED_OFFSETS["image_encoder"], lambda: SiglipVisionModel(SiglipVisionConfig(**SIGLIP_CONFIG))
        )
        transformer = _seeded(seed, lambda: HunyuanVideoFramepackTransformer3DModel(**transformer_config))
        transformer_f1 = _seeded(seed + 1, lambda: HunyuanVideoFramepackTransformer3DModel(**transformer_config))
    feature_extractor = image_processor_cls(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    pipe = HunyuanVideoFramepackPipeline(
        text_encoder=text_encoder,
        tokenizer=build_llama_tokenizer(),
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        text_encoder_2=text_encoder_2,
        tokenizer_2=build_clip_tokenizer(),
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
    )
    return pipe, transformer_f1


# model_index.json names as the public repos write them; transformers 5 saves its aliases
# (LlamaTokenizer, SiglipImageProcessorPil), which older transformers cannot resolve.
_CANONICAL_CLASSES = {"tokenizer": "LlamaTokenizerFast", "feature_extractor": "SiglipImageProcessor"}


def _canonical_model_index(path: Path) -> None:
    index = json.loads(path.read_text(encoding="utf-8"))
    for role, name in _CANONICAL_CLASSES.items():
        if isinstance(index.get(role), list) and len(index[role]) == 2:
            index[role] = [index[role][0], name]
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _normalize_permissions(folder: Path) -> None:
    """mkdtemp makes 0700 folders and some writers 0600 files: use the umask defaults."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _is_complete(root: Path, seed: int, flavor: str | None = None) -> bool:
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("format") == TINY_FORMAT
        and marker.get("seed") == seed
        and marker.get("flavor") == flavor
        and (root / "model_index.json").is_file()
        and all((root / sub).is_dir() for sub in marker.get("subfolders", ["?"]))
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def build_tiny_model(root: str | os.PathLike, *, seed: int = TINY_SEED, overwrite: bool = False) -> Path:
    """Write the random-weight tiny model to `root` and return it (see the module docstring).

    Returns at once when `root` already holds a complete tiny model of this seed and format,
    unless `overwrite`. Anything else at `root` is replaced.
    """
    return _write_model(root, seed, overwrite, lambda: _build_pipeline(seed), flavor=None)


def build_quantizable_tiny_model(root: str | os.PathLike, *, seed: int = TINY_SEED, overwrite: bool = False) -> Path:
    """The tiny model with a transformer and Llama encoder wide enough to be quantized for real.

    The default tiny layers (20 channels) are below NNCF's int4 group size, so NNCF int4 would
    fall back to int8 almost everywhere; here the transformer has 2 heads x 64 and the Llama
    encoder 128 channels, so quanto and NNCF int4 replace real layers. Same layout, other
    components as in `build_tiny_model`; random weights, output is noise.
    """
    return _write_model(root, seed, overwrite, lambda: _build_pipeline(seed, QUANTIZABLE_TRANSFORMER_CONFIG,
                                                                     QUANTIZABLE_LLAMA_CONFIG),
                        flavor="quantizable")


def _write_model(root, seed: int, overwrite: bool, build, flavor: str | None) -> Path:
    """Build with `build()` into a temporary folder and rename it to `root` (atomic, see above)."""
    import logging as _logging

    root = Path(os.path.expanduser(os.fspath(root))).absolute()
    if not overwrite and _is_complete(root, seed, flavor):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        # the libraries log save-time notices (e.g. about the PIL image processor); keep quiet
        from transformers.utils import logging as tf_logging

        quiet = [_logging.getLogger(n) for n in ("transformers", "diffusers")]
        levels = [lg.level for lg in quiet]
        bars = tf_logging.is_progress_bar_enabled()
        for lg in quiet:
            lg.setLevel(_logging.ERROR)
        tf_logging.disable_progress_bar()
        try:
            pipe, transformer_f1 = build()
            pipe.save_pretrained(tmp, safe_serialization=True)
            transformer_f1.save_pretrained(tmp / LOCAL_TRANSFORMER_SUBFOLDERS["f1"], safe_serialization=True)
        finally:
            for lg, level in zip(quiet, levels):
                lg.setLevel(level)
            if bars:
                tf_logging.enable_progress_bar()
        _canonical_model_index(tmp / "model_index.json")
        (tmp / "README.md").write_text(README, encoding="utf-8")
        subfolders = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        _normalize_permissions(tmp)
        marker = {"format": TINY_FORMAT, "seed": seed, "random_weights": True, "subfolders": subfolders}
        if flavor is not None:
            marker["flavor"] = flavor
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")

        old = None
        if root.exists() or root.is_symlink():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(root, old)
            except FileNotFoundError:
                old = None  # someone else removed it meanwhile
        try:
            os.replace(tmp, root)
        except OSError:
            # another process renamed its build into place first; keep theirs if usable
            if _is_complete(root, seed, flavor):
                return root
            raise
        finally:
            if old is not None:
                _remove(old)
    except ModelError:
        raise
    except OSError as exc:
        raise ModelError(f"could not write the tiny test model to {root}: {exc}") from exc
    finally:
        if tmp.exists():
            _remove(tmp)
    return root


def default_tiny_dir() -> Path:
    """FRAMEPACK_TINY_DIR, else <repo>/models/tiny-random."""
    env = os.environ.get("FRAMEPACK_TINY_DIR", "").strip()
    if env:
        return Path(os.path.expanduser(env)).absolute()
    return Path(__file__).resolve().parents[2] / "models" / "tiny-random"


def ensure_tiny_model(path: str | os.PathLike | None = None) -> Path:
    """The tiny model folder (default `default_tiny_dir()`), built on first use."""
    return build_tiny_model(default_tiny_dir() if path is None else path, seed=TINY_SEED)


def _folder_digest(folder: Path) -> str:
    """40-hex digest of a folder's relative names and bytes (a stable fake commit hash)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def install_tiny_in_cache(
    cache_dir: str | os.PathLike,
    repo_id: str = TINY_REPO_ID,
    *,
    source: str | os.PathLike | None = None,
) -> str:
    """Put the tiny model into a Hugging Face hub cache under a fake repo id; return the id.

    Lays out `models--org--name/{blobs,snapshots/<hash>,refs/main}` like `huggingface_hub`
    does, so loading by hub id with `cache_dir=` and offline mode runs the real hub code path.
    `source` is the tiny folder to install (default: `ensure_tiny_model()`).
    """
    org, sep, name = repo_id.partition("/")
    if not sep or not org or not name or "/" in name:
        raise ModelError(f"{repo_id!r} is not a hub id of the form org/name")
    src = Path(source) if source is not None else ensure_tiny_model()
    if not _is_complete(src, _read_seed(src)):
        raise ModelError(f"{src} is not a complete tiny model folder")
    cache = Path(os.path.expanduser(os.fspath(cache_dir))).absolute()
    repo_dir = cache / f"models--{org}--{name}"
    commit = _folder_digest(src)
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        blobs = repo_dir / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        # build next to the final snapshot: the relative blob links must keep their depth
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=snapshot.parent))
        try:
            for path in sorted(p for p in src.rglob("*") if p.is_file()):
                rel = path.relative_to(src)
                blob = blobs / hashlib.sha256(path.read_bytes()).hexdigest()
                if not blob.exists():
                    shutil.copyfile(path, blob)
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.symlink(os.path.relpath(blob, dest.parent), dest)
                except OSError:  # no symlinks (e.g. Windows without privilege): copy
                    shutil.copyfile(blob, dest)
            os.chmod(tmp, 0o755)
            try:
                os.replace(tmp, snapshot)
            except OSError:
                if not snapshot.is_dir():
                    raise
        finally:
            if tmp.exists():
                _remove(tmp)
    refs = repo_dir / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(commit, encoding="utf-8")
    return repo_id


def _read_seed(folder: Path) -> int:
    try:
        return int(json.loads((folder / MARKER).read_text(encoding="utf-8"))["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1
