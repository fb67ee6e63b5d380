"""Quantized checkpoints (docs/format.md): a directory with model.safetensors
(packed tensors, every unquantized tensor, and the non-persistent buffers the
model needs, e.g. rotary tables) and tacq_config.json (with the weights file's
size and sha256). Loading verifies both and every quantized tensor, reads
safetensors only (nothing is ever unpickled) and can fill a skeleton that
lives on the meta device."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from safetensors.torch import save_file

from .checkpoint_checks import (check_bias, check_layer_spec, check_row_split_spec,
                                check_weights_file, file_sha256)
from .bf16_linear import use_bf16_gemv
from .config import TACQConfig
from .qlinear import QUANTIZED_TENSORS, QuantizedLinear
from .row_split import RowSplitLinear, check_row_bits
from .targets import set_module
from .weights_reader import read_checkpoint_tensors

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "tacq_config.json"
HF_CONFIG_FILE = "config.json"


def _non_persistent_buffers(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Buffers the state dict leaves out (registered with persistent=False)."""
    persistent = set(model.state_dict(keep_vars=True))
    return {k: v for k, v in model.named_buffers() if k not in persistent}


def save_quantized(model: nn.Module, out_dir, cfg: TACQConfig, report=None, calibration: str = "") -> Path:
    """Writes model.safetensors and tacq_config.json into out_dir (created)
    and, for a Hugging Face model, config.json with a quantization_config and
    generation_config.json, so that from_pretrained loads the directory.
    Everything is first written to a hidden directory next to out_dir and
    moved into place at the end (_publish): an interrupted save never leaves
    a checkpoint that looks complete."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    if not layers:
        raise ValueError("save_quantized: the model has no QuantizedLinear layers; run quantize_model first")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"save_quantized: out_dir {out} exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _write_checkpoint(model, staging, layers, cfg, report, calibration)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def save_pretrained_writes_tacq(model: nn.Module, cfg: TACQConfig, report=None, calibration: str = "") -> None:
    """Points a Hugging Face model's ``save_pretrained`` at save_quantized
    (quantize_model and both loaders call this). transformers' own would
    write the quantized tensors without tacq_config.json: a directory that
    from_pretrained loads as an unquantized model whose linear layers are
    freshly initialized, with a warning only."""
    if callable(getattr(type(model), "save_pretrained", None)):
        model.save_pretrained = TacqSavePretrained(model, cfg, report, calibration)


class TacqSavePretrained:
    """save_pretrained of a TACQ model: save_quantized (sharding and hub
    options do not apply). An object holding its model rather than a closure,
    so that a deep copy of the model saves the copy and the model still pickles."""

    def __init__(self, model: nn.Module, cfg: TACQConfig, report, calibration: str):
        self.model, self.cfg, self.report, self.calibration = model, cfg, report, calibration

    def __call__(self, save_directory, push_to_hub: bool = False, **ignored) -> Path:
        if push_to_hub:
            raise ValueError("save_pretrained of a TACQ model writes a local directory; push it yourself")
        return save_quantized(self.model, save_directory, self.cfg, report=self.report, calibration=self.calibration)


def _publish(staging: Path, out: Path) -> None:
    """A new out_dir is the staging directory renamed. Into an existing one the
    files move one by one (os.replace), tacq_config.json (which holds the
    weights' size and sha256) removed first and moved last."""
    if not out.exists():
        os.rename(staging, out)
        return
    (out / CONFIG_FILE).unlink(missing_ok=True)
    for file in sorted(staging.iterdir(), key=lambda f: f.name == CONFIG_FILE):
        os.replace(file, out / file.name)


def _write_checkpoint(model: nn.Module, out: Path, layers: Dict[str, QuantizedLinear], cfg: TACQConfig,
                      report, calibration: str) -> None:
    from . import __version__

    # The tensors themselves (keep_vars): a QuantizedLinear's plain state_dict()
    # copies its six (for torch.save), a second copy of the model in memory.
    state = {k: v.detach().contiguous() for k, v in model.state_dict(keep_vars=True).items()}
    # tied parameters appear under several names: store each storage once
    seen, unique = {}, {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else (k,)
        if key in seen:
            continue
        seen[key] = k
        unique[k] = v
    extra = {k: v.detach().contiguous() for k, v in _non_persistent_buffers(model).items()}
    weights = out / WEIGHTS_FILE
    save_file({**unique, **extra}, str(weights),
              metadata={"format": "pt", "tacq_format_version": str(FORMAT_VERSION)})
    config = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "bits": cfg.bits,
        "group_size": cfg.group_size,
        "method": cfg.method,
        "ratio": cfg.ratio,
        "reference": cfg.reference,
        "calibration": calibration,
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": file_sha256(weights),
        "non_persistent_buffers": sorted(extra),
        "layers": {name: {"in_features": m.in_features, "out_features": m.out_features, "bits": m.bits,
                          "group_size": m.group_size, "nnz": m.nnz, "bias": m.bias is not None,
                          "avg_bits": m.avg_bits()} for name, m in layers.items()},
        "row_splits": {name: {"in_features": m.in_features, "out_features": m.out_features,
                              "bias": m.bias is not None, "parts": [f"{name}.parts.{i}" for i in range(len(m.parts))],
                              "avg_bits": m.avg_bits()}
                       for name, m in model.named_modules() if isinstance(m, RowSplitLinear)},
        "report": report.summary() if report is not None else None,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    _write_hf_config(model, out, quantization_config(cfg, layers))


def quantization_config(cfg: TACQConfig, layers: Dict[str, QuantizedLinear]) -> dict:
    """The `quantization_config` entry of config.json that Hugging Face
    transformers dispatches on: the method's settings, and the bits and group
    size of every layer that differs from them."""
    overrides = {name: {"bits": m.bits, "group_size": m.group_size} for name, m in layers.items()
                 if (m.bits, m.group_size) != (cfg.bits, cfg.group_size)}
    return {"quant_method": "tacq", "format_version": FORMAT_VERSION, "bits": cfg.bits,
            "group_size": cfg.group_size, "ratio": cfg.ratio, "method": cfg.method, "reference": cfg.reference,
            "layers": overrides}


def _write_hf_config(model: nn.Module, out: Path, quantization: dict) -> None:
    """config.json (and generation_config.json) of a Hugging Face model, with
    its quantization_config, so that from_pretrained can load the directory."""
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(config, "to_dict", None)):
        return
    entries = config.to_dict()
    entries["quantization_config"] = quantization
    floating = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if floating is not None:  # the dtype of the stored unquantized tensors, which from_pretrained defaults to
        for key in [k for k in ("dtype", "torch_dtype") if k in entries] or ["dtype"]:
            entries[key] = str(floating).removeprefix("torch.")
    (out / HF_CONFIG_FILE).write_text(json.dumps(entries, indent=2, sort_keys=True, default=str) + "\n")
    generation = getattr(model, "generation_config", None)
    if generation is not None and callable(getattr(generation, "save_pretrained", None)):
        generation.save_pretrained(out)


def read_config(path) -> dict:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: not a tacq checkpoint directory")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        found = config.get("format_version") if isinstance(config, dict) else None
        raise ValueError(f"{file}: format_version {found!r} is not supported "
                         f"(this library reads version {FORMAT_VERSION})")
    if not isinstance(config.get("layers"), dict):
        raise ValueError(f"{file}: missing 'layers'")
    for name, spec in config["layers"].items():
        check_layer_spec(name, spec)
    if not isinstance(config.setdefault("row_splits", {}), dict):
        raise ValueError(f"{file}: 'row_splits' must be an object")
    for name, spec in config["row_splits"].items():
        check_row_split_spec(name, spec, config["layers"])
    if not isinstance(config.get("non_persistent_buffers", []), list):
        raise ValueError(f"{file}: 'non_persistent_buffers' must be a list of names")
    return config


def verified_weights_file(path: Path, config: dict) -> Path:
    """path/model.safetensors, after checking its size and sha256 against the config."""
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    check_weights_file(weights, config.get("weights_bytes"), config.get("weights_sha256"))
    return weights


def _default_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        if not t.is_meta:
            return t.device
    return torch.device("cpu")


def _empty_quantized_linear(spec: dict, bias_dtype) -> QuantizedLinear:
    return QuantizedLinear(spec["in_features"], spec["out_features"], spec["bits"], spec["group_size"], spec["nnz"],
                           spec["bias"], device="meta", dtype=bias_dtype)


def swap_in_quantized_layers(model: nn.Module, config: dict) -> None:
    """Replaces each of the skeleton's nn.Linear that the checkpoint holds
    quantized by an empty QuantizedLinear (or RowSplitLinear) on the meta
    device, after checking that the two agree on shape and bias."""
    modules = dict(model.named_modules())
    parts_of_splits = set()
    for name, spec in config.get("row_splits", {}).items():
        _check_skeleton_linear(name, spec, modules.get(name))
        bias_dtype = modules[name].bias.dtype if spec["bias"] else torch.float32
        parts = [_empty_quantized_linear(config["layers"][part], torch.float32) for part in spec["parts"]]
        bias = torch.empty(spec["out_features"], dtype=bias_dtype, device="meta") if spec["bias"] else None
        row_bits = torch.empty(spec["out_features"], dtype=torch.uint8, device="meta")
        set_module(model, name, RowSplitLinear(parts, row_bits, bias))
        parts_of_splits.update(spec["parts"])
    for name, spec in config["layers"].items():
        if name in parts_of_splits:
            continue
        old = modules.get(name)
        _check_skeleton_linear(name, spec, old)
        set_module(model, name, _empty_quantized_linear(spec, old.bias.dtype if spec["bias"] else torch.float32))


def _check_skeleton_linear(name: str, spec: dict, old) -> None:
    if not isinstance(old, nn.Linear):
        raise ValueError(f"checkpoint layer {name!r} is not an nn.Linear in the given model skeleton")
    if (old.in_features, old.out_features) != (spec["in_features"], spec["out_features"]):
        raise ValueError(f"checkpoint layer {name!r} is {spec['out_features']}x{spec['in_features']}, "
                         f"the skeleton's is {old.out_features}x{old.in_features}")
    if spec["bias"] != (old.bias is not None):
        raise ValueError(f"checkpoint layer {name!r} {'has' if spec['bias'] else 'has no'} bias, "
                         f"the skeleton's {'has none' if spec['bias'] else 'has one'}")


def quantized_tensor_names(config: dict) -> List[str]:
    """Names of the tensors of the quantized format, whose dtypes are exact:
    every quantized layer's (QUANTIZED_TENSORS) and every row split's row_bits."""
    return ([f"{name}.{k}" for name in config["layers"] for k in QUANTIZED_TENSORS]
            + [f"{name}.row_bits" for name in config.get("row_splits", {})])


def check_row_splits(config: dict, state: Dict[str, torch.Tensor]) -> None:
    """Every row split's row_bits and bias in `state` (the quantized layers'
    own tensors are checked as they are read, read_quantized_layers)."""
    for name, spec in config.get("row_splits", {}).items():
        parts = [config["layers"][part] for part in spec["parts"]]
        key = f"{name}.row_bits"
        if key not in state:
            raise ValueError(f"checkpoint layer {name!r}, tensor 'row_bits': missing from the weights file")
        check_row_bits(f"checkpoint layer {name!r}, tensor 'row_bits'", state[key], [p["bits"] for p in parts],
                       [p["out_features"] for p in parts])
        if spec["bias"]:
            check_bias(name, {"bias": state[f"{name}.bias"]} if f"{name}.bias" in state else {}, spec["out_features"])


def _is_tied_alias(model: nn.Module, key: str, state: dict) -> bool:
    """True if `key` is a parameter tied to another one stored under a different name."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    target = params[key]
    return any(other in state and p is target for other, p in params.items() if other != key)


def _in_skeleton_dtype(key: str, value: torch.Tensor, expected: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """Floating tensors take the skeleton's dtype (so a bf16 skeleton gets
    bf16 weights) unless `exact` (the quantized format's own tensors);
    everything else must match the skeleton exactly."""
    if tuple(expected.shape) != tuple(value.shape):
        raise ValueError(f"checkpoint tensor {key!r} has shape {tuple(value.shape)}, skeleton expects "
                         f"{tuple(expected.shape)}")
    if not exact and value.is_floating_point() and expected.is_floating_point():
        return value.to(expected.dtype)
    if value.dtype != expected.dtype:
        raise ValueError(f"checkpoint tensor {key!r} has dtype {value.dtype}, skeleton expects {expected.dtype}")
    return value


def _load_non_persistent_buffers(model: nn.Module, names, state: Dict[str, torch.Tensor]) -> None:
    skeleton = _non_persistent_buffers(model)
    for key in names:
        if key not in state:
            raise ValueError(f"checkpoint lists non-persistent buffer {key!r} but the weights file lacks it")
        if key not in skeleton:
            raise ValueError(f"checkpoint holds non-persistent buffer {key!r}, which the skeleton does not have")
        owner, _, leaf = key.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module.register_buffer(leaf, _in_skeleton_dtype(key, state.pop(key), skeleton[key]), persistent=False)


def load_quantized(path, model: nn.Module, device: Optional[torch.device] = None) -> nn.Module:
    """Turns `model` (an unquantized skeleton of the same architecture, on
    any device including meta) into the quantized model stored at `path`,
    on `device` (default: the skeleton's device, or cpu for a meta skeleton).
    Every tensor comes from the checkpoint, non-persistent buffers included;
    unquantized floating tensors take the skeleton's dtype. Its remaining
    nn.Linear layers become Bf16GemvLinear (the same Parameters; the LM head
    decodes through ops.bf16_gemv where it applies)."""
    path = Path(path)
    config = read_config(path)
    device = torch.device(device) if device is not None else _default_device(model)
    state = read_checkpoint_tensors(verified_weights_file(path, config), config, device)
    check_row_splits(config, state)
    swap_in_quantized_layers(model, config)
    use_bf16_gemv(model)
    _load_non_persistent_buffers(model, config.get("non_persistent_buffers", []), state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _is_tied_alias(model, k, state)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model skeleton: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    quantized = set(quantized_tensor_names(config))
    state = {k: _in_skeleton_dtype(k, v, expected[k], exact=k in quantized) for k, v in state.items()}
    # A layer at a time, so that each layer's tensors as read are freed once
    # copied into its stored layer: at no time two copies of the model.
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            module.load_state_dict({k: state.pop(f"{name}.{k}") for k in QUANTIZED_TENSORS}, strict=False,
                                   assign=True)
    model.load_state_dict(state, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    still_meta = [k for k, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise ValueError(f"the checkpoint does not provide {still_meta[:5]}: they are still on the meta "
                         "device of the skeleton")
    save_pretrained_writes_tacq(model, checkpoint_tacq_config(config), calibration=config.get("calibration", ""))
    return model


def checkpoint_tacq_config(config: dict) -> TACQConfig:
    """The method settings a checkpoint's tacq_config.json records."""
    return TACQConfig(**{k: config[k] for k in ("bits", "group_size", "ratio", "method", "reference") if k in config})
