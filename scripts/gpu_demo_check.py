"""GPU check of the method on CUDA: quantize the demo model on the GPU through
the CLI, load the checkpoint on CPU and on CUDA, and compare their logits on
test prompts; then load it with from_pretrained on CUDA and decode with
generate() and a static KV cache, compiled as transformers compiles it by
default (CUDA graphs) and eagerly, comparing the two. Exit status 1 if logits
or decoding scores differ by more than the tolerance.

    python scripts/gpu_demo_check.py OUT_DIR            (needs CUDA)
    python scripts/gpu_demo_check.py OUT_DIR --dry-run  (CPU: the same steps, on the CPU)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def compiled_against_eager_decoding(model, prompt) -> dict:
    """Greedy decoding of `prompt` with a static KV cache, eager and compiled
    by generate() itself with transformers' default CompileConfig (on CUDA:
    fullgraph, mode "reduce-overhead", i.e. CUDA graphs; on the CPU the same
    config, allowed to compile there): the largest relative difference of the
    step scores and whether the tokens agree."""
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                  cache_implementation="static", output_scores=True, return_dict_in_generate=True)
    from transformers import CompileConfig

    eager = model.generate(prompt, disable_compile=True, **kwargs)
    config = CompileConfig()
    if prompt.device.type != "cuda":
        config._compile_all_devices = True  # what CUDA devices get by default
    compiled = model.generate(prompt, compile_config=config, **kwargs)
    worst = max(float((c - e).abs().max() / e.abs().max()) for c, e in zip(compiled.scores, eager.scores))
    return {"max_relative_score_difference": worst,
            "compiled_tokens_equal_eager": bool(torch.equal(compiled.sequences, eager.sequences))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for the checkpoint, the data files and demo_check.json")
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU instead of CUDA")
    parser.add_argument("--tolerance", type=float, default=2e-2, help="max |logit difference| / max |logit|")
    args = parser.parse_args(argv)

    from transformers import AutoConfig, AutoModelForCausalLM

    import tacq_ext
    from tacq_ext import cli
    from tacq_ext.demo.command import write_task_files
    from tacq_ext.demo.model import ASSET_DIR
    from tacq_ext.demo.tasks import load_split
    from tacq_ext.demo.tokenizer import BOS, CharTokenizer

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_demo_check: CUDA is not available (use --dry-run on a CPU machine)", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_task_files(out / "data", ["arith"], calib_size=32, test_size=8)
    checkpoint = out / f"demo_q_{device}"
    status = cli.main(["quantize", "--model", str(ASSET_DIR), "--calib", str(out / "data" / "arith_calib.jsonl"),
                       "--bits", "2", "--group-size", "64", "--method", "tacq", "--device", device,
                       "--out", str(checkpoint), "--quiet"])
    if status:
        return status

    def load(on):
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint))
        return tacq_ext.load_quantized(checkpoint, skeleton, device=on).eval()

    tokenizer = CharTokenizer.load(ASSET_DIR)
    prompts = [ex.prompt for ex in load_split("arith", "test", 4)]
    ids = [torch.tensor([[BOS] + tokenizer.encode(p)]) for p in prompts]
    on_cpu, on_device = load("cpu"), load(device)
    worst = 0.0
    with torch.no_grad():
        for x in ids:  # prompt-length inputs (dequantize path) and single tokens (mixed_gemv path)
            for chunk in (x, x[:, :1]):
                ref = on_cpu(input_ids=chunk).logits
                got = on_device(input_ids=chunk.to(device)).logits.cpu()
                worst = max(worst, float((got - ref).abs().max() / ref.abs().max()))
    # moved with .to(), not device_map=: the GPU image may lack accelerate
    decoding = compiled_against_eager_decoding(AutoModelForCausalLM.from_pretrained(checkpoint).to(device),
                                               ids[0].to(device))
    result = {"device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "max_relative_logit_difference": worst, **decoding, "tolerance": args.tolerance,
              "ok": max(worst, decoding["max_relative_score_difference"]) <= args.tolerance}
    (out / "demo_check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
