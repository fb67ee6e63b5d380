"""Size and decoding speed of a (quantized) demo model."""

from __future__ import annotations

import statistics
import time
from typing import List

import torch

from .evaluate import greedy_generate
from .tokenizer import CharTokenizer


def stored_megabytes(model: torch.nn.Module) -> float:
    """MB (1e6 bytes) of every tensor in the state dict, each storage once:
    what save_quantized (or save_pretrained for the fp32 model) writes."""
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total / 1e6


def decode_tokens_per_second(model, tokenizer: CharTokenizer, prompts: List[str], new_tokens: int = 32,
                             rounds: int = 1) -> float:
    """Greedy decoding one prompt at a time (batch 1: QuantizedLinear runs
    mixed_gemv on one row), always `new_tokens` per prompt; generated tokens
    per wall-clock second over all prompts, the median of `rounds` rounds."""
    greedy_generate(model, tokenizer, prompts[:1], 2, stop_at_eos=False)  # warm-up
    speeds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for prompt in prompts:
            greedy_generate(model, tokenizer, [prompt], new_tokens, stop_at_eos=False)
        speeds.append(len(prompts) * new_tokens / (time.perf_counter() - start))
    return statistics.median(speeds)
