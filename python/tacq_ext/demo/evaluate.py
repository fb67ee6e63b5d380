"""Task accuracy of a (quantized) demo model: greedy decoding + the task's
scorer for generation tasks, the highest letter logit for multiple choice."""

from __future__ import annotations

from typing import List

import torch
from tqdm.auto import tqdm

from .tasks import Example, Task
from .tasks.facts import LETTERS
from .tokenizer import BOS, EOS, PAD, CharTokenizer


def _left_padded(tokenizer: CharTokenizer, prompts: List[str]):
    encoded = [[BOS] + tokenizer.encode(p) for p in prompts]
    length = max(map(len, encoded))
    ids = torch.full((len(encoded), length), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, length - len(e):] = torch.tensor(e)
        mask[row, length - len(e):] = 1
    return ids, mask


@torch.no_grad()
def greedy_generate(model, tokenizer: CharTokenizer, prompts: List[str], max_new_tokens: int,
                    stop_at_eos: bool = True) -> List[str]:
    ids, mask = _left_padded(tokenizer, prompts)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=PAD, eos_token_id=EOS if stop_at_eos else None,
                         min_new_tokens=0 if stop_at_eos else max_new_tokens)
    return [tokenizer.decode(row[ids.shape[1]:].tolist()) for row in out]


@torch.no_grad()
def choose_letters(model, tokenizer: CharTokenizer, prompts: List[str], max_new_tokens: int) -> List[str]:
    """For each prompt, greedy decoding up to the first `(` (the chosen
    value's option), then the letter A-D with the highest logit next; "" if
    no `(` comes within max_new_tokens."""
    ids, mask = _left_padded(tokenizer, prompts)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=PAD, eos_token_id=EOS, output_logits=True, return_dict_in_generate=True)
    generated = out.sequences[:, ids.shape[1]:].tolist()
    letter_ids = torch.tensor(tokenizer.encode(LETTERS))
    open_paren = tokenizer.encode("(")[0]
    letters = []
    for row, tokens in enumerate(generated):
        step = tokens.index(open_paren) + 1 if open_paren in tokens else len(out.logits)
        letters.append(LETTERS[int(out.logits[step][row, letter_ids].argmax())] if step < len(out.logits) else "")
    return letters


def task_accuracy(model, tokenizer: CharTokenizer, task: Task, examples: List[Example], batch_size: int = 16,
                  progress: bool = True) -> float:
    """Fraction of `examples` the model gets right (batches of <= 16 rows run
    QuantizedLinear's fused mixed_gemv while decoding)."""
    if not examples:
        raise ValueError(f"no {task.name} examples to evaluate")
    scorer = task.make_scorer() if task.kind == "generate" else None
    correct = 0
    for start in tqdm(range(0, len(examples), batch_size), desc=f"eval {task.name}", disable=not progress,
                      leave=False):
        batch = examples[start: start + batch_size]
        prompts = [ex.prompt for ex in batch]
        if task.kind == "choice":
            correct += sum(l == ex.meta["letter"] for l, ex in zip(choose_letters(model, tokenizer, prompts, task.max_new_tokens), batch))
        else:
            completions = greedy_generate(model, tokenizer, prompts, task.max_new_tokens)
            correct += sum(scorer(ex, c) for ex, c in zip(batch, completions))
    return correct / len(examples)
