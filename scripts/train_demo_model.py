#!/usr/bin/env python
"""Trains the demo Llama shipped in python/tacq_ext/assets/demo_llama on the
training splits of the three demo tasks, then records its full-precision test
accuracy beside it (fp_accuracy.json). Seeded: the same command gives the same
checkpoint on the same machine and torch version.

    PYTHONPATH=python python scripts/train_demo_model.py --seed 0 --out python/tacq_ext/assets/demo_llama
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from pathlib import Path

import torch

from tacq_ext.calib_data import collate, encode_example
from tacq_ext.demo.evaluate import task_accuracy
from tacq_ext.demo.model import ACCURACY_FILE, demo_config
from tacq_ext.demo.tasks import TASKS, Example, load_split, split_of
from tacq_ext.demo.tasks import facts, sql
from tacq_ext.demo.tokenizer import BOS, EOS, CharTokenizer

# What each training batch is drawn from, and how often.
MIXTURE = {"arith": 0.35, "sql": 0.2, "facts": 0.25, "facts open book": 0.07, "facts statements": 0.13}


def training_stream(task: str, seed: int):
    """Endless training instances (training split only) of one source."""
    if task == "facts statements":
        rng, texts = random.Random(seed), facts.statements()
        while True:
            yield Example("", rng.choice(texts)), True
    instances = (facts.open_book_stream(seed) if task == "facts open book" else
                 sql.stream(seed, made_up_slots=True) if task == "sql" else TASKS[task].stream(seed))
    for ex in instances:
        if split_of(ex.prompt) == "train":
            yield ex, False


def dev_accuracy(model, tokenizer, n: int) -> str:
    """Accuracy on the calibration split (never the test split), to watch training."""
    model.eval()
    return " ".join(f"{name} {task_accuracy(model, tokenizer, task, load_split(name, 'calib', n), progress=False):.2f}"
                    for name, task in TASKS.items())


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-size", type=int, default=100, help="test examples per task for fp_accuracy.json")
    p.add_argument("--dev-every", type=int, default=1000,
                   help="print accuracy on --dev-size calibration-split examples per task every this many steps (0: never)")
    p.add_argument("--dev-size", type=int, default=32)
    p.add_argument("--out", required=True, help="checkpoint directory")
    return p.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from transformers import LlamaForCausalLM

    tokenizer = CharTokenizer()
    model = LlamaForCausalLM(demo_config(hidden=args.hidden, layers=args.layers, intermediate=args.intermediate))
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters")
    rng = random.Random(args.seed)
    streams = {name: training_stream(name, args.seed + i) for i, name in enumerate(MIXTURE)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    start, running = time.time(), {}
    model.train()
    for step in range(1, args.steps + 1):
        source = rng.choices(list(MIXTURE), weights=list(MIXTURE.values()))[0]
        batch = collate([encode_example(ex, tokenizer, bos_token_id=BOS, eos_token_id=EOS, loss_on_prompt=full)
                         for ex, full in itertools.islice(streams[source], args.batch_size)])
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running[source] = 0.9 * running.get(source, loss.item()) + 0.1 * loss.item()
        if step % 100 == 0 or step == args.steps:
            losses = " ".join(f"{name} {value:.3f}" for name, value in running.items())
            print(f"step {step} loss: {losses} ({time.time() - start:.0f}s)", flush=True)
        if args.dev_every and step % args.dev_every == 0 and step < args.steps:
            print(f"step {step} calib accuracy: {dev_accuracy(model, tokenizer, args.dev_size)}", flush=True)
            model.train()
    model.eval()
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save(out)
    accuracy = {name: task_accuracy(model, tokenizer, task, load_split(name, "test", args.eval_size))
                for name, task in TASKS.items()}
    record = {"test_examples_per_task": args.eval_size, "accuracy": accuracy, "seed": args.seed,
              "steps": args.steps, "parameters": params, "train_seconds": round(time.time() - start)}
    (out / ACCURACY_FILE).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
