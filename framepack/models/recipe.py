"""Which component comes from where: the FramePack component table as data.

A `Recipe` maps each of the eight component roles to a `ComponentSource` (a hub repo id or a
local folder, plus an optional subfolder). It is plain data: it imports neither torch nor
diffusers, round-trips through JSON (`to_dict` / `from_dict`) and is what a job records so
that a resumed job loads the same models.

Override syntax (`Recipe.with_overrides`, UI fields, CLI flags), one string per role:

- a hub id is exactly ``org/name``, optionally followed by ``/subfolder[/deeper]``:
  ``lllyasviel/flux_redux_bfl/image_encoder`` -> repo ``lllyasviel/flux_redux_bfl``,
  subfolder ``image_encoder``;
- a local folder is anything that starts with ``/``, ``.``, ``~`` (or a Windows drive), or that
  exists on disk; it names the component folder itself (no separate subfolder part).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from framepack.errors import ModelError
from framepack.request.limits import VARIANTS

ROLES = (
    "text_encoder",
    "tokenizer",
    "text_encoder_2",
    "tokenizer_2",
    "vae",
    "image_encoder",
    "feature_extractor",
    "transformer",
)

OPTIONAL_ROLES = ("tiny_vae",)
"""Roles a recipe may name but need not: the Tiny VAE (TAEHV, `framepack.models.taehv`) for fast
previews and, on request, the final decode. Absent by default: nothing is downloaded unasked."""
ALL_ROLES = ROLES + OPTIONAL_ROLES

HUNYUAN_REPO = "hunyuanvideo-community/HunyuanVideo"
REDUX_REPO = "lllyasviel/flux_redux_bfl"
TRANSFORMER_REPOS = {
    "original": "lllyasviel/FramePackI2V_HY",
    "f1": "lllyasviel/FramePack_F1_I2V_HY_20250503",
}

# Subfolder of the transformer inside a local folder written by `framepack.models.tiny`
# (and by anyone who lays out a full FramePack folder the same way).
LOCAL_TRANSFORMER_SUBFOLDERS = {"original": "transformer", "f1": "transformer_f1"}

_HUB_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HUB_ID_RE = re.compile(rf"^{_HUB_PART}/{_HUB_PART}$")
_WINDOWS_DRIVE_RE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class ComponentClass:
    """How a role is loaded: `library.class_name.from_pretrained(...)`.

    Kept as names so that importing this module stays cheap; `resolve()` imports the class.
    `dtype` is the reference dtype name ("bfloat16", "float16") or None for components that
    hold no weights (tokenizers, the image processor).
    """

    library: str
    class_name: str
    dtype: str | None
    kind: str  # "model" | "tokenizer" | "image_processor"

    def resolve(self) -> type:
        import importlib

        module = importlib.import_module(self.library)
        name = self.class_name
        if self.kind == "image_processor" and self.library == "transformers":
            # transformers 5: `<Model>ImageProcessor` needs torchvision and otherwise falls back
            # to `<Model>ImageProcessorPil` with a warning; ask for the PIL one directly then.
            import importlib.util

            if importlib.util.find_spec("torchvision") is None and hasattr(module, name + "Pil"):
                name = name + "Pil"
        return getattr(module, name)


class _ImageProcessorFallbackFilter:
    """Drops transformers' "`XImageProcessor` requires torchvision; falling back to `XImageProcessorPil`"
    record (and nothing else): without torchvision the PIL processor is the one we want anyway."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not ("requires torchvision (not installed)" in message and "ImageProcessorPil" in message)


_FALLBACK_FILTER = _ImageProcessorFallbackFilter()


def quiet_image_processor_fallback() -> None:
    """Call before importing diffusers' FramePack pipeline: its module imports `SiglipImageProcessor`
    by that name, and without torchvision transformers then warns on every run. Only that one
    message is filtered (on the logger that emits it); every other warning still shows."""
    import importlib.util
    import logging

    if importlib.util.find_spec("torchvision") is not None:
        return  # nothing falls back, nothing to hide
    logger = logging.getLogger("transformers.utils.import_utils")
    if _FALLBACK_FILTER not in logger.filters:
        logger.addFilter(_FALLBACK_FILTER)


COMPONENT_CLASSES: dict[str, ComponentClass] = {
    "text_encoder": ComponentClass("transformers", "LlamaModel", "float16", "model"),
    "tokenizer": ComponentClass("transformers", "LlamaTokenizerFast", None, "tokenizer"),
    "text_encoder_2": ComponentClass("transformers", "CLIPTextModel", "float16", "model"),
    "tokenizer_2": ComponentClass("transformers", "CLIPTokenizer", None, "tokenizer"),
    "vae": ComponentClass("diffusers", "AutoencoderKLHunyuanVideo", "float16", "model"),
    "image_encoder": ComponentClass("transformers", "SiglipVisionModel", "float16", "model"),
    "feature_extractor": ComponentClass("transformers", "SiglipImageProcessor", None, "image_processor"),
    "transformer": ComponentClass(
        "diffusers", "HunyuanVideoFramepackTransformer3DModel", "bfloat16", "model"
    ),
}

