"""Upscaler model files (ESRGAN family and the rest of what spandrel knows), loaded safely.

Only `.safetensors` files are opened: pickled `.pth`/`.ckpt` files can run code when loaded.
spandrel detects the architecture and its hyper-parameters from the state dict (RRDBNet /
Real-ESRGAN, Compact, SwinIR, HAT, DAT, ...). Inside SD.Next it is the host's own copy.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

from framepack.errors import InputError, ModelError

SAFE_SUFFIX = ".safetensors"


def check_model_file(path: str | os.PathLike, kind: str) -> Path:
    """The resolved path of an existing `.safetensors` file, else an `InputError` naming `kind`."""
    file = Path(os.path.expanduser(os.fspath(path))).resolve()
    if not file.is_file():
        raise InputError(f"{kind} model file not found: {path}")
    if file.suffix.lower() != SAFE_SUFFIX:
        raise InputError(f"{kind} model {file.name}: only .safetensors files are loaded (pickled files can run code)")
    return file


def import_spandrel():
    """`import spandrel`, also where torchvision is not installed.

    spandrel imports torchvision at import time for two architectures that are not upscalers
    (RestoreFormer's normalize, LaMa's rotate). Where torchvision is absent (our standalone venv:
    PyPI's torchvision does not run on CPU torch), a placeholder stands in for it only while
    spandrel imports, and calling those two functions raises. A torchvision that is installed is
    always the real one.
    """
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return _import("spandrel")
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    placeholders = {name: types.ModuleType(name) for name in names}

    def missing(*args, **kwargs):
        raise ModelError("this spandrel architecture needs torchvision, which is not installed")

    functional = placeholders["torchvision.transforms.functional"]
    functional.normalize = functional.rotate = missing
    functional.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear", NEAREST="nearest")
    placeholders["torchvision"].transforms = placeholders["torchvision.transforms"]
    placeholders["torchvision.transforms"].functional = functional
    sys.modules.update(placeholders)
    try:
        return _import("spandrel")
    finally:
        for name in names:
            if sys.modules.get(name) is placeholders[name]:
                del sys.modules[name]


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ModelError(f"upscaler models need the spandrel package ({error}); install spandrel") from None


def load_upscaler_model(path: str | os.PathLike, device: Any = "cpu"):
    """A spandrel `ImageModelDescriptor` of an upscaler (scale >= 2), in eval mode on `device`."""
    file = check_model_file(path, "upscaler")
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_file(str(file))
    except spandrel.UnsupportedModelError:
        raise ModelError(f"upscaler {file.name}: not a model architecture spandrel knows") from None
    except Exception as error:  # noqa: BLE001 - a broken file: one line naming it
        raise ModelError(f"upscaler {file.name} cannot be loaded: {type(error).__name__}: {error}") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale < 2:
        raise ModelError(f"upscaler {file.name}: a {descriptor.architecture.name} {descriptor.purpose} model "
                         f"(scale {getattr(descriptor, 'scale', '?')}), not an upscaler")
    return descriptor.eval()
