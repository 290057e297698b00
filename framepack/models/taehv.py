"""Tiny VAE for HunyuanVideo latents (TAEHV, madebyollin): fast decode and sharp live previews.

A small convolutional decoder that turns the sampler's 16-channel HunyuanVideo latents into
frames, ~100x cheaper than the full VAE and good enough for previews (and, when a user asks for
it, for the final video). Written here from the published architecture facts:

- the decoder is one `nn.Sequential`: a soft clamp (tanh(x/3)*3), a 3x3 conv 16 -> 256, then three
  stages of three `MemBlock`s, each stage followed by a 2x nearest upsample in space, a `TGrow`
  (1x, 2x, 2x in time) and a 3x3 conv to the next width (256 -> 128 -> 64 -> 64), and finally
  ReLU and a 3x3 conv to RGB in [0, 1];
- a `MemBlock` sees its input frame and the previous frame's input (zeros before the first),
  concatenated on channels: conv-ReLU-conv-ReLU-conv plus a 1x1 skip, then ReLU;
- a `TGrow` is a 1x1 conv making `stride` times the channels, read as `stride` frames in order;
- the first 2**2 - 1 = 3 output frames are dropped, so T latent frames give 4*(T-1)+1 frames,
  exactly what HunyuanVideo's own VAE makes;
- it decodes the sampler's latents as they are (no division by the VAE's scaling factor).

Weights come from a `.safetensors` file named `taehv*.safetensors` (made for HunyuanVideo) or
`taew*.safetensors` (the same architecture trained for Wan 2.1's latent space: it loads, but its
colours are off on FramePack latents, so a warning says so). The key names are the reference
file's (`decoder.<index>.conv.<n>.weight`, ...), so the published weights load as they are; the
encoder half of such files is not needed and ignored.

Decoding streams over time: the latents go through the network a few frames at a time and every
`MemBlock` carries only its last input frame to the next chunk, so memory stays flat however
many latent frames a section has, and the result equals a one-shot decode.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framepack.errors import ModelError

log = logging.getLogger("framepack.models")

LATENT_CHANNELS = 16
WIDTHS = (256, 128, 64, 64)
TIME_STRIDES = (1, 2, 2)
FRAMES_TO_TRIM = 2 ** sum(s == 2 for s in TIME_STRIDES) - 1  # 3
FILE_PREFIXES = ("taehv", "taew")
FOLDER_NAME = "tiny_vae"
"""Subfolder of a local / hub FramePack folder holding the Tiny VAE file (the recipe layout)."""


def _conv3(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class SoftClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3.0) * 3.0


class MemBlock(nn.Module):
    """Residual block that also sees the previous frame's input."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv3(n_in * 2, n_out), nn.ReLU(), _conv3(n_out, n_out), nn.ReLU(),
                                  _conv3(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """One frame in, `stride` frames out (channels -> time)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, C, H, W] -> [T * stride, C, H, W]
        frames, channels = x.shape[0], x.shape[1]
        return self.conv(x).reshape(frames * self.stride, channels, *x.shape[2:])


def build_decoder() -> nn.Sequential:
    layers: list[nn.Module] = [SoftClamp(), _conv3(LATENT_CHANNELS, WIDTHS[0]), nn.ReLU()]
    for stage, stride in enumerate(TIME_STRIDES):
        width, after = WIDTHS[stage], WIDTHS[stage + 1]
        layers += [MemBlock(width, width) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), TGrow(width, stride), _conv3(width, after, bias=False)]
    layers += [nn.ReLU(), _conv3(WIDTHS[-1], 3)]
    return nn.Sequential(*layers)


class TinyVideoDecoder(nn.Module):
    """The TAEHV decoder: `decode(latents [B, 16, T, h, w]) -> pixels [B, 3, 4T-3, 8h, 8w]` in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = build_decoder()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def output_frames(self, latent_frames: int) -> int:
        return max(0, latent_frames * 4 - FRAMES_TO_TRIM)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int = 4, time_upscale: bool = True) -> torch.Tensor:
        """Latents as the sampler holds them -> pixels in [-1, 1], `chunk` latent frames at a time.

        `time_upscale` False: one frame per latent frame ([B, 3, T, 8h, 8w]), about 4x cheaper, for
        previews: each `TGrow` keeps only its last time step's channels, as TAEHV's own cheap
        preview mode does.
        """
        if latents.ndim != 5 or latents.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"the Tiny VAE decodes [B, {LATENT_CHANNELS}, T, h, w] latents, got "
                             f"{tuple(latents.shape)}")
        latents = latents.to(device=self.device, dtype=self.dtype)
        return torch.stack([self._decode_one(video, max(1, int(chunk)), time_upscale) for video in latents])

    def _decode_one(self, video: torch.Tensor, chunk: int, time_upscale: bool) -> torch.Tensor:
        frames = video.transpose(0, 1)  # [T, 16, h, w]
        memory: dict[int, torch.Tensor] = {}
        outputs = [self._run(frames[start:start + chunk], memory, time_upscale)
                   for start in range(0, len(frames), chunk)]
        pixels = torch.cat(outputs)[FRAMES_TO_TRIM if time_upscale else 0:]  # [4T-3 (or T), 3, H, W]
        return (pixels.clamp(0.0, 1.0) * 2.0 - 1.0).transpose(0, 1)

    def _run(self, x: torch.Tensor, memory: dict[int, torch.Tensor], time_upscale: bool = True) -> torch.Tensor:
        for index, layer in enumerate(self.decoder):
            if isinstance(layer, MemBlock):
                previous = memory.get(index, torch.zeros_like(x[:1]))
                past = torch.cat([previous, x[:-1]])
                memory[index] = x[-1:]
                x = layer(x, past)
            elif isinstance(layer, TGrow) and not time_upscale and layer.stride > 1:
                x = nn.functional.conv2d(x, layer.conv.weight[-x.shape[1]:])
            else:
                x = layer(x)
        return x


