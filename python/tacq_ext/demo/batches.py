"""Examples -> token batches: bos + prompt + answer + eos, right-padded, with
labels on the answer (and eos) only, or on everything for plain text."""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from .tasks import Example
from .tokenizer import BOS, EOS, PAD, CharTokenizer


def encode_example(tokenizer: CharTokenizer, example: Example, loss_on_prompt: bool = False):
    prompt = [BOS] + tokenizer.encode(example.prompt)
    answer = tokenizer.encode(example.answer) + [EOS]
    labels = (prompt if loss_on_prompt else [-100] * len(prompt)) + answer
    return prompt + answer, labels


def collate(encoded: Sequence[tuple]) -> Dict[str, torch.Tensor]:
    """[(ids, labels)] -> input_ids / attention_mask / labels, right-padded."""
    length = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), length), PAD, dtype=torch.long)
    labels = torch.full((len(encoded), length), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def calibration_batches(tokenizer: CharTokenizer, examples: List[Example], batch_size: int) -> List[dict]:
    """Answer-loss batches for quantize_model (the format of calib_data)."""
    encoded = [encode_example(tokenizer, ex) for ex in examples]
    return [collate(encoded[i: i + batch_size]) for i in range(0, len(encoded), batch_size)]
