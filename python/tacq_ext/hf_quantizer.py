"""Hugging Face-native loading of TACQ checkpoints.

Importing tacq_ext registers the quantization method "tacq" with transformers'
public quantizer registry, so that

    AutoModelForCausalLM.from_pretrained(qdir, dtype=..., device_map=...)

loads a directory written by save_quantized (its config.json carries
quantization_config.quant_method = "tacq"). The quantizer checks the weights
file's size and sha256 against tacq_config.json, swaps every quantized
nn.Linear of the skeleton for a QuantizedLinear before transformers loads the
weights, and afterwards reads each quantized layer's tensors itself from the
safetensors file with their exact dtypes and checks them, as load_quantized
does (transformers may cast floating tensors to the model's dtype on the way).
Nothing is ever unpickled. save_pretrained of such a model writes the same
format through save_quantized.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from .bf16_linear import use_bf16_gemv
from .qlinear import QuantizedLinear
from .serialization import (CONFIG_FILE, FORMAT_VERSION, check_row_splits, checkpoint_tacq_config,
                            quantized_tensor_names, read_config, save_pretrained_writes_tacq,
                            swap_in_quantized_layers, verified_weights_file)
from .weights_reader import read_checkpoint_tensors

QUANT_METHOD = "tacq"


@register_quantization_config(QUANT_METHOD)
class TACQQuantizationConfig(QuantizationConfigMixin):
    """config.json's quantization_config for a TACQ checkpoint: the method's
    settings, the format version, and per-layer bits / group size overrides."""

    def __init__(self, bits: int = 2, group_size: int = -1, ratio: float = 0.0035, method: str = "tacq",
                 reference: str = "gptq", format_version: int = FORMAT_VERSION, layers: dict = None, **kwargs):
        self.quant_method = QUANT_METHOD
        self.bits, self.group_size, self.ratio = bits, group_size, ratio
        self.method, self.reference = method, reference
        self.format_version = format_version
        self.layers = dict(layers or {})
        if format_version != FORMAT_VERSION:
            raise ValueError(f"quantization_config: format_version {format_version!r} is not supported "
                             f"(this library reads version {FORMAT_VERSION})")


def _checkpoint_dir(model: nn.Module) -> Path:
    path = Path(str(getattr(model.config, "name_or_path", "") or ""))
    if not (path / CONFIG_FILE).is_file():
        raise ValueError(f"a TACQ checkpoint loads from a local directory written by tacq_ext.save_quantized; "
                         f"{str(path)!r} has no {CONFIG_FILE}")
    return path


def _read_quantized_tensors(weights: Path, config: dict) -> dict:
    """{name: tensor} of every quantized layer's tensors on the CPU with their
    stored dtypes: the format tensors as views of each layer's stored-layer
    buffer (read_checkpoint_tensors), the row splits' row_bits and the biases."""
    biases = [f"{layer}.bias" for layer in list(config["layers"]) + list(config.get("row_splits", {}))]
    return read_checkpoint_tensors(weights, config, "cpu", keys=set(biases + quantized_tensor_names(config)))


@register_quantizer(QUANT_METHOD)
class TACQHfQuantizer(HfQuantizer):
    """Loads pre-quantized TACQ checkpoints; quantizing on load is not
    offered (TACQ needs calibration data: use tacq_ext.quantize_model)."""

    requires_calibration = True
    requires_parameters_quantization = False

    def _process_model_before_weight_loading(self, model, **kwargs):
        checkpoint = _checkpoint_dir(model)
        self.tacq_config = read_config(checkpoint)
        weights = verified_weights_file(checkpoint, self.tacq_config)
        self.quantized_state = _read_quantized_tensors(weights, self.tacq_config)
        check_row_splits(self.tacq_config, self.quantized_state)
        swap_in_quantized_layers(model, self.tacq_config)
        use_bf16_gemv(model)
        # buffers the model recomputes itself (rotary tables) are stored for load_quantized only
        stored_only = {k.replace(".", r"\.") for k in self.tacq_config.get("non_persistent_buffers", [])}
        model._keys_to_ignore_on_load_unexpected = set(model._keys_to_ignore_on_load_unexpected or ()) | stored_only
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        modules = dict(model.named_modules())
        for key in quantized_tensor_names(self.tacq_config):  # exact dtypes, on the device the layer was placed on
            layer, _, name = key.rpartition(".")
            module = modules[layer]
            setattr(module, name, self.quantized_state.pop(key).to(getattr(module, name).device))
        self.quantized_state.clear()
        for module in modules.values():
            if isinstance(module, QuantizedLinear):
                module.consolidate()
        save_pretrained_writes_tacq(model, checkpoint_tacq_config(self.tacq_config),
                                    calibration=self.tacq_config.get("calibration", ""))
        return model

    def is_serializable(self, *args, **kwargs):
        return True

    @property
    def is_trainable(self):
        return False

    @property
    def is_compileable(self) -> bool:
        """Yes: QuantizedLinear's ops have fake kernels and compile without graph
        breaks. transformers compiles generate()'s decoding steps under a static
        KV cache (on CUDA by default, elsewhere when the generation config's
        compile_config allows) only for quantizers that say so; without this a
        TACQ model would decode eagerly where its unquantized twin compiles."""
        return True
