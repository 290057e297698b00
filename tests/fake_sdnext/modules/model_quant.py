"""Fake `modules.model_quant`: SDNQ load/quantization arguments and post-load quantization.

`fake_quant_args[module]` is what `get_dit_args(..., module=module)` returns as quant_args
(an empty dict when SDNQ is off, as on a default install).
"""

from __future__ import annotations

from modules import devices, shared

fake_quant_args: dict[str, dict] = {}  # test-only: module -> quant args to hand out
fake_calls: list[tuple[str, dict]] = []  # test-only


def get_dit_args(load_config: dict | None = None, module: str | None = None, device_map: bool = False,
                 allow_quant: bool = True, modules_to_not_convert: list | None = None,
                 modules_dtype_dict: dict | None = None):
    config = {} if load_config is None else load_config.copy()
    if "torch_dtype" not in config:
        config["torch_dtype"] = devices.dtype
    if device_map:
        if shared.opts.device_map == "cpu":
            config["device_map"] = "cpu"
        elif shared.opts.device_map == "gpu":
            config["device_map"] = devices.device
    quant_args = dict(fake_quant_args.get(module, _sdnq_args(module))) if allow_quant else {}
    fake_calls.append(("get_dit_args", {"module": module, "device_map": device_map, "load_args": dict(config),
                                        "quant_args": dict(quant_args)}))
    return config, quant_args


class FakeSDNQConfig:
    """Stands for modules.sdnq.SDNQConfig (only its presence matters to the extension)."""

    def __init__(self, weights_dtype):
        self.weights_dtype = weights_dtype


def _sdnq_args(module):
    """SD.Next's create_sdnq_config rule: the module is ticked and the mode loads quantized ('pre'/'auto')."""
    if shared.opts.sdnq_quantize_mode in {"pre", "auto"} and module in shared.opts.sdnq_quantize_weights:
        return {"quantization_config": FakeSDNQConfig(shared.opts.sdnq_quantize_weights_mode)}
    return {}


def do_post_load_quant(sd_model, allow=True):
    fake_calls.append(("do_post_load_quant", {"model": sd_model, "allow": allow}))
    return sd_model
