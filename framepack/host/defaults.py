"""What every host derives from its FramePack settings (`self.option`), the same in each host.

The settings themselves (keys, defaults, choices) are framepack/request/settings.py.
"""

from __future__ import annotations

from typing import Any


class SettingsDefaults:
    """Request and output defaults read from the settings (`self.option`); the same in every host."""

    def output_defaults(self) -> dict[str, Any]:
        """Defaults for `OutputOptions`."""
        return {
            "codec": self.option("framepack_codec"),
            "container": self.option("framepack_container"),
            "crf": int(self.option("framepack_crf")),
            "save_frames": bool(self.option("framepack_save_frames")),
            "save_images": bool(self.option("framepack_save_images")),
            "image_format": self.option("framepack_image_format"),
            "keep_incomplete": self.keep_incomplete(),
        }

    def lora_folder(self):
        """The LoRA files clients choose by name (`framepack_lora_dir`)."""
        from framepack.models.library import ModelFolder

        return ModelFolder(self.option("framepack_lora_dir"), "LoRA", "framepack_lora_dir")

    def model_folder(self):
        """The upscaler and interpolation model files clients choose by name (`framepack_model_dir`)."""
        from framepack.models.library import ModelFolder

        return ModelFolder(self.option("framepack_model_dir"), "model", "framepack_model_dir")

    def request_defaults(self) -> dict[str, Any]:
        """Defaults for `GenerationRequest` fields that are settings."""
        return {"variant": self.option("framepack_variant"),
                "teacache_threshold": float(self.option("framepack_teacache_threshold"))}
