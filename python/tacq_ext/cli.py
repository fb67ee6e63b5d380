"""The `tacq` command line: quantize a local Hugging Face model, evaluate it,
and inspect a quantized checkpoint. Subcommands register in commands.COMMANDS.

    tacq quantize --model DIR --calib FILE --bits 2 --ratio 0.0035 --method tacq --out QDIR
    tacq eval [--model DIR] [--quantized QDIR] --data FILE
    tacq info QDIR
    tacq demo [--full] [--out DIR]

quantize and eval take --device (default cpu) and --dtype (default float32).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path
from typing import Tuple

import torch

from .commands import COMMANDS, command
from .distributed import RankFailed
from .demo import command as _demo_command  # noqa: F401  (registers `tacq demo`)
from . import sweep_command as _sweep_command  # noqa: F401  (registers `tacq sweep`)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _add_runtime_options(p):
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="dtype of the unquantized weights and activations (default float32)")


def _runtime(args) -> Tuple[torch.device, torch.dtype]:
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise ValueError(f"--device {args.device!r} is not a device ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    return device, DTYPES[args.dtype]


def _model_dir(model_dir: str) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise SystemExit(f"tacq: {path} is not a Hugging Face model directory (no config.json)")
    return path


# files one of which a directory saved with tokenizer.save_pretrained holds
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load_tokenizer(directory: str):
    """The Hugging Face tokenizer saved in `directory`, or a ValueError that
    says what is missing and what to do (never the tokenizers library's
    slow-to-fast conversion message)."""
    from transformers import AutoTokenizer

    path = Path(directory)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{path} has no Hugging Face tokenizer (none of {', '.join(TOKENIZER_FILES)}). "
                         f"Save the model's tokenizer there with tokenizer.save_pretrained(), or pass "
                         f"--tokenizer DIR naming a directory that holds one")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"the tokenizer in {path} could not be loaded: {e}") from None


def _load_hf(model_dir: str, tokenizer_dir, device: torch.device, dtype: torch.dtype, offload_blocks: bool = False):
    """Model and tokenizer from local directories; never touches the network.
    offload_blocks: the decoder blocks stay in the safetensors files until used
    (tacq_ext.load_offloaded)."""
    from transformers import AutoModelForCausalLM

    from .offload import load_offloaded

    path = _model_dir(model_dir)
    tokenizer = _load_tokenizer(tokenizer_dir or path)
    if offload_blocks:
        return load_offloaded(path, device, dtype), tokenizer
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(device).eval()
    return model, tokenizer


def _load_quantized_hf(model_dir: str, tokenizer_dir, quantized: str, device: torch.device, dtype: torch.dtype):
    """A skeleton built on the meta device from the model directory's config
    (no weights read, no memory used), filled from the quantized checkpoint."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from . import load_quantized

    path = _model_dir(model_dir)
    tokenizer = _load_tokenizer(tokenizer_dir or path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return load_quantized(quantized, skeleton, device=device).eval(), tokenizer


def _on(device: torch.device, batch: dict) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _add_quantize(p):
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--tokenizer", help="directory of the Hugging Face tokenizer (default: the model's directory)")
    p.add_argument("--calib", required=True, help="calibration file (prompt/answer jsonl, GSM8k jsonl, MMLU csv, Spider json)")
    p.add_argument("--format", default="auto", help="jsonl | gsm8k | mmlu | spider | auto")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--group-size", type=int, default=-1)
    p.add_argument("--ratio", type=float, default=0.0035)
    p.add_argument("--method", default="tacq", help="tacq | rtn | gptq | spqr_like | squeezellm_like")
    p.add_argument("--reference", default="gptq", help="quantizer behind Q(W): gptq | rtn")
    recipes = p.add_argument_group("recipes beyond the paper (docs/method.md)")
    recipes.add_argument("--act-order", action="store_true", help="GPTQ in decreasing order of the Hessian diagonal")
    recipes.add_argument("--budget", default="global", help="kept weights: global (top-k) | layer | row (by score mass)")
    recipes.add_argument("--rescore", action="store_true",
                         help="tacq: recompute the saliency once at a first masked quantization")
    recipes.add_argument("--wide-rows", type=float, default=0.0, metavar="F",
                         help="tacq, 2 or 3 bits: store the fraction F of the weights with one bit more, as the "
                              "rows of largest mean score")
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each decoder block in the gradient pass instead of keeping its activations "
                        "(long sequences; about one more forward pass of time)")
    p.add_argument("--offload-blocks", action="store_true",
                   help="keep each decoder block in the model's safetensors files until it is used, so that at "
                        "most one block's weights are on the device (models larger than the device; "
                        "docs/distributed.md)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dist-timeout", type=float, default=1800.0,
                   help="under torchrun: seconds any collective may wait for the other ranks before the run "
                        "fails (default 1800; must exceed the longest stage's skew between ranks)")
    _add_runtime_options(p)


@command("quantize", "quantize a model with TACQ or a baseline")(_add_quantize)
def _run_quantize(args) -> int:
    from . import TACQConfig, quantize_model, save_quantized
    from .calib_data import make_batches, read_examples
    from .distributed import Ranks, process_group_from_env

    cfg = TACQConfig(bits=args.bits, group_size=args.group_size, ratio=args.ratio, method=args.method,
                     reference=args.reference, act_order=args.act_order, budget=args.budget, rescore=args.rescore,
                     wide_rows=args.wide_rows)
    device, dtype = _runtime(args)
    with process_group_from_env(device, args.dist_timeout) as device:
        ranks = Ranks.current()
        model, tokenizer = _load_hf(args.model, args.tokenizer, device, dtype, args.offload_blocks)
        examples = read_examples(args.calib, args.format)[: args.num_samples]
        batches = make_batches(examples, tokenizer, args.batch_size, args.max_length)
        if len(batches) < ranks.world:
            raise ValueError(f"{len(batches)} calibration batches for {ranks.world} ranks: lower --batch-size "
                             f"or raise --num-samples")
        calib = [_on(device, b) for b in batches[ranks.rank::ranks.world]]  # batch i goes to rank i % world
        start = time.perf_counter()
        report = quantize_model(model, calib, cfg, progress=not args.quiet,
                                activation_checkpointing=args.activation_checkpointing)
        with ranks.agree("saving the checkpoint"):
            if ranks.leader:
                save_quantized(model, args.out, cfg=cfg, report=report,
                               calibration=f"{Path(args.calib).name}: {len(examples)} examples")
                tokenizer.save_pretrained(args.out)
        if ranks.leader:
            print(report.table())
            print(f"quantized in {time.perf_counter() - start:.1f}s on {ranks.world} rank(s) -> {args.out}")
    return 0


def _add_eval(p):
    p.add_argument("--model", help="local Hugging Face model directory: the model to evaluate, or with "
                                   "--quantized the config and tokenizer of its skeleton (default: the "
                                   "--quantized directory, where quantize saves both)")
    p.add_argument("--quantized", help="quantized checkpoint directory, loaded into a meta-device skeleton "
                                       "(default: evaluate --model as is)")
    p.add_argument("--data", required=True, help="evaluation file or MMLU directory, same formats as --calib")
    p.add_argument("--tokenizer", help="directory of the Hugging Face tokenizer (default: the model's directory)")
    p.add_argument("--format", default="auto")
    p.add_argument("--max-samples", type=int, default=50)
    _add_runtime_options(p)


@command("eval", "answer loss and greedy exact match of a (quantized) model")(_add_eval)
def _run_eval(args) -> int:
    from .calib_data import encode, make_batches, read_examples
    from .saliency import default_loss

    device, dtype = _runtime(args)
    if args.quantized:
        model, tokenizer = _load_quantized_hf(args.model or args.quantized, args.tokenizer, args.quantized,
                                              device, dtype)
    elif args.model:
        model, tokenizer = _load_hf(args.model, args.tokenizer, device, dtype)
    else:
        raise ValueError("eval needs --model, --quantized or both")
    examples = read_examples(args.data, args.format)[: args.max_samples]
    losses, exact = [], 0
    with torch.no_grad():
        for ex, batch in zip(examples, map(partial(_on, device), make_batches(examples, tokenizer, batch_size=1))):
            losses.append(float(default_loss(model, batch)))
            answer = encode(tokenizer, ex.answer)
            prompt = batch["input_ids"][:, : batch["input_ids"].shape[1] - len(answer)]
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                 max_new_tokens=len(answer), do_sample=False,
                                 pad_token_id=getattr(tokenizer, "pad_token_id", None) or 0)
            exact += out[0, prompt.shape[1]:].tolist() == answer
    mean = sum(losses) / len(losses)
    print(json.dumps({"examples": len(examples), "answer_loss": mean, "answer_perplexity": math.exp(mean),
                      "exact_match": exact / len(examples)}, indent=1))
    return 0


