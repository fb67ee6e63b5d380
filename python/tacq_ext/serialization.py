"""Quantized checkpoints (DESIGN.md §3): a directory with model.safetensors
(packed tensors and every unquantized tensor) and tacq_config.json. Loading
reads safetensors only; nothing is ever unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TACQConfig
from .qlinear import QuantizedLinear
from .targets import set_module

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "tacq_config.json"


def save_quantized(model: nn.Module, out_dir, cfg: TACQConfig, report=None, calibration: str = "") -> Path:
    """Writes model.safetensors + tacq_config.json into out_dir (created)."""
    from . import __version__

    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    if not layers:
        raise ValueError("save_quantized: the model has no QuantizedLinear layers; run quantize_model first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # tied parameters appear under several names: store each storage once
    seen, unique = {}, {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else (k,)
        if key in seen:
            continue
        seen[key] = k
        unique[k] = v
    save_file(unique, str(out / WEIGHTS_FILE), metadata={"format": "tacq", "format_version": str(FORMAT_VERSION)})
    config = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "bits": cfg.bits,
        "group_size": cfg.group_size,
        "method": cfg.method,
        "ratio": cfg.ratio,
        "reference": cfg.reference,
        "calibration": calibration,
        "layers": {name: {"in_features": m.in_features, "out_features": m.out_features, "bits": m.bits,
                          "group_size": m.group_size, "nnz": m.nnz, "bias": m.bias is not None,
                          "avg_bits": m.avg_bits()} for name, m in layers.items()},
        "report": report.summary() if report is not None else None,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return out


def read_config(path) -> dict:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: not a tacq checkpoint directory")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON ({e})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{file}: format_version {config.get('format_version')!r} is not supported "
                         f"(this library reads version {FORMAT_VERSION})")
    if not isinstance(config.get("layers"), dict):
        raise ValueError(f"{file}: missing 'layers'")
    return config


def load_quantized(path, model: nn.Module, device: Optional[torch.device] = None) -> nn.Module:
    """Turns `model` (an unquantized skeleton of the same architecture, possibly
    on the meta device) into the quantized model stored at `path`. Every
    tensor of the state dict comes from the checkpoint; non-persistent buffers
    (e.g. rotary tables) are the skeleton's own."""
    path = Path(path)
    config = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    try:
        state = load_file(str(weights), device="cpu" if device is None else str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is corrupted or truncated: {e}") from None
    modules = dict(model.named_modules())
    for name, spec in config["layers"].items():
        old = modules.get(name)
        if not isinstance(old, nn.Linear):
            raise ValueError(f"checkpoint layer {name!r} is not an nn.Linear in the given model skeleton")
        if (old.in_features, old.out_features) != (spec["in_features"], spec["out_features"]):
            raise ValueError(f"checkpoint layer {name!r} is {spec['out_features']}x{spec['in_features']}, "
                             f"the skeleton's is {old.out_features}x{old.in_features}")
        set_module(model, name, QuantizedLinear(spec["in_features"], spec["out_features"], spec["bits"],
                                                spec["group_size"], spec["nnz"], spec["bias"], device="meta"))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _is_tied_alias(model, k, state)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model skeleton: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for k, v in state.items():
        if tuple(expected[k].shape) != tuple(v.shape):
            raise ValueError(f"checkpoint tensor {k!r} has shape {tuple(v.shape)}, skeleton expects "
                             f"{tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def _is_tied_alias(model: nn.Module, key: str, state: dict) -> bool:
    """True if `key` is a parameter tied to another one stored under a different name."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    target = params[key]
    return any(other in state and p is target for other, p in params.items() if other != key)
