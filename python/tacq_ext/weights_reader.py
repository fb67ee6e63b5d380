"""Reading a checkpoint's weights file (safetensors, verified first by the
loaders): the quantized layers straight into their stored-layer buffers.

safetensors maps the file and hands out tensors backed by the mapping;
copying such a tensor into a buffer of our own leaves the pages it read
resident in the process for as long as any tensor keeps the mapping (the
embeddings do), so the model would be counted twice. The quantized layers'
tensors are therefore read with plain file reads, each into its place in its
layer's buffer (docs/format.md, "In memory: the stored layer"), which
QuantizedLinear.consolidate then adopts as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import torch
from safetensors import SafetensorError, safe_open

from . import ops
from .checkpoint_checks import check_quantized_layer
from .qlinear import FORMAT_DTYPES, QUANTIZED_TENSORS, format_shapes, stored_views

_DTYPES = {"I32": torch.int32, "F16": torch.float16}  # the format tensors' dtypes, as safetensors names them


def _corrupted(weights: Path, detail) -> ValueError:
    return ValueError(f"{weights} is corrupted or truncated: {detail}")


def open_weights(weights: Path, device="cpu"):
    """safe_open of a weights file, its errors as "corrupted or truncated"."""
    try:
        return safe_open(str(weights), framework="pt", device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise _corrupted(weights, e) from None


def get_tensor(f, weights: Path, key: str) -> torch.Tensor:
    try:
        return f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as e:
        raise _corrupted(weights, e) from None


def _header(weights: Path):
    """(the safetensors header, the offset of its data in the file)."""
    try:
        with open(weights, "rb") as raw:
            length = int.from_bytes(raw.read(8), "little")
            return json.loads(raw.read(length)), 8 + length
    except (OSError, ValueError) as e:
        raise _corrupted(weights, e) from None


def _read_into(raw, target: memoryview) -> int:
    """Bytes read into `target` from the unbuffered file `raw`: until it is
    full or the file ends (one read returns at most about 2 GiB on Linux)."""
    done = 0
    while done < len(target):
        n = raw.readinto(target[done:])
        if not n:
            break
        done += n
    return done


def _read_stored(raw, weights: Path, header: dict, data_start: int, name: str, spec: dict, device):
    """{short name: view} of the layer's stored-layer buffer on `device`
    with its six tensors read into place (on the CPU, then moved), or None
    when the file's entries do not have the format's dtypes and shapes (the
    caller then reads them as safetensors gives them, and the checks name
    what is wrong)."""
    N, K, bits, nnz = spec["out_features"], spec["in_features"], spec["bits"], spec["nnz"]
    G = ops.check_group_size("checkpoint", spec["group_size"], K)
    shapes = format_shapes(N, K, bits, G, nnz)
    entries = {k: header.get(f"{name}.{k}") for k in QUANTIZED_TENSORS}
    for (k, entry), dtype in zip(entries.items(), FORMAT_DTYPES):
        if not isinstance(entry, dict) or _DTYPES.get(entry.get("dtype")) != dtype or \
                tuple(entry.get("shape", ())) != shapes[k]:
            return None
    layout = ops.stored_layout(N, K, bits, G, nnz)
    stored = torch.empty(layout["bytes"], dtype=torch.uint8, device="cpu")  # also inside a meta-device context
    views = stored_views(stored, layout, shapes)
    file_bytes = stored.numpy()
    for k, entry in entries.items():
        begin, end = entry["data_offsets"]
        size = views[k].numel() * views[k].element_size()
        if end - begin != size:
            raise _corrupted(weights, f"tensor {name}.{k} spans {end - begin} bytes, its shape {size}")
        raw.seek(data_start + begin)
        if _read_into(raw, memoryview(file_bytes[layout[k]:layout[k] + size])) != size:
            raise _corrupted(weights, f"tensor {name}.{k} ends past the end of the file")
    return views if torch.device(device).type == "cpu" else stored_views(stored.to(device), layout, shapes)


def read_quantized_layers(f, weights: Path, config: dict, device) -> Dict[str, torch.Tensor]:
    """{name: tensor} of every quantized layer's six tensors, checked
    (check_quantized_layer) and, one layer at a time, read into its
    stored-layer buffer on `device`: views of it. `f` is the open file
    (safe_open), for the entries not in the format's dtypes and shapes."""
    header, data_start = _header(weights)
    present = set(f.keys())
    state = {}
    with open(weights, "rb", buffering=0) as raw:
        for name, spec in config["layers"].items():
            views = _read_stored(raw, weights, header, data_start, name, spec, device)
            if views is None:
                views = {k: get_tensor(f, weights, f"{name}.{k}") for k in QUANTIZED_TENSORS
                         if f"{name}.{k}" in present}
            bias = {"bias": get_tensor(f, weights, f"{name}.bias")} if f"{name}.bias" in present else {}
            check_quantized_layer(name, spec, {**views, **bias})
            state.update({f"{name}.{k}": v for k, v in views.items()})
    return state


def read_checkpoint_tensors(weights: Path, config: dict, device, keys=None) -> Dict[str, torch.Tensor]:
    """{name: tensor} of a verified weights file on `device`: every quantized
    layer's six tensors as read_quantized_layers gives them, and the other
    entries (only those in `keys`, when given) as safetensors stores them."""
    with open_weights(weights, device) as f:
        state = read_quantized_layers(f, weights, config, device)
        for key in f.keys():
            if key not in state and (keys is None or key in keys):
                state[key] = get_tensor(f, weights, key)
    return state
