"""Everything the transformer is conditioned on: bucketed pixels, text, SigLIP and VAE latents.

Encoders are the pipeline's own (diffusers' `HunyuanVideoFramepackPipeline` methods); what is
FramePack-specific lives here: the 640 buckets scaled to any resolution, the Llama template with
a configurable system prompt and a crop computed from the real tokenizer, and strengths that are
true weighted averages (the anchor extension's blends had operator-precedence bugs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# Height x width buckets of the reference at resolution 640 (nearest aspect ratio wins).
BUCKETS_640 = (
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
)
TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
)
CLIP_MAX_TOKENS = 77


def pick_bucket(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Nearest-aspect 640 bucket, scaled to `resolution` and kept on the 16 px grid."""
    bucket_h, bucket_w = min(BUCKETS_640, key=lambda hw: abs(height * hw[1] - width * hw[0]))
    scale = resolution / 640.0
    return max(16, round(bucket_h * scale / 16) * 16), max(16, round(bucket_w * scale / 16) * 16)


def resize_and_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to cover the target, then centre-crop: no stretching, no borders."""
    src_h, src_w = image.shape[:2]
    scale = max(width / src_w, height / src_h)
    new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.LANCZOS))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


def blank_image(kind: str, height: int, width: int, seed: int) -> np.ndarray:
    """Start frame for text-to-video: black, white or seeded noise."""
    if kind == "black":
        return np.zeros((height, width, 3), np.uint8)
    if kind == "white":
        return np.full((height, width, 3), 255, np.uint8)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def to_model_pixels(image: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H, W] float in [-1, 1], the range both encoders expect."""
    tensor = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
    return (tensor / 127.5 - 1.0).unsqueeze(0)


def frames_to_pixels(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [1, 3, T, H, W] float in [-1, 1] (the decoder's output range)."""
    tensor = torch.from_numpy(np.array(frames, dtype=np.float32)).permute(3, 0, 1, 2)
    return (tensor / 127.5 - 1.0).unsqueeze(0)


@dataclass
class TextEmbedding:
    embeds: torch.Tensor  # [1, L, D] Llama hidden states with the template cropped off
    mask: torch.Tensor  # [1, L]
    pooled: torch.Tensor  # [1, D2] CLIP pooled output


def template_for(system_prompt: str) -> str:
    """The chat template as a `str.format` pattern with one `{}` for the prompt (diffusers' convention)."""
    escaped = system_prompt.replace("{", "{{").replace("}", "}}")
    return TEMPLATE.replace("{system}", escaped).replace("{prompt}", "{}")


def template_crop_start(tokenizer, system_prompt: str) -> int:
    """Number of tokens the template puts before the user's words, measured with the real tokenizer.

    Tokenizing the prefix alone can merge differently at its end, so the crop is the common
    prefix of the tokenized template with two different probe prompts.
    """
    template = template_for(system_prompt)
    first = tokenizer(template.format("a"), add_special_tokens=True)["input_ids"]
    second = tokenizer(template.format("zz"), add_special_tokens=True)["input_ids"]
    common = 0
    for left, right in zip(first, second):
        if left != right:
            break
        common += 1
    return common


def encode_text(pipe, prompt: str, system_prompt: str, max_tokens: int, device) -> TextEmbedding:
    template = {"template": template_for(system_prompt), "crop_start": template_crop_start(pipe.tokenizer, system_prompt)}
    embeds, mask = pipe._get_llama_prompt_embeds(
        prompt, template, device=device, dtype=pipe.transformer.dtype, max_sequence_length=max_tokens
    )
    pooled = pipe._get_clip_prompt_embeds(prompt, device=device, dtype=pipe.transformer.dtype, max_sequence_length=CLIP_MAX_TOKENS)
    return TextEmbedding(embeds, mask.to(pipe.transformer.dtype), pooled.to(pipe.transformer.dtype))


def encode_vision(pipe, image: np.ndarray, device) -> torch.Tensor:
    """SigLIP last hidden state of one image, in the transformer's dtype."""
    return pipe.encode_image(to_model_pixels(image).to(device), device=device, dtype=pipe.transformer.dtype)


def encode_latent(pipe, image: np.ndarray, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE latent of one frame, [1, C, 1, h, w] float32.

    The posterior mean (deterministic) by default; a sample of the posterior drawn with
    ``generator`` when one is given (what the reference app does).
    """
    pixels = to_model_pixels(image).unsqueeze(2).to(device=device, dtype=pipe.vae.dtype)
    posterior = pipe.vae.encode(pixels).latent_dist
    latent = posterior.mode() if generator is None else posterior.sample(generator)
    return (latent * pipe.vae.config.scaling_factor).float()


def encode_video_latents(pipe, frames: np.ndarray, device) -> torch.Tensor:
    """VAE latents of a clip ([T, H, W, 3] uint8, T = 1 + 4k): [1, C, 1 + k, h, w] float32, posterior mean.

    The causal video VAE gives the first frame a latent of its own and every 4 frames after it one
    more, exactly as it does for the frames it decodes, so these latents continue a video in step.
    """
    pixels = frames_to_pixels(frames).to(device=device, dtype=pipe.vae.dtype)
    latent = pipe.vae.encode(pixels).latent_dist.mode()
    return (latent * pipe.vae.config.scaling_factor).float()


def weighted(anchor: torch.Tensor, base: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * anchor + (1 - weight) * base: weight 0 is exactly `base`, weight 1 exactly `anchor`."""
    return anchor * weight + base * (1.0 - weight)


@dataclass
class ImageConditioning:
    """Latents and SigLIP embeddings of the start, end and keyframe images, already bucketed."""

    height: int
    width: int
    start_latent: torch.Tensor
    start_embeds: torch.Tensor
    end_latent: torch.Tensor | None
    end_embeds: torch.Tensor | None
    keyframe_latents: list[torch.Tensor]
    keyframe_embeds: list[torch.Tensor]
    start_pixels: np.ndarray

    def image_embeds(self, keyframe: int | None, vision_strength: float) -> torch.Tensor:
        """Start embedding mixed with the end image (whole video) and the section's keyframe."""
        targets = [e for e in (self.end_embeds,) if e is not None]
        if keyframe is not None:
            targets.append(self.keyframe_embeds[keyframe])
        if not targets:
            return self.start_embeds
        target = torch.stack(targets).mean(dim=0)
        return weighted(target, self.start_embeds, vision_strength)