def _add_info(p):
    p.add_argument("path", help="quantized checkpoint directory")


@command("info", "per-layer bits, kept weights and size of a quantized checkpoint")(_add_info)
def _run_info(args) -> int:
    from .serialization import WEIGHTS_FILE, read_config

    config = read_config(args.path)
    layers = config["layers"]
    print(f"method {config['method']}, {config['bits']} bits, group size {config['group_size']}, "
          f"ratio {config['ratio']}, format v{config['format_version']}, tacq_ext {config['library_version']}")
    print(f"calibration: {config.get('calibration') or '-'}")
    print(f"{'layer':<44} {'shape':>12} {'bits':>4} {'group':>5} {'kept':>8} {'avg bits':>9} {'KiB':>9}")
    params = kept = stored = 0
    for name, l in layers.items():
        n = l["out_features"] * l["in_features"]
        layer_bits = l["avg_bits"] * n
        params, kept, stored = params + n, kept + l["nnz"], stored + layer_bits
        print(f"{name:<44} {l['out_features']:>5}x{l['in_features']:<6} {l['bits']:>4} {l['group_size']:>5} "
              f"{l['nnz']:>8} {l['avg_bits']:>9.3f} {layer_bits / 8 / 1024:>9.1f}")
    size = (Path(args.path) / WEIGHTS_FILE).stat().st_size
    print(f"{'total':<44} {params:>12} {'':>4} {'':>5} {kept:>8} {stored / max(params, 1):>9.3f} "
          f"{stored / 8 / 1024:>9.1f}")
    print(f"file size: {size / 2**20:.2f} MiB (quantized layers {stored / 8 / 2**20:.2f} MiB, the rest unquantized "
          f"tensors); sha256 {config.get('weights_sha256', '-')}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tacq", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except (ValueError, FileNotFoundError, RankFailed) as e:
        print(f"tacq {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
