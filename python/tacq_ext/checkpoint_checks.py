"""Integrity checks of a quantized checkpoint (docs/format.md): the weights
file's sha256 and size against tacq_config.json, and every tensor of a
quantized layer against the layer's shape, bits and group size, so a damaged
or hand-edited checkpoint fails with an error naming the layer and tensor
instead of computing garbage or reading out of bounds."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict

import torch

from .qlinear import FORMAT_DTYPES, QUANTIZED_TENSORS, format_shapes

_CHUNK = 1 << 24


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(path: Path, expected_bytes, expected_sha256) -> None:
    """The file is the one tacq_config.json describes: same size, same sha256."""
    if not isinstance(expected_sha256, str) or not isinstance(expected_bytes, int):
        raise ValueError(f"{path.parent / 'tacq_config.json'}: missing 'weights_sha256' / 'weights_bytes'; "
                         "cannot verify the weights file")
    size = path.stat().st_size
    if size != expected_bytes:
        raise ValueError(f"{path} is truncated or corrupted: {size} bytes, tacq_config.json says {expected_bytes}")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise ValueError(f"{path} is corrupted or belongs to another checkpoint: its sha256 is {actual}, "
                         f"tacq_config.json says {expected_sha256}")


def _fail(layer: str, tensor: str, msg: str):
    raise ValueError(f"checkpoint layer {layer!r}, tensor {tensor!r}: {msg}")


def _expect(layer: str, tensors: Dict[str, torch.Tensor], name: str, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    if name not in tensors:
        _fail(layer, name, "missing from the weights file")
    t = tensors[name]
    if t.dtype != dtype:
        _fail(layer, name, f"dtype must be {dtype}, got {t.dtype}")
    if tuple(t.shape) != shape:
        _fail(layer, name, f"shape must be {list(shape)}, got {list(t.shape)}")
    return t


_SPEC_FIELDS = ("in_features", "out_features", "bits", "group_size", "nnz")


def check_layer_spec(layer: str, spec) -> None:
    """A layer's tacq_config.json entry: the fields QuantizedLinear is built from."""
    if not isinstance(spec, dict):
        raise ValueError(f"tacq_config.json: layer {layer!r} must be an object, got {type(spec).__name__}")
    for field in _SPEC_FIELDS:
        if not isinstance(spec.get(field), int) or isinstance(spec.get(field), bool):
            raise ValueError(f"tacq_config.json: layer {layer!r} needs an integer {field!r}, got {spec.get(field)!r}")
    if not isinstance(spec.get("bias"), bool):
        raise ValueError(f"tacq_config.json: layer {layer!r} needs a boolean 'bias', got {spec.get('bias')!r}")
    if spec["bits"] not in (2, 3, 4):
        raise ValueError(f"tacq_config.json: layer {layer!r} has bits {spec['bits']}, expected 2, 3 or 4")
    K, gs = spec["in_features"], spec["group_size"]
    if K < 1 or spec["out_features"] < 1 or spec["nnz"] < 0:
        raise ValueError(f"tacq_config.json: layer {layer!r} has a non-positive size or negative nnz")
    if gs not in (-1, K) and (gs <= 0 or gs % 32 or K % gs):
        raise ValueError(f"tacq_config.json: layer {layer!r} has group_size {gs}, which does not divide "
                         f"in_features = {K} in multiples of 32")


