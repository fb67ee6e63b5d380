"""Per-layer costs behind the Llama-3-70B plan in docs/distributed.md,
measured on this CPU at Llama-3-70B shapes scaled down by `--scale` in every
dimension (default 4: hidden 2048, MLP 7168, 16 query / 2 key-value heads of
128), one thread:

- gptq: gptq_quantize of each projection of a block (2048 calibration tokens
  for the Hessian), the fp64 factorization of H^-1 (hessian_inverse_factor)
  timed on its own, and the rest per column;
- saliency: one calibration batch (4 x 256 tokens) through accumulate_gradient_stats
  on a one-block model of those shapes, against a plain forward of the same batch;
  FLOPs 6 x (block parameters) per token (forward, input-gradient backward,
  per-sample gradients).

Writes bench/results/layer-costs-cpu.{md,json}. The scaling to 8 x H100 is
worked out in docs/distributed.md.

    python bench/layer_costs.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tacq_ext.gptq import gptq_quantize, hessian_inverse_factor  # noqa: E402
from tacq_ext.saliency import accumulate_gradient_stats, default_loss  # noqa: E402
from tacq_ext.targets import find_targets  # noqa: E402

HIDDEN, MLP, HEADS, KV_HEADS, HEAD_DIM = 8192, 28672, 64, 8, 128  # Llama-3-70B


def block_shapes(scale: int) -> dict:
    h, m, kv = HIDDEN // scale, MLP // scale, KV_HEADS * HEAD_DIM // scale
    return {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h),
            "gate_proj": (m, h), "up_proj": (m, h), "down_proj": (h, m)}


def time_gptq(shapes: dict, tokens: int) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, (N, K) in shapes.items():
        X = torch.randn(tokens, K, generator=g)
        H = 2.0 / tokens * X.T @ X
        W = torch.randn(N, K, generator=g) * 0.02
        t0 = time.perf_counter()
        hessian_inverse_factor(H, 0.01)
        t1 = time.perf_counter()
        gptq_quantize(W, H, 2)
        t2 = time.perf_counter()
        out[name] = {"N": N, "K": K, "seconds": t2 - t1, "factor_seconds": t1 - t0, "flops": float(N * K * K + K**3)}
    return out


def time_saliency(scale: int, batch: int, tokens: int) -> dict:
    cfg = LlamaConfig(vocab_size=1024, hidden_size=HIDDEN // scale, intermediate_size=MLP // scale,
                      num_hidden_layers=1, num_attention_heads=HEADS // scale,
                      num_key_value_heads=max(1, KV_HEADS // scale), head_dim=HEAD_DIM)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (batch, tokens))
    labels = ids.clone()
    labels[:, : tokens // 2] = -100
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    targets = find_targets(model)
    params = sum(m.weight.numel() for m in targets.values())
    accumulate_gradient_stats(model, [b], targets, progress=False)  # warm-up
    t0 = time.perf_counter()
    accumulate_gradient_stats(model, [b], targets, progress=False)
    saliency = time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        default_loss(model, b)
        forward = time.perf_counter() - t0
    return {"block_parameters": params, "tokens": batch * tokens, "seconds": saliency,
            "forward_seconds": forward, "flops": 6.0 * params * batch * tokens}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shapes = block_shapes(args.scale)
    gptq = time_gptq(shapes, tokens=2048)
    saliency = time_saliency(args.scale, batch=4, tokens=256)
    info = common.machine_info("cpu")
    command = "python bench/layer_costs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"command": command, "machine": info, "scale": args.scale, "gptq": gptq, "saliency": saliency}
    (common.RESULTS_DIR / "layer-costs-cpu.json").write_text(json.dumps(result, indent=1))
    lines = ["# layer-costs-cpu", "", f"Command: `{command}`", ""] + [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", f"Llama-3-70B block shapes / {args.scale}, 1 thread.", "",
              "| GPTQ layer | N x K | seconds | of which the fp64 factorization | rest per column | N K^2 + K^3 |",
              "|---|---|---|---|---|---|"]
    for name, r in gptq.items():
        lines.append(f"| {name} | {r['N']}x{r['K']} | {r['seconds']:.2f} | {r['factor_seconds']:.2f} | "
                     f"{(r['seconds'] - r['factor_seconds']) / r['K'] * 1e3:.3f} ms | {r['flops']:.3g} |")
    s = saliency
    lines += ["", "| saliency, one block | tokens | seconds | forward only | 6 P T FLOP | GFLOP/s |",
              "|---|---|---|---|---|---|",
              f"| {s['block_parameters'] / 1e6:.1f}M targeted parameters | {s['tokens']} | {s['seconds']:.2f} | "
              f"{s['forward_seconds']:.2f} | {s['flops']:.3g} | {s['flops'] / s['seconds'] / 1e9:.1f} |"]
    (common.RESULTS_DIR / "layer-costs-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
