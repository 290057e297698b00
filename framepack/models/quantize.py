"""Weight quantization of the transformer and the Llama text encoder: optimum-quanto and NNCF.

SD.Next dropped quanto and NNCF in 2026 (its own quantizer is SDNQ, applied by the host), so
FramePack owns these two, standalone and inside SD.Next alike:

- **quanto** quantizes on the fly: `quantize(model, weights=qint8|qfloat8|qint4)` swaps every
  `nn.Linear` (and `Conv2d`) for a quanto module, `freeze` replaces the float weights by the
  quantized ones. Conv3d layers (the patch embedders) stay float: quanto has no Conv3d.
- **NNCF** compresses the weights of a loaded model (`nncf.compress_weights`). On torch models
  it traces one real forward call, so it needs example inputs; `example_transformer_inputs`
  and `example_text_inputs` build them from the model's own config.

Both libraries are imported lazily: importing this module costs nothing. Combinations that fail
deep inside a library (a second quantizer on an already quantized model, fp8 where the device
has no float8, quanto int4 without a C++ toolchain to build its kernel, quantizing a model whose
weights an offload hook already moved away) are refused up front with a message that says what
to do instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from framepack.errors import InputError, ModelError

log = logging.getLogger(__name__)

QUANT_METHODS = ("none", "quanto-int8", "quanto-fp8", "quanto-int4", "nncf-int8", "nncf-int4")
QUANT_COMPONENTS = ("transformer", "text_encoder")

_QUANTO_QTYPES = {"quanto-int8": "qint8", "quanto-fp8": "qfloat8", "quanto-int4": "qint4"}
_NNCF_MODES = {"nncf-int8": "INT8_SYM", "nncf-int4": "INT4_SYM"}
NNCF_INT4_GROUP_SIZE = 128  # NNCF's default; layers it does not divide fall back (ADJUST mode)


@dataclass(frozen=True)
class QuantReport:
    """What one quantization call did, for logs, the UI and the tests.

    `layers_total` counts the weight layers (Linear, ConvNd, Embedding) before quantization;
    `layers_quantized` those whose weights were replaced; `kinds` splits the quantized layers by
    format (NNCF int4 keeps some layers in int8, e.g. `{"int4_sym": 40, "int8_asym": 6}`).
    """

    method: str
    component: str
    layers_quantized: int
    layers_total: int
    kinds: Mapping[str, int] = field(default_factory=dict)
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
        size = f"{self.weight_bytes_before / 2**20:.1f} -> {self.weight_bytes_after / 2**20:.1f} MiB"
        detail = f" ({kinds})" if kinds else ""
        return (f"{self.component}: {self.method}, {self.layers_quantized}/{self.layers_total} layers{detail}, "
                f"{size}, {self.seconds:.2f} s")


# ----------------------------------------------------------------------------- validation


def check_method(method: str) -> str:
    """The method name, normalized; an `InputError` listing the choices when unknown."""
    name = str(method or "none").strip().lower()
    if name not in QUANT_METHODS:
        raise InputError(f"unknown quantization {method!r}; choose one of: {', '.join(QUANT_METHODS)}")
    return name


def quantized_with(model: Any) -> str | None:
    """'quanto', 'nncf', 'another quantizer' or None: who already replaced this model's weights.

    'another quantizer' covers what we do not own (the host's SDNQ, bitsandbytes, torchao...):
    a weight layer whose weight is no longer a plain floating-point parameter.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    if _quanto_modules(model):
        return "quanto"
    if _nncf_decompressors(model):
        return "nncf"
    for layer in _weight_layers(model):
        weight = getattr(layer, "weight", None)
        if isinstance(weight, torch.Tensor) and (
                not weight.dtype.is_floating_point or type(weight) not in (torch.nn.Parameter, torch.Tensor)):
            return "another quantizer"
    return None


def _quanto_modules(model) -> list:
    try:
        from optimum.quanto import QModuleMixin
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, QModuleMixin)]


