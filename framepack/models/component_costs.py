"""What one call of each component costs on top of its weights: the bytes it keeps alive, its FLOPs.

Arithmetic on plain numbers and a component's config (`framepack.models.component_sizes` loads
them), with the run's shape they follow from: the bucket a resolution means, a transformer call's
tokens, the latent and pixel frames a section decodes. The resource planner
(`framepack.models.resources`) adds these working sets to the weights on the device at each stage.

**Working sets** (bytes alive at once on the device, on top of the weights):

- *Transformer, one call at the section's token count.* Image tokens are the window
  (lws x h/2 x w/2) plus the clean latents (start + post: 2 frames at patch 2), the 2x history
  (kernel 2x4x4) and the 4x history (kernel 4x8x8); context tokens are SigLIP's image tokens plus
  the prompt's (at most `max_prompt_tokens`; batch 1 drops padding). Inference keeps only one
  block's tensors. The largest is the single-stream block during attention: the residual, the norm
  output, q/k/v, the concatenated streams and the MLP hidden state (`(mlp_ratio + 7)` tensors of
  tokens x width) plus RoPE's float32 temporaries (3 of image tokens x width, in fp32). Attention
  itself is counted as a memory-efficient kernel (flash / mem-efficient SDPA, which CUDA uses for
  batch 1 without a mask): O(tokens), no tokens x tokens matrix. Checked against a live-tensor
  trace of a full-size block on the meta device (tests/test_resources.py): within 2%.
- *VAE decode of one section* (`2*lws` latents, +1 when the inverted order reaches the start).
  diffusers decodes in chunks of 5 latent frames (17 pixel frames; `use_framewise_decoding`, on by
  default); with tiling each chunk is further cut into 256 px tiles (stride 192). The peak is the
  upsampler at full resolution: about `VAE_DECODE_TENSORS` tensors of
  `block_out_channels[1]` x 17 x tile height x tile width (the padded input, the upsampled copy and
  the convolution output). That factor was calibrated by tracing live tensors of a VAE with the
  real channel ratios at 1/8 width, decoded for real on the CPU (`benchmarks/vae_memory.py`:
  4.54-4.59 at 64-192 px), and the full-size VAE traced on the meta device gives 4.53-4.55. The
  mid-block attention builds a causal mask of n x n (n = latent tokens of the chunk or tile): a
  bool and a float32 copy converted to the VAE dtype, `(1 + 4 + dtype)` bytes per element at the
  moment of conversion; the peak is the larger of the two. Decoded chunks and tiles are kept until
  they are blended (the loop's float32 copy of the section comes after the decode's working set is
  freed, and is smaller).
- Text encoding (Llama returns every layer's hidden states), SigLIP and the VAE encode of the
  start image are small next to those two and are estimated the same way.

Sampling FLOPs are counted exactly (`transformer_flops`, checked against torch's FlopCounterMode:
~0.52 PFLOP per step at 640 px).
"""

from __future__ import annotations

from typing import Any, Mapping

from framepack.errors import InputError

# 14 reference buckets at 640 (height, width); the same table as framepack.engine.conditioning
BUCKETS_640 = (
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
)
HISTORY_FRAMES = (1, 2, 16)  # clean 1x, 2x and 4x latent slots

# calibrated constants (see the module docstring)
VAE_DECODE_TENSORS = 4.55  # full-resolution tensors alive at the decode peak (traced, see above)
VAE_TILE_PX, VAE_TILE_STRIDE_PX = 256, 192  # diffusers' AutoencoderKLHunyuanVideo defaults
VAE_CHUNK_LATENT_FRAMES = 5  # framewise decoding: 16 // 4 + 1 latent frames per chunk


def bucket_for(resolution: int) -> tuple[int, int]:
    """The largest-area bucket at `resolution` (height, width): the worst case for any image."""
    if resolution < 16:
        raise InputError(f"resolution must be at least 16 px, got {resolution}")
    scale = resolution / 640.0
    shapes = {(max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16)) for h, w in BUCKETS_640}
    return max(sorted(shapes), key=lambda hw: hw[0] * hw[1])


