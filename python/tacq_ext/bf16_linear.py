"""Bf16GemvLinear: the unquantized linears of a quantized model (the LM head
above all) decoded through ops.bf16_gemv on CPUs with AVX-512 BF16.

At one to a few rows torch's bf16 ``F.linear`` reads the weight well below
the memory bandwidth on such CPUs (docs/benchmarks.md, "The LM head"), and a
quantized model's LM head is a third to two thirds of the bytes each token
reads. The loaders (``load_quantized``, ``from_pretrained``) swap it in."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops
from .targets import set_module


# Under torch.compile the check runs once, when the graph is traced (a
# TACQ_CPU_ISA change afterwards reaches eager calls only).
@torch.compiler.assume_constant_result
def _kernel_available() -> bool:
    return ops.bf16_gemv_supported()


class Bf16GemvLinear(nn.Linear):
    """An nn.Linear (same parameters, state dict keys and weight tying) whose
    forward runs ops.bf16_gemv for bf16 x of at most MIXED_GEMV_MAX_ROWS (16)
    rows and a contiguous bf16 weight on a CPU with AVX-512 BF16, and ``F.linear`` for
    everything else. The bias, if any, is added to the bf16 result."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Bf16GemvLinear":
        """A Bf16GemvLinear holding ``linear``'s own weight and bias Parameters (no copy)."""
        with torch.device("meta"):
            layer = cls(linear.in_features, linear.out_features, bias=False)
        layer.weight = linear.weight
        layer.bias = linear.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (x.dtype == torch.bfloat16 and w.dtype == torch.bfloat16 and x.device.type == "cpu"
                and w.device.type == "cpu" and x.dim() >= 1 and math.prod(x.shape[:-1]) <= ops.MIXED_GEMV_MAX_ROWS
                and w.is_contiguous() and _kernel_available()):
            y = ops.bf16_gemv(x, w)
            return y if self.bias is None else y + self.bias
        return F.linear(x, w, self.bias)


def use_bf16_gemv(model: nn.Module) -> int:
    """Replaces every plain nn.Linear of ``model`` (not subclasses, not
    quantized layers) by a Bf16GemvLinear sharing its Parameters; returns how
    many (``model`` itself is left as it is). Harmless where the kernel does
    not apply: those calls take F.linear."""
    linears = [(name, m) for name, m in model.named_modules() if name and type(m) is nn.Linear]
    for name, linear in linears:
        set_module(model, name, Bf16GemvLinear.from_linear(linear))
    return len(linears)
