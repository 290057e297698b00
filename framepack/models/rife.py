"""RIFE frame interpolation (the IFNet of Practical-RIFE 4.2x), our own module for its weights.

Architecture facts (published with Practical-RIFE, MIT): a small feature head (`encode`: three
3x3 convs to 16 channels, a transposed conv to 4) and five `IFBlock`s working coarse to fine at
scales 16, 8, 4, 2, 1. Each block sees the two frames (warped by the flow so far), their warped
features, the time t, the mask and the previous block's 8 feature channels, and predicts a flow
correction (4 channels: to frame 0 and to frame 1), a mask and new features (13 = 4 + 1 + 8,
through a transposed conv and a pixel shuffle). The frame at t is the two frames warped along
the final flow, mixed by sigmoid(mask). Widths are read from the weights, so the 4.2x files with
this layout load; spandrel does not load RIFE. Only `.safetensors` weights are read.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from framepack.errors import ModelError

FEATURES = 4   # channels of the head's features per frame
BLOCK_FEATURES = 8  # feature channels a block hands to the next
FIRST_INPUTS = 3 + 3 + 2 * FEATURES + 1  # both frames, both features, t
LATER_INPUTS = 3 + 3 + 2 * FEATURES + 1 + 1 + BLOCK_FEATURES + 4  # ... + mask, block features, flow
PAD = 64  # the coarsest scale (16) times the blocks' own stride 4


def _conv(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1), nn.LeakyReLU(0.2, True))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, FEATURES, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.cnn0, self.cnn1, self.cnn2):
            x = F.leaky_relu(layer(x), 0.2)
        return self.cnn3(x)


class ResConv(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class IFBlock(nn.Module):
    def __init__(self, inputs: int, width: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(inputs, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*(ResConv(width) for _ in range(8)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * (4 + 1 + BLOCK_FEATURES), 4, 2, 1),
                                      nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear")
        if flow is not None:
            x = torch.cat((x, F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear") / scale), 1)
        out = F.interpolate(self.lastconv(self.convblock(self.conv0(x))), scale_factor=scale, mode="bilinear")
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class IFNet(nn.Module):
    """Frame at time t in (0, 1) between two frames [B, 3, H, W] in [0, 1] (H, W multiples of 64)."""

    def __init__(self, widths: tuple[int, ...] = (192, 128, 96, 64, 32)):
        super().__init__()
        self.widths = tuple(widths)
        for index, width in enumerate(widths):
            self.add_module(f"block{index}", IFBlock(FIRST_INPUTS if index == 0 else LATER_INPUTS, width))
        self.encode = Head()
        self.scales = tuple(2.0 ** (len(widths) - 1 - index) for index in range(len(widths)))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: float) -> torch.Tensor:
        img0, img1 = img0.clamp(0, 1), img1.clamp(0, 1)
        f0, f1 = self.encode(img0), self.encode(img1)
        time = torch.full_like(img0[:, :1], float(t))
        warped0, warped1, flow, mask, feat = img0, img1, None, None, None
        for index, scale in enumerate(self.scales):
            block = getattr(self, f"block{index}")
            if flow is None:
                flow, mask, feat = block(torch.cat((img0, img1, f0, f1, time), 1), None, scale)
            else:
                inputs = (warped0, warped1, warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4]), time, mask, feat)
                correction, mask, feat = block(torch.cat(inputs, 1), flow, scale)
                flow = flow + correction
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at each pixel moved by `flow` (pixels; x then y), borders repeated."""
    _, _, height, width = image.shape
    ys = torch.linspace(-1.0, 1.0, height, device=image.device)
    xs = torch.linspace(-1.0, 1.0, width, device=image.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]  # [1, H, W, 2] as (x, y)
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=image.device)
    moved = grid + flow.float().permute(0, 2, 3, 1) * scale
    return F.grid_sample(image.float(), moved, mode="bilinear", padding_mode="border", align_corners=True)


class Rife:
    """An `IFNet` on a device: k frames between two uint8 RGB frames."""

    def __init__(self, net: IFNet, device: Any = "cpu"):
        self.net, self.device = net.eval().to(device), torch.device(device)

    @torch.inference_mode()
    def between(self, a, b, k: int) -> list:
        import numpy as np

        height, width = a.shape[:2]
        pad_h, pad_w = -height % PAD, -width % PAD
        tensors = [F.pad(torch.from_numpy(np.array(frame)).to(self.device).permute(2, 0, 1)[None]
                         .float() / 255.0, (0, pad_w, 0, pad_h), mode="replicate") for frame in (a, b)]
        frames = []
        for j in range(1, k + 1):
            out = self.net(*tensors, j / (k + 1))[0, :, :height, :width]
            frames.append((out.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
        return frames


def load_rife(path: str | os.PathLike, device: Any = "cpu") -> Rife:
    """A RIFE IFNet from a `.safetensors` file (`module.` prefixes of DDP checkpoints are dropped)."""
    from safetensors.torch import load_file

    from framepack.models.upscalers import check_model_file

    file = check_model_file(path, "RIFE")
    try:
        state = {key.removeprefix("module."): value for key, value in load_file(str(file)).items()}
    except Exception as error:  # noqa: BLE001 - a broken file: one line naming it
        raise ModelError(f"RIFE model {file.name} cannot be read: {error}") from None
    widths = []
    while f"block{len(widths)}.conv0.1.0.weight" in state:
        widths.append(int(state[f"block{len(widths)}.conv0.1.0.weight"].shape[0]))
    if not widths or "encode.cnn0.weight" not in state:
        raise ModelError(f"RIFE model {file.name}: not a RIFE 4.2x IFNet (no block0 / encode weights)")
    net = IFNet(tuple(widths))
    try:
        net.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise ModelError(f"RIFE model {file.name} does not fit the RIFE 4.2x IFNet: {first[0].strip()}") from None
    return Rife(net, device)