# ------------------------------------------------------------------------------------------ files

def find_weights(path: str | os.PathLike) -> Path:
    """The Tiny VAE file at `path`: the file itself, or the one `taehv*` / `taew*` file in a folder."""
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ModelError(f"tiny_vae: {path.name} is not a .safetensors file")
        return path
    if not path.is_dir():
        raise ModelError(f"tiny_vae: {path} does not exist")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".safetensors"
                   and p.name.lower().startswith(FILE_PREFIXES))
    hunyuan = [p for p in found if p.name.lower().startswith("taehv")]
    if hunyuan:
        return hunyuan[0]
    if found:
        return found[0]
    raise ModelError(f"tiny_vae: {path} holds no taehv*.safetensors (or taew*.safetensors) file")


def load_tiny_vae(path: str | os.PathLike, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> TinyVideoDecoder:
    """A `TinyVideoDecoder` with the weights of a TAEHV `.safetensors` file (or its folder)."""
    from safetensors.torch import load_file

    file = find_weights(path)
    try:
        tensors = load_file(str(file))
    except Exception as error:  # safetensors' own error type differs between versions
        raise ModelError(f"tiny_vae: cannot read {file.name} ({error})") from None
    weights = {key: value for key, value in tensors.items() if key.startswith("decoder.")}
    model = TinyVideoDecoder()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    wrong = [key for key in expected if key in weights and weights[key].shape != expected[key].shape]
    if missing or wrong:
        first = (missing or wrong)[0]
        raise ModelError(
            f"tiny_vae: {file.name} is not a TAEHV decoder for 16-channel HunyuanVideo latents "
            f"({len(missing)} weights missing, {len(wrong)} of another shape, e.g. {first!r})")
    model.load_state_dict(weights, strict=False)  # extra keys (encoder, ...) are not ours
    if file.name.lower().startswith("taew"):
        log.warning("Tiny VAE %s was trained for Wan 2.1 latents; FramePack makes HunyuanVideo latents, so its "
                    "colours will be off (use taehv.safetensors)", file.name)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def resolve_source(source, cache_dir: str | None = None, offline: bool = False) -> Path:
    """A recipe's `tiny_vae` `ComponentSource` -> a file or folder on this machine."""
    if source.is_local():
        return source.path()
    from huggingface_hub import snapshot_download

    patterns = [f"{prefix}*.safetensors" for prefix in FILE_PREFIXES]
    if source.subfolder:
        patterns = [f"{source.subfolder}/{pattern}" for pattern in patterns]
    try:
        folder = snapshot_download(source.source, allow_patterns=patterns, cache_dir=cache_dir,
                                   local_files_only=offline)
    except Exception as error:  # offline and not cached, no such repo, no connection
        raise ModelError(f"tiny_vae: could not get {source.describe()} ({str(error).splitlines()[0][:200]})") from None
    return Path(folder) / source.subfolder if source.subfolder else Path(folder)


def attach_tiny_vae(pipe, recipe, device: Any = "cpu", dtype: torch.dtype = torch.float32, **hub) -> None:
    """Load the recipe's Tiny VAE (if it names one) onto `pipe.tiny_vae`; None otherwise."""
    source = recipe.get("tiny_vae") if hasattr(recipe, "get") else None
    pipe.tiny_vae = None if source is None else load_tiny_vae(resolve_source(source, **hub), device, dtype)


def save_random_tiny_vae(path: str | os.PathLike, seed: int = 0) -> Path:
    """A randomly initialised TAEHV decoder saved with the reference key names (for tests)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = TinyVideoDecoder()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return path
