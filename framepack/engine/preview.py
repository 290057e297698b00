"""Cheap latent preview: a fixed 16 -> 3 linear map from HunyuanVideo latents to RGB.

The factors are the public HunyuanVideo latent-to-RGB approximation (also used by ComfyUI);
they cost one small matmul per step, so previews can be shown at every step.
"""

from __future__ import annotations

import numpy as np
import torch

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


def preview_image(latents: torch.Tensor) -> np.ndarray:
    """One wide RGB uint8 strip showing every latent frame of the section side by side."""
    rgb = latent_to_rgb(latents[:1])[0]  # [3, T, h, w]
    strip = rgb.permute(2, 1, 3, 0).reshape(rgb.shape[2], -1, 3)  # h, T*w, 3
    return ((strip + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


PREVIEW_MAX_WIDTH = 2048
"""Widest Tiny-VAE preview strip (pixels): a long section's frames are shown smaller, not cut."""


def tiny_vae_preview(latents: torch.Tensor, tiny_vae) -> np.ndarray:
    """The section decoded by the Tiny VAE: one frame per latent frame, side by side, as RGB uint8.

    Sharper than `preview_image` (real pixels at 8x the latent size) and still cheap; the strip is
    scaled down to at most `PREVIEW_MAX_WIDTH` pixels wide.
    """
    picked = tiny_vae.decode(latents[:1], time_upscale=False)[0].float()  # [3, T, H, W] in [-1, 1]
    frames, height, width = picked.shape[1], picked.shape[2], picked.shape[3]
    scale = min(1.0, PREVIEW_MAX_WIDTH / float(frames * width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        picked = torch.nn.functional.interpolate(picked.transpose(0, 1), size=size, mode="area").transpose(0, 1)
    strip = picked.permute(2, 1, 3, 0).reshape(picked.shape[2], -1, 3)  # H, T*W, 3
    return ((strip + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
