"""Fake `modules.shared`: opts, OptionInfo, state, log, api, cmd_opts (lora_dir), sd_model / sd_loaded."""

from __future__ import annotations

import argparse
import os
import sys

from modules import paths
from modules.logger import log  # noqa: F401  (shared.log is the "sd" logger)
from modules.options import OptionInfo, Options, options_section  # noqa: F401
from modules.shared_state import State

default_hfcache_dir = os.environ.get("SD_HFCACHEDIR", None) or os.path.join(paths.models_path, "huggingface")

options_templates: dict[str, OptionInfo] = {}
options_templates.update(options_section(("sd", "Model Loading"), {
    "sd_model_checkpoint": OptionInfo("None", "Base model"),
    "device_map": OptionInfo("default", "Model load device map", None, {"choices": ["default", "gpu", "cpu"]}),
    "diffusers_offload_mode": OptionInfo("balanced", "Model offload mode", None,
                                         {"choices": ["none", "balanced", "group", "model", "sequential"]}),
}))
# SD.Next's "Model Quantization" section (modules/ui_definitions.py), the keys that decide SDNQ
options_templates.update(options_section(("quantization", "Model Quantization"), {
    "quantize_sep": OptionInfo("<h2>Quantization General</h2>", "", None),
    "sdnq_quantize_sep": OptionInfo("<h2>SDNQ: SD.Next Quantization</h2>", "", None),
    "sdnq_quantize_weights": OptionInfo([], "Quantization enabled", None,
                                        {"choices": ["Model", "TE", "LLM", "Control", "VAE"]}),
    "sdnq_quantize_mode": OptionInfo("auto", "Quantization mode", None, {"choices": ["auto", "pre", "post"]}),
    "sdnq_quantize_weights_mode": OptionInfo("int8", "Quantization type", None),
}))
options_templates.update(options_section(("system-paths", "System Paths"), {
    "hfcache_dir": OptionInfo(default_hfcache_dir, "Folder for Huggingface cache", folder=True),
    "lora_dir": OptionInfo(os.path.join(paths.models_path, "Lora"), "Folder with LoRA network(s)", folder=True),
}))
options_templates.update(options_section(("ui", "User Interface"), {
    "ui_disabled": OptionInfo([], "Disabled UI tabs", None, {"visible": False}),
}))
options_templates.update(options_section(("extra_networks", "Networks"), {
    "extra_networks_sort": OptionInfo("Default", "Sort order", None),
    "extra_network_skip_indexing": OptionInfo(False, "Build info on first access", None),
    "extra_networks_default_multiplier": OptionInfo(1.0, "Default strength", None,
                                                    {"minimum": 0.0, "maximum": 2.0, "step": 0.01}),
}))
options_templates.update(options_section(("saving-images", "Image Options"), {
    "keep_incomplete": OptionInfo(True, "Save interrupted images"),
}))
options_templates.update(options_section(("saving-paths", "Image Paths"), {
    "outdir_samples": OptionInfo("", "Base images folder", folder=True),
    "outdir_video": OptionInfo("outputs/video", "Folder for videos", folder=True),
}))
options_templates.update(options_section(("hidden_options", "Hidden options"), {
    "offline_mode": OptionInfo(False, "Force offline mode"),
    "subpath": OptionInfo("", "Mount URL subpath"),
}))

opts = Options(options_templates)
# command-line options; folder arguments left unset on the command line take the setting's value
cmd_opts = argparse.Namespace(lora_dir=os.environ.get("SD_LORADIR", None) or opts.lora_dir)
state = State()
api = None  # modules.api.api.Api, set by the webui before on_app_started callbacks run
demo = None

sd_upscalers = []  # modules.upscaler.UpscalerData items, filled by modelloader.load_upscalers()

from modules.modeldata import Shared  # noqa: E402

sys.modules[__name__].__class__ = Shared
