"""Load the components of a `Recipe` with the libraries' own `from_pretrained`.

Each role goes through its class's `from_pretrained(source, subfolder=..., cache_dir=...,
local_files_only=...)`; nothing here reimplements a file format. What this module adds:

- local folders are checked *before* loading, so a missing `config.json`, weights file,
  tokenizer file or `preprocessor_config.json` is reported by role, path and file name;
- hub and offline failures become a `ModelError` with a one-line message a user can act on;
- models come back in eval mode with gradients off, on the requested device and dtype;
- `LazyModel` builds a component on first use, once, even when two jobs ask at once.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

from framepack.errors import ModelError
from framepack.models.recipe import COMPONENT_CLASSES, REFERENCE_DTYPES, ROLES, ComponentSource, Recipe

log = logging.getLogger(__name__)

T = TypeVar("T")

_WEIGHT_NAMES = {
    "diffusers": "diffusion_pytorch_model.safetensors",
    "transformers": "model.safetensors",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_TRUE = {"1", "on", "yes", "true"}


# ----------------------------------------------------------------------------- dtypes


def default_dtypes(device: Any = "cpu") -> dict[str, Any]:
    """Per-role dtypes for a device.

    CUDA (and MPS): the reference dtypes, bf16 transformer and fp16 encoders/VAE; a GPU without
    bf16 support gets fp16 for the transformer too. CPU: float32 everywhere (half precision on
    CPU is slow and some kernels are missing). Roles without weights are not listed.
    """
    import torch

    kind = torch.device(device).type
    if kind == "cpu":
        return {role: torch.float32 for role in REFERENCE_DTYPES}
    dtypes = {role: getattr(torch, name) for role, name in REFERENCE_DTYPES.items()}
    if kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        dtypes = {role: torch.float16 for role in dtypes}
    return dtypes


# ----------------------------------------------------------------------------- checks


def _offline_effective(offline: bool) -> bool:
    if offline:
        return True
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - huggingface_hub always ships with diffusers
        return False


def check_component_folder(role: str, folder: Path, where: str | None = None) -> None:
    """Raise `ModelError` if `folder` cannot hold the component `role` (nothing is loaded).

    `where` is how the folder is named to the user (defaults to the path itself).
    """
    spec = COMPONENT_CLASSES[role]
    where = where or str(folder)
    if not folder.exists():
        raise ModelError(f"{role}: folder {where} does not exist")
    if not folder.is_dir():
        raise ModelError(f"{role}: {where} is a file, expected a folder")
    names = {p.name for p in folder.iterdir() if p.is_file()}

    if spec.kind == "model":
        if "config.json" not in names:
            raise ModelError(f"{role}: {where} has no config.json")
        indexes = sorted(n for n in names if n.endswith(".index.json"))
        for index in indexes:
            try:
                weight_map = json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"{role}: {where}/{index} is not a readable weights index ({exc})") from None
            missing = sorted(set(weight_map.values()) - names)
            if missing:
                raise ModelError(f"{role}: {where} is missing weight shard {missing[0]} (listed in {index})")
        if not indexes and not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
            expected = _WEIGHT_NAMES.get(spec.library, "model.safetensors")
            raise ModelError(f"{role}: {where} has no weights file ({expected})")
    elif spec.kind == "tokenizer":
        if not (
            "tokenizer.json" in names
            or "tokenizer.model" in names
            or {"vocab.json", "merges.txt"} <= names
        ):
            raise ModelError(
                f"{role}: {where} has no tokenizer files "
                "(tokenizer.json, or vocab.json + merges.txt, or tokenizer.model)"
            )
    elif spec.kind == "image_processor":
        if "preprocessor_config.json" not in names:
            raise ModelError(f"{role}: {where} has no preprocessor_config.json")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else ""
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _not_cached(role: str, src: ComponentSource) -> ModelError:
    return ModelError(
        f"{role}: {src.describe()} is not in the cache and offline mode is on; "
        "download it or point the recipe to a local folder"
    )


def _check_hub_cache(role: str, src: ComponentSource, cache_dir: str | None) -> None:
    """Offline only: find the cached snapshot and check the component folder inside it."""
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(src.source, cache_dir=cache_dir, local_files_only=True)
    except Exception:
        raise _not_cached(role, src) from None
    folder = Path(snapshot) / src.subfolder if src.subfolder else Path(snapshot)
    if not folder.is_dir():
        raise _not_cached(role, src)
    check_component_folder(role, folder, where=f"{src.describe()} (cached)")


# ----------------------------------------------------------------------------- loading


def _dtype_kwarg(library: str) -> str:
    """Name of the dtype argument each library takes without a deprecation warning."""
    if library == "transformers":
        import transformers

        major = int(transformers.__version__.split(".")[0])
        return "dtype" if major >= 5 else "torch_dtype"
    return "torch_dtype"  # diffusers accepts both; torch_dtype works on every version


def load_component(
    recipe: Recipe,
    role: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    device: Any = "cpu",
    dtype: Any = None,
    extra_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """Load one role of `recipe`. `dtype` None: the class default (float32 for models).

    `extra_kwargs` go to `from_pretrained` as they are (a host's device map or quantization
    config, for example); `device` None leaves the model where loading put it.
    """
    if role not in ROLES:
        raise ModelError(f"unknown component role {role!r}; known roles: {', '.join(ROLES)}")
    src = recipe[role]
    spec = COMPONENT_CLASSES[role]
    offline = _offline_effective(offline)
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None

    kwargs: dict[str, Any] = {}
    if src.is_local():
        folder = src.path()
        check_component_folder(role, folder)
        target = str(folder)
        kwargs["local_files_only"] = True
    else:
        if offline:
            _check_hub_cache(role, src, cache_dir)
        target = src.source
        if src.subfolder:
            kwargs["subfolder"] = src.subfolder
        if cache_dir is not None:
            kwargs["cache_dir"] = cache_dir
        kwargs["local_files_only"] = offline
    if spec.kind == "model" and dtype is not None:
        kwargs[_dtype_kwarg(spec.library)] = dtype
    kwargs.update(extra_kwargs or {})

    try:
        cls = spec.resolve()
    except Exception as exc:
        raise ModelError(
            f"{role}: {spec.library}.{spec.class_name} is not available in this installation "
            f"({_first_line(exc)}); update {spec.library}"
        ) from exc

    try:
        obj = cls.from_pretrained(target, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        if not src.is_local() and offline and isinstance(exc, (OSError, FileNotFoundError)):
            raise _not_cached(role, src) from exc
        if not src.is_local() and isinstance(exc, OSError):
            raise ModelError(
                f"{role}: could not get {src.describe()} from the hub ({_first_line(exc)}); "
                "check the name and your connection, or point the recipe to a local folder"
            ) from exc
        raise ModelError(f"{role}: could not load {src.describe()} ({_first_line(exc)})") from exc

    if spec.kind == "model":
        obj.eval()
        obj.requires_grad_(False)
        if device is not None:
            obj.to(device)
    log.debug("loaded %s from %s", role, src.describe())
    return obj


def load_components(
    recipe: Recipe,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    device: Any = "cpu",
    dtypes: Mapping[str, Any] | None = None,
    roles: Iterable[str] = ROLES,
) -> dict[str, Any]:
    """Load the given roles of `recipe` -> {role: object}.

    `dtypes` None: `default_dtypes(device)`; a mapping overrides per role (missing roles get
    the default for the device). All local folders are checked before anything is loaded, so
    a broken folder fails fast instead of after minutes of loading other components.
    """
    roles = tuple(roles)
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ModelError(f"unknown component role(s) {', '.join(unknown)}; known roles: {', '.join(ROLES)}")
    chosen = dict(default_dtypes(device))
    if dtypes:
        chosen.update(dtypes)
    for role in roles:  # fail fast on local folders
        src = recipe[role]
        if src.is_local():
            check_component_folder(role, src.path())
    return {
        role: load_component(
            recipe, role, cache_dir=cache_dir, offline=offline, device=device, dtype=chosen.get(role)
        )
        for role in roles
    }


# ----------------------------------------------------------------------------- lazy holder


def free_memory() -> None:
    """Collect garbage and return cached accelerator memory to the driver."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass


class LazyModel(Generic[T]):
    """Build an object on first `get()` and keep it until `unload()`.

    Thread-safe: concurrent `get()` calls run the factory once. If the factory raises, nothing
    is cached and the next `get()` tries again.
    """

    def __init__(self, factory: Callable[[], T], name: str = "model") -> None:
        self._factory = factory
        self._name = name
        self._obj: T | None = None
        self._loaded = False
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def loaded(self) -> bool:
        return self._loaded

    def get(self) -> T:
        """The object, built by the factory on the first call (others wait for it)."""
        with self._lock:
            if not self._loaded:
                self._obj = self._factory()
                self._loaded = True
            return self._obj  # type: ignore[return-value]

    def peek(self) -> T | None:
        """The object if loaded, else None (never loads, never waits)."""
        obj = self._obj
        return obj if self._loaded else None

    def unload(self) -> None:
        """Drop the reference and give the memory back (the caller must hold no other refs).

        Waits for a load in progress to finish, then drops what it loaded.
        """
        with self._lock:
            was_loaded = self._loaded
            self._loaded = False
            self._obj = None
        if was_loaded:
            free_memory()

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"LazyModel({self._name}, {state})"