def check_quantized_layer(layer: str, spec: dict, tensors: Dict[str, torch.Tensor]) -> None:
    """tensors: the layer's entries (packed, scale, zero, row_ptr, col_idx,
    values, bias) by short name; spec: its tacq_config.json entry, checked
    by check_layer_spec."""
    N, K, bits, nnz = spec["out_features"], spec["in_features"], spec["bits"], spec["nnz"]
    G = 1 if spec["group_size"] in (-1, K) else K // spec["group_size"]
    shapes = format_shapes(N, K, bits, G, nnz)
    t = {name: _expect(layer, tensors, name, dtype, shapes[name])
         for name, dtype in zip(QUANTIZED_TENSORS, FORMAT_DTYPES)}
    scale, zero = t["scale"].float(), t["zero"].float()
    if not bool((torch.isfinite(scale) & (scale > 0)).all()):
        _fail(layer, "scale", "every scale must be finite and > 0")
    if not bool((zero == zero.round()).all() and (zero >= 0).all() and (zero <= 2**bits - 1).all()):
        _fail(layer, "zero", f"every zero must be an integer in [0, {2**bits - 1}]")
    row_ptr, col_idx, values = t["row_ptr"].long(), t["col_idx"].long(), t["values"]
    if int(row_ptr[0]) != 0 or int(row_ptr[-1]) != nnz:
        _fail(layer, "row_ptr", f"must start at 0 and end at nnz = {nnz}, got {int(row_ptr[0])} .. {int(row_ptr[-1])}")
    counts = row_ptr[1:] - row_ptr[:-1]
    if bool((counts < 0).any()):
        row = int((counts < 0).nonzero()[0])
        _fail(layer, "row_ptr", f"must be non-decreasing; row {row} has {int(counts[row])} entries")
    if nnz:
        if bool(((col_idx < 0) | (col_idx >= K)).any()):
            j = int(((col_idx < 0) | (col_idx >= K)).nonzero()[0])
            _fail(layer, "col_idx", f"column index {int(col_idx[j])} at position {j} is outside [0, {K})")
        row_of = torch.repeat_interleave(torch.arange(N, device=counts.device), counts, output_size=nnz)
        same_row = row_of[1:] == row_of[:-1]
        unsorted = same_row & (col_idx[1:] <= col_idx[:-1])
        if bool(unsorted.any()):
            j = int(unsorted.nonzero()[0])
            _fail(layer, "col_idx", f"row {int(row_of[j])} is not strictly increasing "
                                    f"({int(col_idx[j])} then {int(col_idx[j + 1])})")
        if not bool(torch.isfinite(values).all()):
            _fail(layer, "values", "every kept weight must be finite")
    if spec["bias"]:
        check_bias(layer, tensors, N)


def check_bias(layer: str, tensors: Dict[str, torch.Tensor], N: int) -> None:
    if "bias" not in tensors:
        _fail(layer, "bias", "missing from the weights file")
    bias = tensors["bias"]
    if not bias.is_floating_point() or tuple(bias.shape) != (N,):
        _fail(layer, "bias", f"must be a float tensor of shape [{N}], got {bias.dtype} {list(bias.shape)}")


def check_row_split_spec(layer: str, spec, layers: dict) -> None:
    """A row split's tacq_config.json entry: its parts are entries of
    `layers` named <layer>.parts.<i>, without bias, of the split's
    in_features and of increasing widths, whose rows add up to out_features."""
    where = f"tacq_config.json: row split {layer!r}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object, got {type(spec).__name__}")
    for field in ("in_features", "out_features"):
        if not isinstance(spec.get(field), int) or isinstance(spec.get(field), bool) or spec[field] < 1:
            raise ValueError(f"{where} needs a positive integer {field!r}, got {spec.get(field)!r}")
    if not isinstance(spec.get("bias"), bool):
        raise ValueError(f"{where} needs a boolean 'bias', got {spec.get('bias')!r}")
    parts = spec.get("parts")
    if not isinstance(parts, list) or not parts or parts != [f"{layer}.parts.{i}" for i in range(len(parts))]:
        raise ValueError(f"{where}: 'parts' must list {layer}.parts.0, {layer}.parts.1, ..., got {parts!r}")
    missing = [p for p in parts if p not in layers]
    if missing:
        raise ValueError(f"{where}: its part {missing[0]!r} is not among the quantized layers")
    specs = [layers[p] for p in parts]
    if any(p["in_features"] != spec["in_features"] or p["bias"] for p in specs):
        raise ValueError(f"{where}: every part must have in_features {spec['in_features']} and no bias")
    widths = [p["bits"] for p in specs]
    if widths != sorted(set(widths)):
        raise ValueError(f"{where}: the parts' bits must be distinct and increasing, got {widths}")
    if sum(p["out_features"] for p in specs) != spec["out_features"]:
        raise ValueError(f"{where}: its parts hold {sum(p['out_features'] for p in specs)} rows, "
                         f"out_features is {spec['out_features']}")
