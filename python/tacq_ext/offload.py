"""Decoder blocks kept off the compute device and onloaded one at a time, for
models whose weights do not fit it (docs/distributed.md, Larger than one device).

``load_offloaded(directory)`` builds a Hugging Face causal LM whose embeddings,
final norm and head are read at once, while each decoder block's parameters
stay in the model's safetensors files (memory-mapped) and are meta tensors in
the model. A block is read onto the device when its forward runs (hooks) or
while a pass holds it (``OffloadedBlocks.held``), and dropped when released,
so at most one block is resident at a time. quantize_model and
compute_saliency work block by block on such a model and never hold two.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from .targets import decoder_blocks, module_name

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class SafetensorsFiles:
    """The tensors of a Hugging Face model directory by name, read from its
    safetensors files when asked (sharded with an index, or one file)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self._open = {}
        index = self.directory / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{index} is not a safetensors index (no weight_map): {e}") from None
            self.file_of = {key: self.directory / file for key, file in weight_map.items()}
        elif (self.directory / SINGLE_FILE).is_file():
            single = self.directory / SINGLE_FILE
            self.file_of = {key: single for key in self._handle(single).keys()}
        else:
            raise FileNotFoundError(f"{self.directory} holds neither {INDEX_FILE} nor {SINGLE_FILE}: offloading "
                                    f"reads the blocks from a model's safetensors files")

    def _handle(self, path: Path):
        from safetensors import safe_open

        if path not in self._open:
            try:
                self._open[path] = safe_open(path, framework="pt")
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise ValueError(f"{path} could not be opened as a safetensors file: {e}") from None
        return self._open[path]

    def __contains__(self, key: str) -> bool:
        return key in self.file_of

    def read(self, key: str, like: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Tensor `key` on `device` in the dtype of `like`, whose shape it must have."""
        if key not in self.file_of:
            raise ValueError(f"{key!r} is in none of the safetensors files of {self.directory}")
        path = self.file_of[key]
        handle = self._handle(path)
        try:
            tensor = handle.get_tensor(key)
        except Exception as e:  # safetensors' own error types
            raise ValueError(f"{key!r} could not be read from {path}: {e}") from None
        if tuple(tensor.shape) != tuple(like.shape):
            raise ValueError(f"{key!r} in {path} has shape {tuple(tensor.shape)}, the model expects "
                             f"{tuple(like.shape)}")
        return tensor.to(device=device, dtype=like.dtype)


def _named_parameter_slots(module: nn.Module) -> List[Tuple[str, nn.Module, str]]:
    """(qualified name, owning module, attribute) of each parameter of `module`."""
    return [(f"{prefix}.{leaf}" if prefix else leaf, owner, leaf)
            for prefix, owner in module.named_modules() for leaf in list(owner._parameters)
            if owner._parameters[leaf] is not None]


def _set_parameter(owner: nn.Module, leaf: str, tensor: torch.Tensor) -> None:
    setattr(owner, leaf, nn.Parameter(tensor, requires_grad=False))


class OffloadedBlocks:
    """The decoder blocks of `model`, with parameters read by `read(name,
    like)` (name qualified in the model, like: the meta placeholder) onto
    `device` while a block is held, and meta placeholders otherwise.
    Installed as ``model.tacq_offload``. Block-level state that is not a
    parameter (buffers, quantized layers swapped in) stays where it is."""

    def __init__(self, model: nn.Module, read: Callable[[str, torch.Tensor], torch.Tensor],
                 device: torch.device, storage: torch.device = torch.device("cpu")):
        blocks = decoder_blocks(model)
        if blocks is None:
            raise ValueError("offloading needs a model with decoder blocks (the layers of model.get_decoder())")
        self.blocks = blocks
        self.prefix = module_name(model, blocks)
        self.read, self.device, self.storage = read, torch.device(device), torch.device(storage)
        self.holds = [0] * len(blocks)
        self.peak_resident = 0
        self.bypassed = False
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(self._pre_hook(i)))
            self.handles.append(block.register_forward_hook(self._post_hook(i), always_call=True))
        model.tacq_offload = self
        self.model = model

    def _pre_hook(self, i: int):
        def hook(module, args):
            if not self.bypassed:
                self._acquire(i)
        return hook

    def _post_hook(self, i: int):
        def hook(module, args, output):
            if not self.bypassed:
                self._release(i)
        return hook

    @property
    def resident(self) -> int:
        return sum(1 for h in self.holds if h > 0)

    def _acquire(self, i: int) -> None:
        if self.holds[i] == 0:
            for name, owner, leaf in _named_parameter_slots(self.blocks[i]):
                _set_parameter(owner, leaf, self.read(f"{self.prefix}.{i}.{name}", owner._parameters[leaf]))
        self.holds[i] += 1
        self.peak_resident = max(self.peak_resident, self.resident)

    def _release(self, i: int) -> None:
        self.holds[i] -= 1
        if self.holds[i] == 0:
            for _, owner, leaf in _named_parameter_slots(self.blocks[i]):
                p = owner._parameters[leaf]
                _set_parameter(owner, leaf, torch.empty(p.shape, dtype=p.dtype, device="meta"))

    @contextmanager
    def held(self, i: int) -> Iterator[None]:
        """Block i resident on the device for the duration."""
        self._acquire(i)
        try:
            yield
        finally:
            self._release(i)

    def block_of(self, name: str) -> Optional[int]:
        """The block holding the module or parameter `name` (qualified in the
        model), None outside the blocks."""
        head = self.prefix + "."
        return int(name[len(head):].split(".")[0]) if name.startswith(head) else None

    @contextmanager
    def replaced_forwards(self, forward_of: Callable[[int], Callable]) -> Iterator[None]:
        """Each block i runs forward_of(i) instead of its own forward, and
        nothing is onloaded meanwhile."""
        self.bypassed = True
        try:
            for i, block in enumerate(self.blocks):
                block.forward = forward_of(i)
            yield
        finally:
            for block in self.blocks:
                block.__dict__.pop("forward", None)
            self.bypassed = False

    def finish(self) -> None:
        """Every block resident for good and the hooks removed: afterwards the
        model is an ordinary one (after quantization its blocks hold small
        quantized layers and the remaining parameters, such as norms).
        peak_resident keeps the peak of the passes before."""
        peak = self.peak_resident
        for i in range(len(self.blocks)):
            if self.holds[i] == 0:
                self._acquire(i)
        self.peak_resident = peak
        for h in self.handles:
            h.remove()
        del self.model.tacq_offload


def passing_forward(as_tuple: bool, first: Optional[torch.Tensor] = None) -> Callable:
    """A block forward that returns `first` if given, else its own hidden
    input (as a 1-tuple if the real blocks return tuples)."""
    def forward(*args, **kwargs):
        h = first if first is not None else (args[0] if args else kwargs["hidden_states"])
        return (h,) if as_tuple else h
    return forward


def offload_of(model: nn.Module) -> Optional[OffloadedBlocks]:
    """The OffloadedBlocks installed on `model`, if any."""
    offload = getattr(model, "tacq_offload", None)
    return offload if isinstance(offload, OffloadedBlocks) else None


@contextmanager
def block_held(model: nn.Module, i: int) -> Iterator[None]:
    """Decoder block i of `model` resident while the context runs (a no-op
    unless the model is offloaded)."""
    offload = offload_of(model)
    if offload is None:
        yield
        return
    with offload.held(i):
        yield


def each_target_held(model: nn.Module, names: Iterable[str]) -> Iterator[str]:
    """Yields each target layer name with the decoder block holding it
    resident (for an offloaded model); names in model order read each block once."""
    offload = offload_of(model)
    with ExitStack() as stack:
        current = None
        for name in names:
            i = None if offload is None else offload.block_of(name)
            if i != current:
                stack.close()
                if i is not None:
                    stack.enter_context(offload.held(i))
                current = i
            yield name


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no memory)
    and their buffers for real, so tables a constructor derives from its
    arguments (rotary frequencies, embedding scales) are what from_pretrained
    builds. Not thread-safe: it swaps nn.Module.register_parameter meanwhile."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: Optional[nn.Parameter]) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def load_offloaded(directory, device="cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A Hugging Face causal LM from `directory` whose decoder blocks stay in
    its safetensors files until used (OffloadedBlocks); everything else is
    read onto `device` now. Never reads the network or unpickles."""
    from transformers import AutoConfig, AutoModelForCausalLM

    device = torch.device(device)
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    with _parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for _, owner, leaf in _named_parameter_slots(model):  # one set in _parameters directly, past the swap
        if not owner._parameters[leaf].is_meta:
            _set_parameter(owner, leaf, owner._parameters[leaf].to("meta"))
    files = SafetensorsFiles(directory)
    blocks = decoder_blocks(model)
    if blocks is None:
        raise ValueError(f"{directory}: offloading needs a model with decoder blocks "
                         "(the layers of model.get_decoder())")
    if any(b is not None for b in blocks.buffers()):
        raise ValueError(f"{directory}: its decoder blocks hold buffers, which offloading does not read; load the "
                         f"model with from_pretrained instead")
    inside = {id(m) for m in blocks.modules()}
    for name, owner, leaf in _named_parameter_slots(model):
        if id(owner) in inside:
            continue
        placeholder = owner._parameters[leaf]
        if name in files:
            _set_parameter(owner, leaf, files.read(name, placeholder, device))
    for prefix, owner in model.named_modules():  # built by the constructors; a stored one is read
        for leaf, buffer in owner._buffers.items():
            if buffer is not None:
                name = f"{prefix}.{leaf}" if prefix else leaf
                owner._buffers[leaf] = files.read(name, buffer, device) if name in files else buffer.to(device)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # a head tied to the embeddings is not stored separately
    missing = [name for name, owner, leaf in _named_parameter_slots(model)
               if (name not in files if id(owner) in inside else owner._parameters[leaf].is_meta)]
    if missing:
        raise ValueError(f"{directory}: {missing[:3]} are in none of its safetensors files; offloading reads "
                         "tensors by the model's own parameter names, so a checkpoint whose names from_pretrained "
                         "renames on load (e.g. Gemma 3's language_model.model.*) must be loaded whole")
    OffloadedBlocks(model, lambda name, like: files.read(name, like, device), device)
    return model.eval()