# Reference dtypes (the FramePack demo): transformer bf16, encoders and VAE fp16.
REFERENCE_DTYPES: dict[str, str] = {
    role: cls.dtype for role, cls in COMPONENT_CLASSES.items() if cls.dtype is not None
}


def _looks_local(value: str) -> bool:
    return (
        value.startswith(("/", ".", "~", "\\"))
        or bool(_WINDOWS_DRIVE_RE.match(value))
        or os.path.isabs(value)
        or os.path.exists(os.path.expanduser(value))
    )


@dataclass(frozen=True)
class ComponentSource:
    """One component's origin: hub repo id ("org/name") or local folder, plus a subfolder."""

    source: str
    subfolder: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ModelError("a component source must be a hub id (org/name) or a folder path")
        if self.subfolder is not None and not isinstance(self.subfolder, str):
            raise ModelError(f"subfolder of {self.source} must be text, got {self.subfolder!r}")
        if self.subfolder == "":
            object.__setattr__(self, "subfolder", None)

    def is_local(self) -> bool:
        return _looks_local(self.source)

    def path(self) -> Path:
        """The component folder on disk (local sources only)."""
        if not self.is_local():
            raise ModelError(f"{self.describe()} is a hub id, not a local folder")
        base = Path(os.path.expanduser(self.source))
        return base / self.subfolder if self.subfolder else base

    def describe(self) -> str:
        if self.subfolder:
            sep = "" if self.source.endswith(("/", "\\")) else "/"
            return f"{self.source}{sep}{self.subfolder}"
        return self.source

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "subfolder": self.subfolder}

    @classmethod
    def parse(cls, value: str | os.PathLike | ComponentSource, role: str = "component") -> ComponentSource:
        """Parse the override syntax described in the module docstring."""
        if isinstance(value, ComponentSource):
            return value
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            raise ModelError(
                f"{role}: expected a hub id (org/name[/subfolder]) or a folder path, got {value!r}"
            )
        value = value.strip()
        if _looks_local(value):
            path = Path(os.path.expanduser(value))
            return cls(str(path.absolute()) if not path.is_absolute() else str(path))
        parts = value.strip("/").split("/")
        if len(parts) >= 2 and _HUB_ID_RE.match("/".join(parts[:2])) and all(parts[2:]):
            return cls("/".join(parts[:2]), "/".join(parts[2:]) or None)
        raise ModelError(
            f"{role}: {value!r} is neither an existing folder nor a hub id of the form "
            "org/name or org/name/subfolder"
        )