def _nncf_decompressors(model) -> list[tuple[str, Any]]:
    """NNCF keeps one decompressor module per compressed weight under `__nncf_hooks`."""
    return [(name, m) for name, m in model.named_modules()
            if "__nncf_hooks" in name and type(m).__name__.endswith("WeightsDecompressor")]


def has_lora_layers(model: Any) -> bool:
    """True when PEFT (diffusers' LoRA loader) has injected adapter layers into the model."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return False
    return bool(getattr(model, "peft_config", None)) or any(
        type(m).__module__.startswith("peft.") for m in model.modules())


def compiler_available() -> bool:
    """True when torch can JIT-build a C++ extension (quanto's int4 kernels): a C++ compiler and ninja."""
    from torch.utils.cpp_extension import is_ninja_available

    compiler = os.environ.get("CXX") or "c++"
    return bool(shutil.which(compiler) or shutil.which("g++")) and is_ninja_available()


def fp8_supported(device: Any) -> bool:
    """Whether `device` can hold float8 tensors (MPS cannot); probed, not guessed from names."""
    import torch

    try:
        probe = torch.ones(2, device=device).to(torch.float8_e4m3fn)
        return bool(probe.float().sum().item() == 2.0)
    except Exception:  # noqa: BLE001 - any failure means "no float8 here"
        return False


def _model_device(model):
    import torch

    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def check_compatible(model: Any, method: str, component: str = "model", device: Any = None) -> None:
    """Raise before touching `model` when `method` cannot work on it (see the module docstring).

    `device` is where the model will run (default: where its weights are now): a model quantized
    on the CPU and moved to a GPU afterwards needs the GPU's float8 support and kernels.
    """
    method = check_method(method)
    if method == "none":
        return
    from framepack.models.hooks import offload_state

    offloaded = offload_state(model)
    if offloaded is not None:
        raise ModelError(
            f"{component} already has {offloaded} offload hooks; quantize the pipeline before enabling offload"
        )
    if has_lora_layers(model):
        raise ModelError(f"{component} has LoRA layers loaded; unload them, quantize, then apply the LoRAs again")
    done = quantized_with(model)
    if done is not None:
        raise ModelError(
            f"{component} is already quantized with {done}; load it again (unquantized) to use {method}"
        )
    import torch

    if _model_device(model).type == "meta":
        raise ModelError(f"{component} has no weights loaded (meta device); load it before quantizing")
    device = torch.device(device) if device is not None else _model_device(model)
    if method == "quanto-fp8" and not fp8_supported(device):
        raise InputError(f"quanto-fp8 needs float8 support, which {device.type} does not have; "
                         "use quanto-int8 instead")
    if needs_kernel_build(method, device):
        _check_toolchain(method, device)


def needs_kernel_build(method: str, device: Any) -> bool:
    """Whether quanto JIT-builds kernels for `method` on `device` at first use (minutes, once).

    int4 always does (its weight unpacking is a C++/CUDA extension); fp8 does on CUDA GPUs of
    compute capability 8+, where quanto switches to its Marlin fp8 kernels; int8 never does.
    """
    import torch

    device = torch.device(device)
    if method == "quanto-int4":
        return True
    if method == "quanto-fp8" and device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    return False


def _check_toolchain(method: str, device) -> None:
    """Refuse early when quanto's kernel build cannot run, instead of failing mid-generation."""
    if not compiler_available():
        raise InputError(f"{method} compiles a C++ kernel on first use, but no C++ compiler (g++) and ninja "
                         "were found; install them (e.g. apt-get install g++ ninja-build) or use quanto-int8")
    if device.type == "cuda":
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME is None:
            raise InputError(f"{method} on CUDA compiles CUDA kernels on first use, but the CUDA toolkit (nvcc) "
                             "was not found; install it or use quanto-int8")


# ----------------------------------------------------------------------------- example inputs


def example_transformer_inputs(transformer: Any, *, height: int = 32, width: int = 32, window: int = 3,
                               text_tokens: int = 8, image_tokens: int = 4) -> dict[str, Any]:
    """Keyword arguments of one real `HunyuanVideoFramepackTransformer3DModel` call (F1 layout).

    Shapes come from the model's config: noisy window, clean start + 1x/2x/4x history with their
    frame indices, text, pooled text, SigLIP tokens, timestep and distilled guidance. Values are
    random: NNCF's data-free weight compression only needs the call to trace the graph.
    """
    import torch

    config = transformer.config
    device, dtype = _model_device(transformer), transformer.dtype
    generator = torch.Generator().manual_seed(0)
    latent_h, latent_w = max(1, height // 8), max(1, width // 8)
    channels = config.in_channels

    def noise(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    # F1 index layout: [start 1 | 4x 16 | 2x 2 | 1x 1 | window]
    sizes = [1, 16, 2, 1, window]
    start, four, two, one, current = torch.arange(sum(sizes)).split(sizes)
    history = lambda frames: noise(1, channels, frames, latent_h, latent_w)  # noqa: E731
    inputs = {
        "hidden_states": history(window),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": noise(1, text_tokens, config.text_embed_dim),
        "encoder_attention_mask": torch.ones(1, text_tokens, device=device, dtype=dtype),
        "pooled_projections": noise(1, config.pooled_projection_dim),
        "image_embeds": noise(1, image_tokens, config.image_proj_dim),
        "indices_latents": current.to(device),
        "latents_clean": history(2),
        "indices_latents_clean": torch.cat([start, one]).to(device),
        "latents_history_2x": history(2),
        "indices_latents_history_2x": two.to(device),
        "latents_history_4x": history(16),
        "indices_latents_history_4x": four.to(device),
        "return_dict": False,
    }
    if config.guidance_embeds:
        inputs["guidance"] = torch.tensor([10000.0], device=device, dtype=dtype)
    return inputs


def example_text_inputs(text_encoder: Any, *, tokens: int = 16) -> dict[str, Any]:
    """Keyword arguments of one Llama text-encoder call as the pipeline makes it (hidden states on)."""
    import torch

    device = _model_device(text_encoder)
    vocab = int(getattr(text_encoder.config, "vocab_size", 1000))
    input_ids = (torch.arange(tokens) % vocab).unsqueeze(0).to(device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "output_hidden_states": True}


def example_inputs_for(model: Any) -> dict[str, Any]:
    """Example inputs for the component classes FramePack quantizes; `InputError` for others."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    if isinstance(model, HunyuanVideoFramepackTransformer3DModel):
        return example_transformer_inputs(model)
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) == "llama":
        return example_text_inputs(model)
    raise InputError(f"NNCF needs example inputs for {type(model).__name__}; pass example_inputs=")


# ----------------------------------------------------------------------------- counting


def _weight_layers(model) -> list:
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)
    return [m for m in model.modules() if isinstance(m, kinds)]


def _tensor_bytes(tensor) -> int:
    """Real storage of a tensor, looking inside tensor subclasses (quanto keeps data + scale)."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(model) -> int:
    """Bytes held by the model's parameters and buffers (quantized ones at their real size)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(_tensor_bytes(t) for t in tensors)


_NNCF_KINDS = {
    "INT8SymmetricWeightsDecompressor": "int8_sym",
    "INT8AsymmetricWeightsDecompressor": "int8_asym",
    "INT4SymmetricWeightsDecompressor": "int4_sym",
    "INT4AsymmetricWeightsDecompressor": "int4_asym",
}


def quantized_layer_kinds(model) -> dict[str, int]:
    """{format: count} of the layers quanto or NNCF replaced (empty for a float model)."""
    kinds: dict[str, int] = {}
    for module in _quanto_modules(model):
        qtype = getattr(module, "weight_qtype", None)
        if qtype is not None:
            name = getattr(qtype, "name", str(qtype))
            kinds[name] = kinds.get(name, 0) + 1
    for _, module in _nncf_decompressors(model):
        name = _NNCF_KINDS.get(type(module).__name__, type(module).__name__)
        kinds[name] = kinds.get(name, 0) + 1
    return kinds


# ----------------------------------------------------------------------------- quantizers


def _quanto(model, method: str) -> None:
    from optimum import quanto

    quanto.quantize(model, weights=getattr(quanto, _QUANTO_QTYPES[method]))
    quanto.freeze(model)


@contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs a statistics table at INFO on every call; keep our logs readable."""
    from nncf.common.logging.logger import nncf_logger, set_log_level

    level = nncf_logger.level
    set_log_level(logging.WARNING)
    try:
        yield
    finally:
        set_log_level(level)


def _nncf(model, method: str, example_inputs: Mapping[str, Any] | None) -> None:
    import nncf

    inputs = dict(example_inputs) if example_inputs is not None else example_inputs_for(model)
    options: dict[str, Any] = {"mode": getattr(nncf.CompressWeightsMode, _NNCF_MODES[method])}
    if method == "nncf-int4":
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        options["group_size"] = NNCF_INT4_GROUP_SIZE
        options["advanced_parameters"] = AdvancedCompressionParameters(
            group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)
    with _quiet_nncf():
        compressed = nncf.compress_weights(model, dataset=nncf.Dataset([inputs]), **options)
    if compressed is not model:  # NNCF 3.x compresses torch models in place; make sure of it
        raise ModelError(f"NNCF returned a new {type(compressed).__name__} instead of compressing in place")


def quantize_component(model: Any, method: str, *, example_inputs: Mapping[str, Any] | None = None,
                       component: str = "model", device: Any = None) -> QuantReport:
    """Quantize `model`'s weights in place with `method` (one of `QUANT_METHODS`) and report.

    Call it after the model is loaded in its final dtype and before offload is enabled; it may
    sit on the CPU (then pass the run `device`, see `check_compatible`). `example_inputs` (NNCF
    only) are the keyword arguments of one forward call; for the FramePack transformer and the
    Llama encoder they are built when omitted.
    """
    import torch

    method = check_method(method)
    layers_total = len(_weight_layers(model))
    before = weight_bytes(model)
    if method == "none":
        return QuantReport(method, component, 0, layers_total, {}, before, before, 0.0)
    check_compatible(model, method, component, device)
    started = time.perf_counter()
    try:
        with torch.no_grad():
            if method.startswith("quanto-"):
                _quanto(model, method)
            else:
                _nncf(model, method, example_inputs)
    except (InputError, ModelError):
        raise
    except ImportError as exc:
        package = "optimum-quanto" if method.startswith("quanto-") else "nncf"
        raise ModelError(f"{method} needs the {package} package ({exc}); install it or choose another method") from exc
    except Exception as exc:  # the libraries' own errors, one line for the user
        raise ModelError(f"{component}: {method} failed ({type(exc).__name__}: {_first_line(exc)})") from exc
    kinds = quantized_layer_kinds(model)
    report = QuantReport(method, component, sum(kinds.values()), layers_total, kinds, before,
                         weight_bytes(model), time.perf_counter() - started)
    log.info("quantized %s", report.summary())
    return report


def quantize_pipeline(pipe: Any, method: str, components: Iterable[str] = QUANT_COMPONENTS, *,
                      device: Any = None) -> dict[str, QuantReport]:
    """Quantize the named components of a FramePack pipeline in place -> {component: report}.

    `device`: where the pipeline will run (see `check_compatible`). Everything is checked before
    anything is changed, so a refused combination leaves the pipeline as it was.
    """
    method = check_method(method)
    models = {}
    for name in components:
        if name not in QUANT_COMPONENTS:
            raise InputError(f"cannot quantize {name!r}; quantizable components: {', '.join(QUANT_COMPONENTS)}")
        model = getattr(pipe, name, None)
        if model is None:
            raise ModelError(f"the pipeline has no {name} to quantize")
        check_compatible(model, method, name, device)
        models[name] = model
    return {name: quantize_component(model, method, component=name, device=device) for name, model in models.items()}


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
