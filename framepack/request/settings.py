"""The FramePack settings, defined once for every host.

Inside SD.Next they are the "FramePack" section of its Settings page (`shared.opts.framepack_*`,
registered by framepack/host/sdnext_settings.py); outside it they are `StandaloneHost.settings`
(`framepack_cli.py serve`, the CLI, tests). Both read `SETTINGS` and `SETTING_DEFAULTS`, so a
key, a default or a choice is never written twice. Plain data: no Gradio, no torch, no host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framepack.request import limits

QUANTIZATION_CHOICES = ("none", "quanto-int8", "quanto-fp8", "quanto-int4", "nncf-int8", "nncf-int4")
"""Our own quantization of the transformer and the Llama text encoder (framepack/models/quantize.py)."""
OFFLOAD_CHOICES = ("host", "none", "model", "sequential", "group")
"""`host` follows the host's own offload mode (SD.Next's "Model offload mode", balanced included;
`auto` outside SD.Next); the others are applied to our pipeline only, with diffusers' methods."""
ATTENTION_CHOICES = ("default", "native", "flash", "sage", "xformers")
CRF_SLIDER = (0, 51, 1)
"""The settings slider's range: the x264/x265 scale most users know (the request accepts up to
`limits.CRF_RANGE` for VP9 and AV1)."""
TEACACHE_SLIDER = (0.0, 1.0, 0.01)
"""The useful thresholds (the request accepts up to `limits.MAX_TEACACHE_THRESHOLD`)."""


@dataclass(frozen=True)
class Setting:
    """One FramePack setting: its key, default and how a settings page shows it.

    `component` is one of textbox, textarea, radio, dropdown, slider, checkbox. `choices` is None
    for a free value and for choices only the running machine knows (the video codec: the
    encoders that open here); `slider` is (minimum, maximum, step).
    """

    key: str
    default: Any
    label: str
    component: str
    choices: tuple[str, ...] | None = None
    slider: tuple[float, float, float] | None = None
    lines: int | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("framepack_model_recipe", "",
            "Model recipe overrides: JSON or one 'role: source' per line (roles: text_encoder, tokenizer, "
            "text_encoder_2, tokenizer_2, vae, image_encoder, feature_extractor, transformer, transformer_original, "
            "transformer_f1; 'folder: PATH' = a local folder with every component). Empty = the public models",
            "textarea", lines=4),
    Setting("framepack_variant", limits.VARIANTS[0], "Default model variant (original = anti-drifting, end image; "
            "f1 = forward)", "radio", choices=limits.VARIANTS),
    Setting("framepack_quantization", "none", "FramePack quantization of the transformer and Llama text encoder "
            "(for SDNQ use SD.Next's own Quantization settings instead)", "dropdown", choices=QUANTIZATION_CHOICES),
    Setting("framepack_offload", "host", "Offload mode ('host' = SD.Next's Model offload mode, balanced included)",
            "radio", choices=OFFLOAD_CHOICES),
    Setting("framepack_attention", "default", "Attention backend for the transformer", "dropdown",
            choices=ATTENTION_CHOICES),
    Setting("framepack_teacache_threshold", 0.15, "TeaCache threshold (higher = faster, lower quality)", "slider",
            slider=TEACACHE_SLIDER),
    Setting("framepack_codec", limits.DEFAULT_CODEC, "Video codec", "dropdown"),
    Setting("framepack_container", limits.CONTAINERS[0], "Video container", "radio", choices=limits.CONTAINERS),
    Setting("framepack_crf", 16, "Video quality (CRF, lower = better)", "slider", slider=CRF_SLIDER),
    Setting("framepack_save_frames", False, "Save raw frames (.safetensors)", "checkbox"),
    Setting("framepack_save_images", False, "Save frames as images", "checkbox"),
    Setting("framepack_image_format", limits.IMAGE_FORMATS[0], "Frame image format", "radio",
            choices=limits.IMAGE_FORMATS),
    Setting("framepack_lora_dir", "", "LoRA folder for the tab's LoRA list and the API's LoRA names "
            "(.safetensors files)", "textbox"),
    Setting("framepack_model_dir", "", "Folder of upscaler (ESRGAN family) and RIFE interpolation model files "
            "(.safetensors) chosen by name in the tab and API", "textbox"),
    Setting("framepack_auto_resume", False, "Resume a job that a crash or restart interrupted when the server starts "
            "again (off: it is listed as resumable)", "checkbox"),
)
SETTING_DEFAULTS: dict[str, Any] = {setting.key: setting.default for setting in SETTINGS}

