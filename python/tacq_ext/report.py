"""What quantize_model did: per layer and in total."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Dict, List


@dataclass
class LayerReport:
    name: str
    shape: tuple            # (N, K)
    kept: int               # weights kept in fp16
    avg_bits: float         # docs/method.md, Average bits
    error: float            # ||W_q - W||_F / ||W||_F


@dataclass
class QuantizationReport:
    method: str
    bits: int
    group_size: int
    ratio: float
    layers: List[LayerReport] = field(default_factory=list)
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int = 0

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def parameters(self) -> int:
        return sum(layer.shape[0] * layer.shape[1] for layer in self.layers)

    @property
    def avg_bits(self) -> float:
        total = self.parameters
        return sum(l.avg_bits * l.shape[0] * l.shape[1] for l in self.layers) / total if total else 0.0

    @contextmanager
    def stage(self, name: str):
        """Adds the time spent inside the block to stage_seconds[name]."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - t0

    def summary(self) -> dict:
        return {"method": self.method, "bits": self.bits, "group_size": self.group_size,
                "ratio": self.ratio, "kept": self.kept, "parameters": self.parameters,
                "avg_bits": self.avg_bits, "stage_seconds": self.stage_seconds,
                "peak_memory_bytes": self.peak_memory_bytes,
                "layers": [asdict(layer) for layer in self.layers]}

    def table(self) -> str:
        lines = [f"{'layer':<40} {'shape':>12} {'kept':>8} {'avg bits':>9} {'rel err':>8}"]
        for l in self.layers:
            lines.append(f"{l.name:<40} {l.shape[0]:>5}x{l.shape[1]:<6} {l.kept:>8} {l.avg_bits:>9.3f} {l.error:>8.4f}")
        lines.append(f"{'total':<40} {'':>12} {self.kept:>8} {self.avg_bits:>9.3f}")
        lines.append("stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.stage_seconds.items()))
        return "\n".join(lines)
