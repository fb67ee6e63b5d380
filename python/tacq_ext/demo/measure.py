"""Size and decoding speed of a (quantized) demo model."""

from __future__ import annotations

import statistics
import time
from typing import List, Tuple

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


def _round_tokens_per_second(model, tokenizer: CharTokenizer, prompts: List[str], new_tokens: int) -> float:
    """One round: greedy decoding one prompt at a time (batch 1: QuantizedLinear
    runs mixed_gemv on one row), always `new_tokens` per prompt; generated
    tokens per wall-clock second over all prompts."""
    start = time.perf_counter()
    for prompt in prompts:
        greedy_generate(model, tokenizer, [prompt], new_tokens, stop_at_eos=False)
    return len(prompts) * new_tokens / (time.perf_counter() - start)


def _warm_up(model, tokenizer: CharTokenizer, prompts: List[str]) -> None:
    greedy_generate(model, tokenizer, prompts[:1], 2, stop_at_eos=False)


def decode_tokens_per_second(model, tokenizer: CharTokenizer, prompts: List[str], new_tokens: int = 32,
                             rounds: int = 1) -> float:
    """Decoding speed of `model` (see _round_tokens_per_second), the median of
    `rounds` rounds after a warm-up."""
    _warm_up(model, tokenizer, prompts)
    return statistics.median(_round_tokens_per_second(model, tokenizer, prompts, new_tokens) for _ in range(rounds))


def decode_speed_against(model, reference, tokenizer: CharTokenizer, prompts: List[str], new_tokens: int = 32,
                         rounds: int = 5) -> Tuple[float, float]:
    """(tokens/s of `model`, its speed relative to `reference`): rounds of the
    two alternate, so that a shared machine's drift hits both alike; the
    median of model's rounds, and the median of the per-round ratios."""
    _warm_up(model, tokenizer, prompts)
    _warm_up(reference, tokenizer, prompts)
    speeds, ratios = [], []
    for _ in range(rounds):
        speeds.append(_round_tokens_per_second(model, tokenizer, prompts, new_tokens))
        ratios.append(speeds[-1] / _round_tokens_per_second(reference, tokenizer, prompts, new_tokens))
    return statistics.median(speeds), statistics.median(ratios)
