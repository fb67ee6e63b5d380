"""RowSplitLinear: a linear layer whose rows are stored at different bit
widths (TACQConfig.wide_rows, docs/method.md): one QuantizedLinear part per
width, holding that width's rows in their original order, and `row_bits`
(uint8 [N]), each row's width. The output is the parts' outputs
concatenated and gathered back into the original row order."""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn

from . import ops
from .qlinear import QuantizedLinear


def part_rows(row_bits: torch.Tensor, bits: int) -> torch.Tensor:
    """Indices (int64, increasing) of the rows stored at `bits`."""
    return (row_bits == bits).nonzero().flatten()


def check_row_bits(where: str, row_bits: torch.Tensor, part_bits: List[int], part_rows_count: List[int]) -> None:
    """row_bits is a uint8 [N] vector whose widths are exactly the parts'
    widths, each part holding as many rows as row_bits gives it."""
    if row_bits.dtype != torch.uint8 or row_bits.dim() != 1:
        raise ValueError(f"{where}: row_bits must be a uint8 vector, got {row_bits.dtype} {list(row_bits.shape)}")
    counts = {b: int((row_bits == b).sum()) for b in part_bits}
    if sum(counts.values()) != row_bits.numel():
        others = sorted(set(row_bits.unique().tolist()) - set(part_bits))
        raise ValueError(f"{where}: row_bits holds widths {others} that no part stores (parts: {part_bits})")
    for b, n in zip(part_bits, part_rows_count):
        if counts[b] != n:
            raise ValueError(f"{where}: row_bits gives {counts[b]} rows {b} bits, the {b}-bit part holds {n}")


class RowSplitLinear(nn.Module):
    """y = x W^T + bias with W's rows split over `parts` (QuantizedLinear
    without bias, widths increasing). Buffers: row_bits uint8 [N], bias
    (optional). The gather index from the concatenated parts back to the
    original rows follows from row_bits: it is rebuilt when row_bits is
    assigned (loading) or the module moves, never in forward, so forward
    has no data-dependent shapes (torch.compile(fullgraph=True) takes it)."""

    def __init__(self, parts: List[QuantizedLinear], row_bits: torch.Tensor, bias: Optional[torch.Tensor] = None):
        super().__init__()
        if len({p.in_features for p in parts}) != 1 or any(p.bias is not None for p in parts):
            raise ValueError("RowSplitLinear: parts must share in_features and have no bias")
        widths = [p.bits for p in parts]
        if widths != sorted(set(widths)):
            raise ValueError(f"RowSplitLinear: part widths must be distinct and increasing, got {widths}")
        if not row_bits.is_meta:
            check_row_bits("RowSplitLinear", row_bits, widths, [p.out_features for p in parts])
        self.parts = nn.ModuleList(parts)
        self.in_features = parts[0].in_features
        self.out_features = sum(p.out_features for p in parts)
        self.register_buffer("row_bits", row_bits)
        self.register_buffer("bias", bias)
        self._refresh_gather()

    @classmethod
    def from_rows(cls, row_bits: torch.Tensor, make_part, bias: Optional[torch.Tensor]) -> "RowSplitLinear":
        """make_part(bits, rows) -> the QuantizedLinear of those rows (no bias)."""
        widths = sorted(int(b) for b in row_bits.unique())
        parts = [make_part(b, part_rows(row_bits, b)) for b in widths]
        return cls(parts, row_bits.to(torch.uint8).contiguous(),
                   None if bias is None else bias.detach().clone())

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "row_bits":
            self._refresh_gather()

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._refresh_gather()
        return out

    def _refresh_gather(self) -> None:
        """_gather, int64 [N]: the position in the concatenated parts' output
        of each row (None while row_bits is on the meta device)."""
        row_bits = self._buffers.get("row_bits")
        if row_bits is None or row_bits.is_meta or "parts" not in self._modules:
            self._gather = None
            return
        self._gather = torch.argsort(torch.cat([part_rows(row_bits, p.bits) for p in self.parts]))

    def gather_index(self) -> torch.Tensor:
        if self._gather is None:
            raise RuntimeError("RowSplitLinear: row_bits is still on the meta device; load the checkpoint first")
        return self._gather

    def dense_weight(self, dtype=torch.float32) -> torch.Tensor:
        return torch.cat([p.dense_weight(dtype) for p in self.parts])[self.gather_index()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        y = torch.cat([p(x2) for p in self.parts], dim=1)
        # torch's CPU gather along the last dimension walks elements one by one
        # (about 11 ms at 512 x 8192): tacq.gather_columns copies row by row
        gather = self.gather_index()
        y = ops.gather_columns(y, gather) if y.device.type == "cpu" else y.index_select(1, gather)
        bias = self._buffers["bias"]
        y = y if bias is None else y + bias.to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    @property
    def nnz(self) -> int:
        return sum(p.nnz for p in self.parts)

    def stored_bits(self) -> int:
        """Bits of every stored tensor but the bias: the parts' and row_bits."""
        return sum(p.stored_bits() for p in self.parts) + 8 * self.out_features

    def avg_bits(self) -> float:
        return self.stored_bits() / (self.out_features * self.in_features)

    def extra_repr(self) -> str:
        rows = ", ".join(f"{p.bits} bits: {p.out_features} rows" for p in self.parts)
        return f"in_features={self.in_features}, out_features={self.out_features}, {rows}"
