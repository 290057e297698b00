"""Cheap latent preview: a fixed 16 -> 3 linear map from HunyuanVideo latents to RGB.

The factors are the public HunyuanVideo latent-to-RGB approximation (also used by ComfyUI);
they cost one small matmul per step, so previews can be shown at every step.
"""

from __future__ import annotations

import numpy as np
import torch

from framepack.request.events import Preview

LATENT_RGB_FACTORS = (
    (-0.0395, -0.0331, 0.0445), (0.0696, 0.0795, 0.0518), (0.0135, -0.0945, -0.0282),
    (0.0108, -0.0250, -0.0765), (-0.0209, 0.0032, 0.0224), (-0.0804, -0.0254, -0.0639),
    (-0.0991, 0.0271, -0.0669), (-0.0646, -0.0422, -0.0400), (-0.0696, -0.0595, -0.0894),
    (-0.0799, -0.0208, -0.0375), (0.1166, 0.1627, 0.0962), (0.1165, 0.0432, 0.0407),
    (-0.2315, -0.1920, -0.1355), (-0.0270, 0.0401, -0.0821), (-0.0616, -0.0997, -0.0727),
    (0.0249, -0.0469, -0.1703),
)
LATENT_RGB_BIAS = (0.0259, -0.0192, -0.0761)


def latent_to_rgb(latents: torch.Tensor) -> torch.Tensor:
    """[B, 16, T, h, w] latents -> [B, 3, T, h, w] approximate pixels in [-1, 1]."""
    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latents.device)
    bias = torch.tensor(LATENT_RGB_BIAS, dtype=torch.float32, device=latents.device)
    if latents.shape[1] != factors.shape[0]:
        raise ValueError(f"latent preview needs {factors.shape[0]} latent channels, got {latents.shape[1]}")
    rgb = torch.einsum("bcthw,cr->brthw", latents.float(), factors) + bias.view(1, 3, 1, 1, 1)
    return rgb.clamp(-1.0, 1.0)


def preview_strip(latents: torch.Tensor) -> torch.Tensor:
    """One wide RGB uint8 strip [h, T*w, 3] of every latent frame side by side, on the latents' device."""
    rgb = latent_to_rgb(latents[:1])[0]  # [3, T, h, w]
    strip = rgb.permute(2, 1, 3, 0).reshape(rgb.shape[2], -1, 3)  # h, T*w, 3
    return ((strip + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).contiguous()


def preview_image(latents: torch.Tensor) -> np.ndarray:
    """The preview strip as a host array (one copy, which waits for the device)."""
    return preview_strip(latents).cpu().numpy()


class PreviewStream:
    """Per-step previews without a host sync per step.

    The preview strip is made on the device; on CUDA it is copied to pinned host memory without
    blocking and handed out (as a `Preview` event) once the copy has finished, at a later step or
    at `flush` (the end of the section). Only the newest preview waits: an older one still in
    flight when a newer one is made is dropped, as a viewer would only see it replaced. On the CPU
    the copy is the array itself and each preview goes out at once.
    """

    def __init__(self, emit, strip=None):
        self.emit = emit
        self.strip = strip or preview_strip  # latents -> uint8 [H, W, 3] on the device (`tiny_vae_strip` too)
        self.pending: tuple | None = None  # (host tensor, event, section number, step)

    def push(self, latents: torch.Tensor, section_number: int, step: int) -> None:
        strip = self.strip(latents)
        if strip.device.type != "cuda":
            self.emit(Preview(strip.numpy(), section_number, step))
            return
        self.poll()
        host = torch.empty(strip.shape, dtype=strip.dtype, pin_memory=True)
        host.copy_(strip, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending = (host, event, section_number, step)

    def poll(self) -> None:
        """Hand out the pending preview if its copy has finished."""
        if self.pending is not None and self.pending[1].query():
            self._emit_pending()

    def flush(self) -> None:
        """Wait for the pending copy and hand it out (one sync per section)."""
        if self.pending is not None:
            self.pending[1].synchronize()
            self._emit_pending()

    def _emit_pending(self) -> None:
        host, _, section_number, step = self.pending
        self.pending = None
        self.emit(Preview(host.numpy(), section_number, step))


PREVIEW_MAX_WIDTH = 2048
"""Widest Tiny-VAE preview strip (pixels): a long section's frames are shown smaller, not cut."""


def tiny_vae_strip(latents: torch.Tensor, tiny_vae) -> torch.Tensor:
    """The section decoded by the Tiny VAE: one frame per latent frame, side by side, uint8 on the device.

    Sharper than `preview_strip` (real pixels at 8x the latent size) and still cheap; the strip is
    scaled down to at most `PREVIEW_MAX_WIDTH` pixels wide.
    """
    picked = tiny_vae.decode(latents[:1], time_upscale=False)[0].float()  # [3, T, H, W] in [-1, 1]
    frames, height, width = picked.shape[1], picked.shape[2], picked.shape[3]
    scale = min(1.0, PREVIEW_MAX_WIDTH / float(frames * width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        picked = torch.nn.functional.interpolate(picked.transpose(0, 1), size=size, mode="area").transpose(0, 1)
    strip = picked.permute(2, 1, 3, 0).reshape(picked.shape[2], -1, 3)  # H, T*W, 3
    return ((strip + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).contiguous()


def tiny_vae_preview(latents: torch.Tensor, tiny_vae) -> np.ndarray:
    """`tiny_vae_strip` as a host array."""
    return tiny_vae_strip(latents, tiny_vae).cpu().numpy()
