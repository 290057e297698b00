"""SD.Next's own media tools used by FramePack inside SD.Next: RIFE, upscalers, prompt enhancer,
and "send to Process" for the finished video.

Every `modules.*` import is inside a function (the package imports without SD.Next). The job
layer never imports this module: `SdnextHost.host_upscaler` / `.host_interpolator` hand these
objects to it through the Host protocol, for the output options' ``sdnext:<name>`` choices
(`framepack.request.limits.HOST_MODEL_PREFIX`).

Names used (checked against the vendored snapshot by tests/test_host_sdnext_media.py):

- RIFE: `modules.processing_video.apply_video_interpolation(p, frames, count, scale, pad, change)`;
  for a uint8 numpy batch [N, H, W, 3] it returns N * (count + 1) frames: before each frame,
  `count` in-betweens from the previous frame (the first frame is paired with itself). It logs
  and returns its input unchanged when RIFE fails (no model file offline, ...), so the length
  is checked here.
- upscalers: `modules.shared.sd_upscalers` (`UpscalerData` with `.name`, `.scaler`), the
  scaler's `do_upscale(image, name)` at `scaler.scale`. Not `scaler.upscale()`: that one runs
  `shared.state.begin()/end()` per image, which would clear the job's Stop request and reset
  the progress bar on every frame.
- prompt enhancer: `modules.ui_video_vlm.enhance_prompt(enable, model, image, prompt,
  system_prompt, nsfw)` (the VLM enhancer of SD.Next's Video tab) and its `models` list.
- Process tab: the `extras_video` input of the Process -> Process Video sub-tab (SD.Next's
  Process tab takes videos), found with `script_callbacks.on_after_component`; the page's
  `switch_to_extras()` switches tabs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from framepack.errors import FramePackError, InputError
from framepack.request.limits import HOST_MODEL_PREFIX

log = logging.getLogger("framepack.host")

RIFE_NAME = "RIFE"
"""``sdnext:RIFE``: SD.Next's RIFE (Practical-RIFE, its own model file in models/RIFE)."""


def host_name(value: str | None) -> str | None:
    """``sdnext:NAME`` -> ``NAME``; anything else -> None."""
    if isinstance(value, str) and value.startswith(HOST_MODEL_PREFIX):
        return value[len(HOST_MODEL_PREFIX):].strip()
    return None


class SdnextMedia:
    """The host methods of these tools (a mixin of `SdnextHost`, which brings `gpu_lock`)."""

    def host_upscaler(self, name: str, factor: float) -> "HostUpscaler":
        return HostUpscaler(_required_name(name, "upscaler"), factor)

    def host_interpolator(self, name: str) -> "HostRife":
        if (host_name(name) or "").lower() != RIFE_NAME.lower():
            raise InputError(f"SD.Next's interpolator is {HOST_MODEL_PREFIX}{RIFE_NAME}, not {name!r}",
                             ("output", "interpolation_model"))
        return HostRife()

    def host_upscaler_names(self) -> list[str]:
        """Choices for a tab: ``sdnext:<name>`` of each of SD.Next's frame upscalers."""
        return [f"{HOST_MODEL_PREFIX}{name}" for name in upscaler_names()]

    def enhancer_models(self) -> list[str]:
        return enhancer_models()

    def enhance_prompt(self, prompt: str, image: Any = None, model: str | None = None, system_prompt: str = "",
                       nsfw: bool = True) -> str:
        """SD.Next's prompt enhancer (the tab's button), under the GPU lock: waits for a running job."""
        with self.gpu_lock():
            return enhance_prompt(prompt, image, model, system_prompt, nsfw)

    def bind_send_to_process(self, button: Any, video: Any) -> bool:
        return bind_send_to_process(button, video)


def _required_name(value: str, field: str) -> str:
    name = host_name(value)
    if not name:
        raise InputError(f"{value!r} is not an SD.Next tool name ({HOST_MODEL_PREFIX}NAME)", ("output", field))
    return name


# ------------------------------------------------------------------------------------------ RIFE

class HostRife:
    """SD.Next's RIFE as an interpolator of `framepack.io.interpolate.InterpolatingSink`.

    Batches go to the host whole (one call per section, not per frame pair); the previous
    batch's last frame leads each call so the gap between batches is filled too, and the frames
    the host made for it are dropped. The original frames are put back exactly (the host's
    float round trip may change them by one level).
    """

    name = f"{HOST_MODEL_PREFIX}{RIFE_NAME}"

    def interpolate_batch(self, previous: np.ndarray | None, frames: np.ndarray, k: int) -> np.ndarray:
        """`frames` with k in-betweens before each (also before the first, from `previous`)."""
        from modules.processing_video import apply_video_interpolation

        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        stack = frames if previous is None else np.concatenate([previous[None].astype(np.uint8), frames])
        if k == 0 or len(stack) < 2:
            return frames
        out = apply_video_interpolation(None, stack, count=k)
        if not isinstance(out, np.ndarray) or out.shape[0] != len(stack) * (k + 1) or out.shape[1:] != stack.shape[1:]:
            raise FramePackError("SD.Next's RIFE interpolation failed (its log says why; it needs its RIFE model "
                                 "in models/RIFE, downloaded on first use)")
        out = np.array(out[(k + 1 if previous is not None else k):], dtype=np.uint8)  # the lead frame's share
        out[(0 if previous is None else k)::k + 1] = frames  # originals exactly as generated
        return out

    def between(self, a: np.ndarray, b: np.ndarray, k: int) -> list[np.ndarray]:
        """k frames between a and b (for callers that interpolate pair by pair)."""
        return list(self.interpolate_batch(a, b[None], k)[:k])


