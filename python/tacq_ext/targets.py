"""Which nn.Linear layers of a model get quantized."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch.nn as nn

TargetFilter = Callable[[str, nn.Linear], bool]


def decoder_blocks(model: nn.Module) -> Optional[nn.ModuleList]:
    """The decoder blocks of a Hugging Face causal LM, if any: the `layers` of
    its text decoder, as `model.get_decoder()` names it (model.model for a
    Llama; model.model.language_model for a vision-language model such as
    Gemma 3, whose vision tower is then not a target), else model.model.layers."""
    for owner in (_text_decoder(model), getattr(model, "model", None)):
        layers = getattr(owner, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    return None


def _text_decoder(model: nn.Module) -> Optional[nn.Module]:
    get_decoder = getattr(model, "get_decoder", None)
    if not callable(get_decoder):
        return None
    try:
        return get_decoder()
    except (AttributeError, NotImplementedError):  # a model without the usual attribute names
        return None


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The qualified name of `module` inside `model`."""
    return next(name for name, m in model.named_modules() if m is module)


# The share of the decoder blocks' weights that may sit in matrices other than
# nn.Linear layers (a hybrid model's small convolutions) when the default
# targets are taken; more (the fused experts of transformers 5's MoE models,
# one [experts, out, in] tensor each) is an error: those weights would stay in
# full precision and the "quantized" model would be barely smaller.
UNQUANTIZED_MATRIX_SHARE = 0.01


def check_blocks_are_linear(model: nn.Module, blocks: nn.ModuleList) -> None:
    """ValueError if more than UNQUANTIZED_MATRIX_SHARE of the weights inside
    `blocks` are matrices (2 or more dimensions) not held by an nn.Linear."""
    inside = {id(m) for m in blocks.modules()}
    seen, total, other, owners = set(), 0, 0, []
    for name, module in model.named_modules():
        if id(module) not in inside:
            continue
        params = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in params)
        total += sum(p.numel() for p in params)
        matrices = 0 if isinstance(module, nn.Linear) else sum(p.numel() for p in params if p.dim() >= 2)
        if matrices:
            other += matrices
            owners.append((name, type(module).__name__))
    if total == 0 or other <= UNQUANTIZED_MATRIX_SHARE * total:
        return
    first, kind = owners[0]
    more = f" and {len(owners) - 1} more module(s)" if len(owners) > 1 else ""
    raise ValueError(
        f"{first} ({kind}){more} hold weight matrices that are not nn.Linear layers: "
        f"{100 * other / total:.1f} % of the decoder blocks' weights, which would stay in full precision. "
        "tacq_ext quantizes nn.Linear layers only (not, for example, the fused MoE experts of transformers 5); "
        "to quantize the blocks' nn.Linear layers alone, pass quantize_model "
        f"target_filter=lambda name, layer: name.startswith('{module_name(model, blocks)}.')")


def find_targets(model: nn.Module, target_filter: Optional[TargetFilter] = None) -> Dict[str, nn.Linear]:
    """Target linear layers by qualified name, in module order.

    Default: for a model with decoder blocks (decoder_blocks), every Linear
    inside them (attention and MLP projections; never embeddings or lm_head),
    and a ValueError if the blocks hold other weight matrices worth more than
    UNQUANTIZED_MATRIX_SHARE of their weights; otherwise every Linear except
    one named ``lm_head``."""
    blocks = decoder_blocks(model)
    inside = set()
    if blocks is not None:
        if target_filter is None:
            check_blocks_are_linear(model, blocks)
        inside = {id(m) for m in blocks.modules()}
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if target_filter is not None:
            keep = target_filter(name, module)
        elif blocks is not None:
            keep = id(module) in inside
        else:
            keep = name.split(".")[-1] != "lm_head"
        if keep:
            found[name] = module
    if not found:
        raise ValueError("model has no nn.Linear layers to quantize (target filter matched nothing)")
    return found


def targets_by_block(model: nn.Module, targets: Dict[str, nn.Linear]) -> Tuple[List[List[str]], List[str]]:
    """(names of the targets inside each decoder block, in block order; names
    of the targets outside every block). Without decoder blocks: ([], all)."""
    blocks = decoder_blocks(model)
    if blocks is None:
        return [], list(targets)
    per_block = []
    for block in blocks:
        ids = {id(m) for m in block.modules()}
        per_block.append([n for n, m in targets.items() if id(m) in ids])
    inside = {n for names in per_block for n in names}
    return per_block, [n for n in targets if n not in inside]


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
