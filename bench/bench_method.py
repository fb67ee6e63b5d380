"""Method-level costs (issue 5), on a randomly initialised Llama-shaped model:

1. saliency collection for one batch vs one training step (forward + backward)
   of the same model on the same batch: time, and peak memory above the
   model's own (the training step's weight gradients excluded, as the issue asks);
2. a whole quantize_model run with its time per stage.

    python bench/bench_method.py              # ~100M parameters, 32 x 256 tokens
    python bench/bench_method.py --quick      # tiny model, smoke run
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import tacq_ext  # noqa: E402
from tacq_ext.saliency import accumulate_gradient_stats, default_loss  # noqa: E402
from tacq_ext.targets import find_targets  # noqa: E402


def model_config(quick: bool) -> LlamaConfig:
    if quick:
        return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2)
    return LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                       num_attention_heads=12, num_key_value_heads=4)


def batches(cfg: LlamaConfig, samples: int, tokens: int, batch_size: int):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(samples // batch_size):
        ids = torch.randint(0, cfg.vocab_size, (batch_size, tokens), generator=g)
        labels = ids.clone()
        labels[:, : tokens // 2] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def peak_rss_during(fn):
    """(seconds, growth of the process's peak RSS in bytes) of fn()."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    cfg = model_config(args.quick)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    params = sum(p.numel() for p in model.parameters())
    samples, tokens, bs = (8, 64, 4) if args.quick else (32, 256, 4)
    calib = batches(cfg, samples, tokens, bs)
    targets = find_targets(model)
    lines = [f"model: Llama-shaped, {params / 1e6:.1f}M parameters, {len(targets)} target layers; "
             f"calibration {samples} x {tokens} tokens, batch {bs}; threads {torch.get_num_threads()}"]

    # Saliency vs a training step, same batch. Saliency first: peak RSS only grows.
    batch = calib[0]
    accumulate_gradient_stats(model, [batch], targets, progress=False)  # warm-up
    t_sal, mem_sal = peak_rss_during(lambda: accumulate_gradient_stats(model, [batch], targets, progress=False))

    def train_step():
        model.zero_grad(set_to_none=True)
        default_loss(model, batch).backward()

    train_step()
    t_train = min(peak_rss_during(train_step)[0] for _ in range(2))
    grads = sum(p.numel() * 4 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    lines.append(f"saliency batch: {t_sal:.2f}s vs training step {t_train:.2f}s -> {t_sal / t_train:.2f}x "
                 f"(goal <= 2.5x); peak RSS growth during saliency {mem_sal / 2**20:.0f} MiB; "
                 f"weight gradients of a training step: {grads / 2**20:.0f} MiB (never allocated by saliency)")

    t0 = time.perf_counter()
    report = tacq_ext.quantize_model(model, calib, tacq_ext.TACQConfig(bits=2, ratio=0.0035), progress=True)
    lines.append(f"quantize_model (tacq, 2-bit, ratio 0.0035): {time.perf_counter() - t0:.1f}s total; stages: "
                 + ", ".join(f"{k} {v:.1f}s" for k, v in report.stage_seconds.items())
                 + f"; kept {report.kept}; avg bits {report.avg_bits:.3f}")
    text = "\n".join(lines)
    print(text)
    name = "cpu-method-quick" if args.quick else "cpu-method"
    out = common.RESULTS_DIR / f"{name}.md"
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    info = common.machine_info("cpu")
    out.write_text(f"# {name}\n\nCommand: `python bench/bench_method.py{' --quick' if args.quick else ''}`\n\n"
                   + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n" + text + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