# -------------------------------------------------------------------------------------- upscalers

def _same_name(a: str, b: str) -> bool:  # SD.Next matches upscaler names this way
    return a.lower().replace("-", " ") == b.lower().replace("-", " ")


def upscaler_names() -> list[str]:
    """SD.Next's upscalers usable on frames (not "None", not the latent ones)."""
    from modules import shared

    return [u.name for u in getattr(shared, "sd_upscalers", []) if _usable(u.name)]


def _usable(name: str) -> bool:
    return bool(name) and name != "None" and not name.lower().startswith("latent")


class HostUpscaler:
    """Frames [n, H, W, 3] uint8 -> upscaled by `factor` with one of SD.Next's upscalers.

    The model runs at its native scale (repeated, at most 3 times, while the frame is still
    smaller than asked, as SD.Next does), then Lanczos fits the exact even output size, the same
    for every frame. Frames go one at a time: memory stays flat.
    """

    def __init__(self, name: str, factor: float):
        from modules import shared

        matches = [u for u in getattr(shared, "sd_upscalers", []) if _usable(u.name) and _same_name(u.name, name)]
        if not matches:
            known = ", ".join(upscaler_names()[:12]) or "none installed"
            raise InputError(f"SD.Next has no upscaler {name!r} (known: {known})", ("output", "upscaler"))
        self.data, self.factor = matches[0], float(factor)
        self.name = f"{HOST_MODEL_PREFIX}{self.data.name}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from framepack.io.upscale import lanczos_resize, scaled_size

        size = scaled_size(frames.shape[1], frames.shape[2], self.factor)
        return np.stack([lanczos_resize(self._upscale(frame, size), size) for frame in frames])

    def _upscale(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        scaler = self.data.scaler
        scaler.scale = self.factor  # what scaler.upscale() would set; the "Resize ..." upscalers read it
        image = Image.fromarray(np.ascontiguousarray(frame))
        for _ in range(3):
            before = image.size
            image = scaler.do_upscale(image, self.data.name)
            if image.size == before:
                if before == (frame.shape[1], frame.shape[0]):
                    raise FramePackError(f"SD.Next's upscaler {self.data.name!r} did not upscale the frame "
                                         "(its log says why)")
                break
            if image.width >= size[1] and image.height >= size[0]:
                break
        return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------ prompt enhancer

def enhancer_models() -> list[str]:
    """The VLMs SD.Next's Video-tab enhancer offers ([] when this SD.Next has none)."""
    try:
        from modules import ui_video_vlm
    except ImportError:
        return []
    return list(getattr(ui_video_vlm, "models", []))


def enhance_prompt(prompt: str, image: Any = None, model: str | None = None, system_prompt: str = "",
                   nsfw: bool = True) -> str:
    """SD.Next's prompt enhancer: a VLM rewrites `prompt` (looking at `image`, the start frame).

    Raises `FramePackError` when this SD.Next has no enhancer or it gives no answer. The caller
    holds the GPU lock (the VLM runs on the GPU).
    """
    try:
        from modules import ui_video_vlm
    except ImportError:
        raise FramePackError("this SD.Next has no prompt enhancer (modules.ui_video_vlm)") from None
    if model is not None and model not in getattr(ui_video_vlm, "models", [model]):
        raise InputError(f"unknown prompt enhancer model {model!r}; choose one of: "
                         f"{', '.join(ui_video_vlm.models)}", ("model",))
    from PIL import Image

    if image is not None and not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    answer = ui_video_vlm.enhance_prompt(enable=True, model=model, image=image, prompt=prompt or "",
                                         system_prompt=system_prompt or "", nsfw=bool(nsfw))
    if not isinstance(answer, str) or not answer.strip():
        raise FramePackError("SD.Next's prompt enhancer gave no answer (its log says why)")
    return answer.strip()


# ---------------------------------------------------------------------------- send to Process

PROCESS_VIDEO_ELEM_ID = "extras_video"
_process_video: dict[str, Any] = {}

SEND_TO_PROCESS_JS = """(...args) => {
  if (typeof switch_to_extras === 'function') switch_to_extras();
  const panel = document.getElementById('extras_process_video_tab');
  const nav = panel && panel.parentElement ? panel.parentElement.querySelector('.tab-nav') : null;
  const button = nav ? Array.from(nav.querySelectorAll('button')).find((b) => b.textContent.trim() === 'Process Video') : null;
  if (button) button.click();
  return args;
}"""
"""Page side of "send to Process": SD.Next's `switch_to_extras()` opens the Process tab, then
its Process Video sub-tab is selected (that select event sets the tab's mode to video)."""


def remember_process_video(component: Any, **kwargs: Any) -> None:
    """`on_after_component` callback: keep the Process tab's video input when SD.Next builds it."""
    if (kwargs.get("elem_id") or getattr(component, "elem_id", None)) == PROCESS_VIDEO_ELEM_ID:
        _process_video["component"] = component


def process_video_input() -> Any:
    """The Process tab's video input (None before SD.Next built it, or in an SD.Next without one)."""
    return _process_video.get("component")


def bind_send_to_process(button: Any, video: Any) -> bool:
    """Wire `button` (our tab) to put the finished `video` into SD.Next's Process -> Process Video.

    Returns False (and wires nothing) when the host's Process tab has no video input.
    """
    target = process_video_input()
    if target is None:
        return False
    button.click(fn=_video_path, inputs=[video], outputs=[target], _js=SEND_TO_PROCESS_JS)
    return True


def _video_path(value: Any) -> Any:
    """Gradio 3's Video value as the Process tab's input expects it (a file path)."""
    if isinstance(value, dict):
        value = value.get("name") or value.get("video")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value