@dataclass(frozen=True)
class Recipe:
    """Variant ("original" or "f1") plus one `ComponentSource` per role in `ROLES`."""

    variant: str
    components: Mapping[str, ComponentSource] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ModelError(
                f"unknown model variant {self.variant!r}; choose one of: {', '.join(VARIANTS)}"
            )
        unknown = [r for r in self.components if r not in ALL_ROLES]
        if unknown:
            raise ModelError(
                f"unknown component role(s) {', '.join(map(repr, unknown))}; "
                f"known roles: {', '.join(ALL_ROLES)}"
            )
        missing = [r for r in ROLES if r not in self.components]
        if missing:
            raise ModelError(f"the model recipe has no source for: {', '.join(missing)}")
        bad = [r for r, s in self.components.items() if not isinstance(s, ComponentSource)]
        if bad:
            raise ModelError(f"component source of {', '.join(bad)} is not a ComponentSource")
        # a private, role-ordered copy: the frozen recipe cannot be changed from outside
        object.__setattr__(self, "components", {r: self.components[r] for r in ALL_ROLES if r in self.components})

    def __hash__(self) -> int:  # components is a dict: hash its (ordered) items
        return hash((self.variant, tuple(self.components.items())))

    def __getitem__(self, role: str) -> ComponentSource:
        try:
            return self.components[role]
        except KeyError:
            if role in OPTIONAL_ROLES:
                raise ModelError(f"the model recipe has no {role}") from None
            raise ModelError(f"unknown component role {role!r}; known roles: {', '.join(ALL_ROLES)}") from None

    def get(self, role: str) -> ComponentSource | None:
        """The source of `role`, or None when the recipe does not name it (optional roles)."""
        return self.components.get(role)

    def with_overrides(self, overrides: Mapping[str, str | os.PathLike | ComponentSource] | None) -> Recipe:
        """A new recipe with some roles pointed elsewhere (see the module docstring for syntax).

        Empty / None values are ignored, so UI fields left blank keep the default.
        """
        if not overrides:
            return self
        unknown = [r for r in overrides if r not in ALL_ROLES]
        if unknown:
            raise ModelError(
                f"unknown component role(s) {', '.join(map(repr, unknown))}; "
                f"known roles: {', '.join(ALL_ROLES)}"
            )
        components = dict(self.components)
        for role, value in overrides.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            components[role] = ComponentSource.parse(value, role)
        return Recipe(self.variant, components)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "components": {role: src.to_dict() for role, src in self.components.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        if not isinstance(data, Mapping) or "variant" not in data or "components" not in data:
            raise ModelError("a saved model recipe needs 'variant' and 'components'")
        raw = data["components"]
        if not isinstance(raw, Mapping):
            raise ModelError("the 'components' of a saved model recipe must be a mapping")
        components: dict[str, ComponentSource] = {}
        for role, value in raw.items():
            if isinstance(value, Mapping):
                if "source" not in value:
                    raise ModelError(f"{role}: saved component has no 'source'")
                components[role] = ComponentSource(value["source"], value.get("subfolder"))
            else:
                components[role] = ComponentSource.parse(value, role)
        return cls(data["variant"], components)


def default_recipe(variant: str = "original") -> Recipe:
    """The public FramePack components (ALGORITHM.md table) for one variant."""
    if variant not in VARIANTS:
        raise ModelError(f"unknown model variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    components = {
        role: ComponentSource(HUNYUAN_REPO, role)
        for role in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae")
    }
    components["image_encoder"] = ComponentSource(REDUX_REPO, "image_encoder")
    components["feature_extractor"] = ComponentSource(REDUX_REPO, "feature_extractor")
    components["transformer"] = ComponentSource(TRANSFORMER_REPOS[variant])
    return Recipe(variant, components)


def local_recipe(root: str | os.PathLike, variant: str = "original") -> Recipe:
    """Every component from one local folder in the layout of `framepack.models.tiny`
    (role subfolders; the F1 transformer in `transformer_f1`)."""
    if variant not in VARIANTS:
        raise ModelError(f"unknown model variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    path = Path(os.path.expanduser(os.fspath(root))).absolute()
    components = {role: ComponentSource(str(path), role) for role in ROLES}
    components["transformer"] = ComponentSource(str(path), LOCAL_TRANSFORMER_SUBFOLDERS[variant])
    tiny = path / "tiny_vae"
    if tiny.is_dir() and any(p.suffix == ".safetensors" and p.name.lower().startswith(("taehv", "taew"))
                             for p in tiny.iterdir()):
        components["tiny_vae"] = ComponentSource(str(path), "tiny_vae")  # used when present
    return Recipe(variant, components)


def hub_recipe(repo_id: str, variant: str = "original") -> Recipe:
    """Every component from one hub repo in the same layout as `local_recipe` (used for the
    tiny model installed into a hub cache)."""
    if not _HUB_ID_RE.match(repo_id):
        raise ModelError(f"{repo_id!r} is not a hub id of the form org/name")
    components = {role: ComponentSource(repo_id, role) for role in ROLES}
    components["transformer"] = ComponentSource(repo_id, LOCAL_TRANSFORMER_SUBFOLDERS[variant])
    return Recipe(variant, components)


def parse_recipe_setting(text: str | None, variant: str, base: Recipe | None = None) -> Recipe:
    """The `framepack_model_recipe` setting -> `Recipe` for `variant` (syntax: the setting's label).

    JSON (`{"vae": "org/repo/vae"}`) or one `role: source` (or `role = source`) per line, `#`
    comments; `transformer_original` / `transformer_f1` name one variant's transformer, `folder`
    a local folder with every component. Overrides apply on top of `base` (default: the public
    models) unless a `folder` is given.
    """
    text = (text or "").strip()
    base = base or default_recipe(variant)
    if not text:
        return base
    entries = _recipe_json(text) if text.startswith("{") else _recipe_lines(text)
    known = {"folder", *ROLES, *OPTIONAL_ROLES, *(f"transformer_{v}" for v in VARIANTS)}
    unknown = sorted(set(entries) - known)
    if unknown:
        raise ModelError(f"FramePack model recipe setting: unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    folder = entries.pop("folder", "")
    recipe = local_recipe(folder, variant) if folder else base
    specific = entries.pop(f"transformer_{variant}", "")
    for name in VARIANTS:
        entries.pop(f"transformer_{name}", None)
    if specific:
        entries["transformer"] = specific
    return recipe.with_overrides(entries)


def _recipe_json(text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ModelError(f"FramePack model recipe setting is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ModelError("FramePack model recipe setting: expected a JSON object of role -> source text")
    return {str(k).strip(): v.strip() for k, v in data.items()}


def _recipe_lines(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        separator = min((i for i in (line.find(":"), line.find("=")) if i > 0), default=-1)
        if separator < 0:
            raise ModelError(f"FramePack model recipe setting, line {number}: expected 'role: source', got {line!r}")
        entries[line[:separator].strip()] = line[separator + 1:].strip()
    return entries
