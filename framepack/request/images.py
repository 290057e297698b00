"""Turn what a face hands over (image file bytes, a PIL image or a pixel array) into RGB uint8 pixels.

Every image enters a request through `to_rgb_array`, once, at the request model. File paths and
text are refused here: a face that has a file reads it (only the CLI may, for its own user) and
a face that receives base64 decodes it (the API), so whether a remote client can make the server
read one of its files never depends on a face remembering to refuse paths.

Common non-RGB inputs are converted rather than refused (a user with a PNG screenshot expects it
to work); what cannot make a sensible video start (too small, absurdly large, undecodable) is
refused with a message naming the image.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from framepack.errors import InputError
from framepack.request.limits import MAX_IMAGE_PIXELS as MAX_PIXELS
from framepack.request.limits import MAX_IMAGE_SIDE as MAX_SIDE
from framepack.request.limits import MIN_IMAGE_SIDE as MIN_SIDE
from framepack.request.limits import image_limit_text


def to_rgb_array(value: Any, name: str = "image") -> np.ndarray:
    """Return an [H, W, 3] uint8 array, converting alpha, grayscale, palette and 16-bit inputs."""
    if isinstance(value, np.ndarray):
        array = _array_to_rgb(value, name)
    else:
        array = _pil_to_rgb(_open_image(value, name), name)
    _check_size(array.shape[1], array.shape[0], name)
    return np.ascontiguousarray(array)


def _open_image(value: Any, name: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(value), name)
    if isinstance(value, str):
        raise InputError(f"{name}: expected image data (file bytes, pixels or a PIL image), not text; "
                         "file paths and base64 are read by the CLI and the API, never here")
    raise InputError(f"{name}: expected an image, got {type(value).__name__}")


def declared_pixels(data: bytes, name: str = "image") -> int:
    """Pixels the image file `data` declares in its header, refusing absurd sizes before decoding.

    Only the header is read (Pillow opens lazily), so a file declaring 20000x20000 costs nothing.
    Data that is not an image declares nothing (0): decoding it later says so.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # Pillow refuses the declared size itself, before we see it
        raise InputError(f"{name}: too large, the image declares far too many pixels; "
                         f"{image_limit_text()}") from None
    except Exception:  # not an image: the decoder words that message
        return 0
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise InputError(f"{name}: {width}x{height} is too large; {image_limit_text()}")
    return width * height


def _decode_bytes(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        _check_size(image.width, image.height, name)
        image.load()
    except InputError:
        raise
    except Image.DecompressionBombError:  # Pillow refuses the declared size before we can look at it
        raise InputError(f"{name}: too large; {image_limit_text()}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{name}: not a readable image file") from None
    return image


def _check_size(width: int, height: int, name: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{name}: {width}x{height} is too small; each side must be at least {MIN_SIDE} px")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise InputError(f"{name}: {width}x{height} is too large; {image_limit_text()}")


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return _array_to_rgb(np.asarray(image), name)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _flatten_alpha(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB"))


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"{name}: expected an H x W (x 3 or 4) image array, got shape {tuple(array.shape)}")
    array = _to_uint8(array, name)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        array = _flatten_alpha(array)
    return array


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype in (np.uint16, np.int32, np.int64, np.uint32):
        if array.min() < 0 or array.max() > 65535:
            raise InputError(f"{name}: integer pixel values must lie in 0..65535")
        # 16-bit data scaled to 8 bits; an int image that only uses 0..255 is already 8-bit data
        scale = 257.0 if array.max() > 255 else 1.0
        return np.round(array / scale).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise InputError(f"{name}: float pixel values must be finite and lie in 0..1")
        return np.round(array * 255.0).astype(np.uint8)
    raise InputError(f"{name}: unsupported pixel type {array.dtype}")


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite on white: transparent regions of cut-outs and logos read as background, not black."""
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)