def _padded(size: int, kernel: int) -> int:
    return -(-size // kernel) * kernel


def image_tokens(latent_h: int, latent_w: int, window: int, patch: int = 2) -> int:
    """Tokens of the window plus the clean 1x/2x/4x history for one transformer call."""
    per_frame = (latent_h // patch) * (latent_w // patch)
    clean = 2 * per_frame  # start latent + the 1x slot
    two = (_padded(HISTORY_FRAMES[1], 2) // 2) * (_padded(latent_h, 4) // 4) * (_padded(latent_w, 4) // 4)
    four = (_padded(HISTORY_FRAMES[2], 4) // 4) * (_padded(latent_h, 8) // 8) * (_padded(latent_w, 8) // 8)
    return window * per_frame + clean + two + four


def decoded_latent_frames(variant: str, window: int, sections: int = 2) -> int:
    """Most latent frames one section decodes (engine/context.py): the first section its window
    and the start latent; later ones two windows, +1 when the inverted order reaches the start."""
    if sections == 1:
        return window + 1
    return 2 * window + 1 if variant == "original" else 2 * window


def pixel_frames(latent_frames: int, temporal_ratio: int = 4) -> int:
    return (latent_frames - 1) * temporal_ratio + 1


# ----------------------------------------------------------------------------- working sets


def transformer_block_bytes(config: Mapping[str, Any], image: int, context: int, elem: int) -> dict[str, int]:
    """Peak bytes inside one block, its inputs excluded, at its three largest moments.

    r = mlp_ratio, T = image + context tokens, W = width, e = bytes per activation. Single-stream
    block during attention: (r + 7) tensors of T x W plus RoPE's three float32 temporaries of
    image x W; at its output projection: the (1 + r)-wide concat, the MLP state and the rest,
    (2r + 7) tensors. Dual-stream block in its MLP: (2r + 3) of image x W plus the context
    stream; during attention: 5 of image x W plus RoPE. Fitted to live-tensor traces of the
    full-size blocks on the meta device (bf16 and fp32, 4,000 and 18,000 image tokens).
    """
    width = config["num_attention_heads"] * config["attention_head_dim"]
    ratio = float(config.get("mlp_ratio", 4.0))
    tokens = image + context
    rope = 3 * image * width * 4
    single = max((ratio + 7) * tokens * width * elem + rope, (2 * ratio + 7) * tokens * width * elem)
    return {"single": int(single),
            "double_ff": int((2 * ratio + 3) * image * width * elem + 3 * context * width * elem),
            "double_attn": int(5 * image * width * elem + rope)}


def transformer_activation_bytes(config: Mapping[str, Any], image: int, context: int, elem: int,
                                 teacache_branches: int = 0) -> int:
    """Peak bytes alive during one transformer call on top of its weights (see the docstring)."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    tokens = image + context
    block = max(transformer_block_bytes(config, image, context, elem).values())
    outer = 2 * tokens * width * elem + 2 * image * config["attention_head_dim"] * 4  # streams, RoPE tables
    teacache = teacache_branches * 3 * image * width * elem  # cached residual, last input, block input
    return int(block + outer + teacache)


def vae_decode_bytes(config: Mapping[str, Any], latent_frames: int, latent_h: int, latent_w: int, elem: int,
                     tiled: bool) -> int:
    """Peak bytes of decoding `latent_frames` at latent size h x w (weights excluded)."""
    s, t = config.get("spatial_compression_ratio", 8), config.get("temporal_compression_ratio", 4)
    chunk = min(latent_frames, VAE_CHUNK_LATENT_FRAMES)
    tile_latent = VAE_TILE_PX // s
    tile_h = min(latent_h, tile_latent) if tiled else latent_h
    tile_w = min(latent_w, tile_latent) if tiled else latent_w
    channels = config["block_out_channels"][1 if len(config["block_out_channels"]) > 1 else 0]
    chunk_px = pixel_frames(chunk, t)
    conv = VAE_DECODE_TENSORS * channels * chunk_px * tile_h * s * tile_w * s * elem
    attention = 0
    if config.get("mid_block_add_attention", True):
        n = chunk * tile_h * tile_w
        attention = n * n * (1 + 4 + (elem if elem != 4 else 0)) + 4 * n * config["block_out_channels"][-1] * elem
    frames = pixel_frames(latent_frames, t)
    out_channels = config.get("out_channels", 3)
    outputs = 2 * out_channels * frames * latent_h * s * latent_w * s * elem  # chunks kept + the final cat
    if tiled:  # every decoded tile of one chunk waits for blending
        overlap = (VAE_TILE_PX / VAE_TILE_STRIDE_PX) ** 2
        outputs += int(out_channels * chunk_px * latent_h * s * latent_w * s * elem * overlap)
    return int(max(conv, attention) + outputs)


def vae_encode_bytes(config: Mapping[str, Any], height: int, width: int, elem: int, tiled: bool) -> int:
    """One image through the encoder: bounded by a one-frame decode at the same size."""
    s = config.get("spatial_compression_ratio", 8)
    return vae_decode_bytes(config, 1, height // s, width // s, elem, tiled)


def text_encoder_bytes(config: Mapping[str, Any], tokens: int, elem: int, all_hidden_states: bool) -> int:
    """Llama/CLIP forward: the returned hidden states plus one layer's MLP temporaries."""
    width, inner = config["hidden_size"], config["intermediate_size"]
    layers = config["num_hidden_layers"] + 1 if all_hidden_states else 2
    return int(tokens * (layers * width + 3 * inner) * elem)


def vision_encoder_bytes(config: Mapping[str, Any], elem: int) -> int:
    tokens = (config["image_size"] // config["patch_size"]) ** 2
    return int(tokens * (4 * config["hidden_size"] + 2 * config["intermediate_size"]) * elem)


def transformer_flops_breakdown(config: Mapping[str, Any], latent_h: int, latent_w: int, window: int,
                                context: int, text: int) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of one transformer call, by part.

    `context` = SigLIP tokens + `text` prompt tokens. `linear`: every token through q/k/v/out and
    the MLP of each block, plus the per-block modulation; `attention`: QK^T and AV over all tokens
    (and the token refiner's over the prompt); `refiner`: the prompt's token refiner and input
    projection; `embed`: the 1x/2x/4x patch embeddings; `image`: SigLIP's projection; `head`: the
    output projection of the window tokens.
    """
    width = config["num_attention_heads"] * config["attention_head_dim"]
    ratio = float(config.get("mlp_ratio", 4.0))
    patch, channels = config.get("patch_size", 2), config.get("in_channels", 16)
    image = image_tokens(latent_h, latent_w, window, patch)
    tokens = image + context
    per_frame = (latent_h // patch) * (latent_w // patch)
    two = (_padded(latent_h, 4) // 4) * (_padded(latent_w, 4) // 4) * (_padded(HISTORY_FRAMES[1], 2) // 2)
    four = (_padded(latent_h, 8) // 8) * (_padded(latent_w, 8) // 8) * (_padded(HISTORY_FRAMES[2], 4) // 4)
    per_token = 2 * (4 + 2 * ratio) * width * width  # q, k, v, out and the MLP
    blocks = config["num_layers"] + config["num_single_layers"]
    refiner_layers = config.get("num_refiner_layers", 0)
    modulation = 2 * (config["num_layers"] * 12 + config["num_single_layers"] * 3 + 2) * width * width
    return {
        "linear": float(blocks * tokens * per_token + modulation),
        "attention": float(blocks * 4 * tokens * tokens * width + refiner_layers * 4 * text * text * width),
        "refiner": float(refiner_layers * text * per_token + 2 * text * config["text_embed_dim"] * width),
        "embed": float(2 * width * channels * ((window + 2) * per_frame * patch * patch + two * 32 + four * 256)),
        "image": float(2 * (context - text) * 3 * width * (config.get("image_proj_dim", 0) + width)),
        "head": float(2 * window * per_frame * width * config["out_channels"] * patch * patch),
    }


def transformer_flops(config: Mapping[str, Any], latent_h: int, latent_w: int, window: int, context: int,
                      text: int) -> float:
    """FLOPs of one transformer call (one sampling step of one guidance branch)."""
    return sum(transformer_flops_breakdown(config, latent_h, latent_w, window, context, text).values())
