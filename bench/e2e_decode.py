"""End-to-end decoding speed of Llama models of real layer shapes with random
weights: torch bf16 against TACQ-quantized models built directly in packed
form (random codes, fp16 scales and zeros, a 0.35 % fp16 residual), all run
through Hugging Face `generate` (greedy, batch 1 and 4) in the same run.

    python bench/e2e_decode.py --models 1b            # Llama-3.2-1B shapes
    python bench/e2e_decode.py --models 1b,8b --bits 2,3

Each model runs in a child process of its own (built, timed, freed), so its
peak RSS is its own and the bf16 8B (16 GB) is gone before the next one is
built; a quantized model is first written as a checkpoint by another child,
then loaded with AutoModelForCausalLM.from_pretrained, as a user would. Reported per model: decoding tokens/s at batch 1 and 4 (the time of
generating `--new-tokens` tokens minus that of generating one, so prefill is
left out), prefill tokens/s of a 512-token prompt, peak RSS, the bytes of
weights read per decoded token and the tokens/s that the read bandwidth
measured in the same run allows for them. --modes eager,compiled runs every
model both ways, one after the other; compiled decodes (and prefills) through
torch.compile(fullgraph=True) with a static KV cache, and each model is compared
with the bf16 model of its own mode; compiled-cpp does the same with Inductor's
C++ wrapper (options={"cpp_wrapper": True}). --x-int8 adds,
for each bit width, the same checkpoint run with int8 activations
(tacq_ext.set_int8_activations). --wide-rows F adds, for each bit width b,
a model whose every block linear stores a random fraction F of its rows at
b + 1 bits (a RowSplitLinear: TACQConfig.wide_rows, every layer split, the
costliest layout). Writes
bench/results/e2e-decode-<device>.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, measure_read_bandwidth, write_table_results  # noqa: E402

SHAPES = {  # Llama-3.2-1B and Llama-3-8B
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
RESIDUAL_RATIO = 0.0035
GROUP_SIZE = 64


def llama_config(shape: str, layers: int):
    from transformers import LlamaConfig

    spec = dict(SHAPES[shape])
    if layers:
        spec["num_hidden_layers"] = layers
    return LlamaConfig(**spec, max_position_embeddings=4096, rms_norm_eps=1e-5, dtype="bfloat16")


def random_bf16_model(config):
    """LlamaForCausalLM in bf16 with N(0, 0.02) weights, filled without the slow default init."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).mul_(0.02).to(p.dtype))
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # to_empty left its tables unset
    return model.eval()


def random_quantized_linear(N: int, K: int, bits: int, generator, group_size: int = GROUP_SIZE):
    """An N x K QuantizedLinear in packed form (group_size -1: whole rows):
    random codes, scales that give N(0, 0.02)-sized weights, and
    RESIDUAL_RATIO of the weights kept in a CSR residual spread evenly over
    the rows."""
    from tacq_ext import QuantizedLinear, ops

    assert K % 32 == 0, "random codes would fill the padding past K"
    per_row = max(1, round(RESIDUAL_RATIO * K))
    q = QuantizedLinear(K, N, bits, group_size, nnz=N * per_row)
    words = ops.packed_words_per_row(K, bits)
    q.packed = torch.randint(-2**31, 2**31, (N, words), generator=generator, dtype=torch.int64).to(torch.int32)
    G = q.scale.shape[1]
    q.scale = (torch.rand(N, G, generator=generator) * 0.01 + 0.005).half()
    q.zero = torch.full((N, G), float(2 ** (bits - 1)), dtype=torch.float16)
    q.row_ptr = torch.arange(0, N * per_row + 1, per_row, dtype=torch.int32)
    cols = torch.rand(N, K, generator=generator).argsort(dim=1)[:, :per_row].sort(dim=1).values
    q.col_idx = cols.reshape(-1).to(torch.int32).contiguous()
    q.values = (torch.randn(N * per_row, generator=generator) * 0.05).half()
    q.consolidate()  # the stored layer, before anything compiles the model
    return q


def random_split_linear(N: int, K: int, bits: int, wide_rows: float, generator):
    """A RowSplitLinear whose randomly placed round(wide_rows * N) rows are
    stored at bits + 1, the others at bits."""
    from tacq_ext import RowSplitLinear

    row_bits = torch.full((N,), bits, dtype=torch.uint8)
    row_bits[torch.randperm(N, generator=generator)[:round(wide_rows * N)]] = bits + 1
    parts = [random_quantized_linear(int((row_bits == b).sum()), K, b, generator) for b in (bits, bits + 1)]
    return RowSplitLinear(parts, row_bits)


def random_quantized_model(config, bits: int, wide_rows: float = 0.0):
    """The bf16 skeleton's decoder-block linears replaced by random packed
    QuantizedLinear layers (RowSplitLinear with wide_rows); embeddings,
    norms and lm_head stay bf16. Built on the meta device layer by layer,
    so no bf16 block weight ever exists."""
    from transformers import LlamaForCausalLM

    from tacq_ext.targets import find_targets, set_module

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    for name, linear in find_targets(model).items():
        N, K = linear.out_features, linear.in_features
        set_module(model, name, random_split_linear(N, K, bits, wide_rows, generator) if wide_rows else
                   random_quantized_linear(N, K, bits, generator))
    for name, p in list(model.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        value = torch.ones(p.shape) if leaf == "weight" and "norm" in owner else \
            torch.randn(p.shape, generator=generator) * 0.02
        setattr(module, leaf, torch.nn.Parameter(value.to(torch.bfloat16), requires_grad=False))
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model.eval()


def weight_bytes_per_token(model) -> int:
    """Bytes of weights a decoded token reads: every parameter and buffer,
    each storage once, but one row of an embedding table that is not also
    the output layer."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if embedding.data_ptr() != head.data_ptr():
        total -= (embedding.shape[0] - 1) * embedding.shape[1] * embedding.element_size()
    return total


def stored_bytes(model) -> int:
    """Bytes of the state dict, each storage once (what a checkpoint holds):
    its tensors themselves (keep_vars), not the copies a QuantizedLinear's
    plain state_dict() makes for torch.save, which would count in the peak RSS."""
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def decode_seconds_per_token(model, batch: int, new_tokens: int, vocab: int, **generate_kwargs) -> float:
    prompt = torch.randint(0, vocab, (batch, 16), generator=torch.Generator().manual_seed(1))
    kwargs = dict(attention_mask=torch.ones_like(prompt), do_sample=False, pad_token_id=0, **generate_kwargs)

    def generate(n):
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **kwargs)
        return time.perf_counter() - start

    generate(new_tokens)  # warm-up; a static cache sized here is reused by the shorter runs
    one = min(generate(1) for _ in range(2))
    many = min(generate(new_tokens) for _ in range(2))
    return (many - one) / (new_tokens - 1)


def prefill_seconds(model, length: int, vocab: int, warmup_length: int = 32, runs: int = 3) -> float:
    """The fastest of `runs` forward passes over a `length`-token prompt: one
    pass moved by 10-40 % between runs on the shared machine."""
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(2))
    times = []
    with torch.no_grad():
        model(input_ids=ids[:, :warmup_length], use_cache=False)  # warm-up (a compiled model: its graph)
        for _ in range(runs):
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            times.append(time.perf_counter() - start)
    return min(times)


def run_one(args) -> dict:
    """Child process: time one model, report JSON on stdout. A quantized
    model is loaded the way a user loads one, with from_pretrained from a
    checkpoint that an earlier child wrote (--checkpoint), so its peak RSS is
    that of loading and running it."""
    import tacq_ext  # noqa: F401  (registers the ops and the from_pretrained quantizer)
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    config = llama_config(args.shape, args.layers)
    start = time.perf_counter()
    if args.one == "bf16":
        model = random_bf16_model(config)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.bfloat16).eval()
        tacq_ext.set_int8_activations(model, args.x_int8)
    result = {"model": args.shape, "layers": config.num_hidden_layers, "weights": args.one,
              "wide_rows": args.wide_rows, "compiled": args.compile, "cpp_wrapper": args.cpp_wrapper,
              "x_int8": args.x_int8, "build_s": time.perf_counter() - start,
              "stored_bytes": stored_bytes(model), "bytes_per_token": weight_bytes_per_token(model)}
    generate_kwargs = {}
    if args.compile:  # one graph per step (fullgraph raises on a break), shapes fixed by a static cache
        model.forward = torch.compile(model.forward, fullgraph=True, dynamic=False,
                                      options={"cpp_wrapper": True} if args.cpp_wrapper else None)
        generate_kwargs = dict(cache_implementation="static")
    for batch in (1, 4):
        result[f"decode_tok_s_b{batch}"] = batch / decode_seconds_per_token(model, batch, args.new_tokens,
                                                                            config.vocab_size, **generate_kwargs)
    result["prefill_tok_s"] = args.prefill / prefill_seconds(model, args.prefill, config.vocab_size,
                                                            args.prefill if args.compile else 32)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def write_checkpoint(args) -> None:
    """Child process: a random packed model of args.one bits, saved to args.checkpoint."""
    from tacq_ext import TACQConfig, save_quantized

    model = random_quantized_model(llama_config(args.shape, args.layers), int(args.one), args.wide_rows)
    save_quantized(model, args.checkpoint, TACQConfig(bits=int(args.one), group_size=GROUP_SIZE,
                                                      ratio=RESIDUAL_RATIO, wide_rows=args.wide_rows),
                   calibration="random weights")


def model_and_mode(result) -> tuple:
    """What a result is compared by: its model shape and how it ran."""
    return result["model"], result.get("compiled"), result.get("cpp_wrapper")


def format_table(results, bandwidth: float) -> str:
    head = ("| model | weights | decode tok/s b1 | b4 | vs bf16 b1 | GB read/token | bound tok/s | % of bound "
            "| prefill tok/s | vs bf16 | stored GB | peak RSS GB | RSS / stored |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = {model_and_mode(r): r for r in results if r["weights"] == "bf16"}
    for r in results:
        ref = base.get(model_and_mode(r))
        bound = bandwidth / r["bytes_per_token"]
        name = ("bf16" if r["weights"] == "bf16" else f"tacq {r['weights']}-bit") + \
            (f", {r['wide_rows']:g} wide rows" if r.get("wide_rows") else "") + \
            (", int8 x" if r.get("x_int8") else "") + (", compiled" if r.get("compiled") else "") + \
            (" (C++ wrapper)" if r.get("cpp_wrapper") else "")
        lines.append(
            f"| {r['model']} ({r['layers']} blocks) | {name} | {r['decode_tok_s_b1']:.2f} | {r['decode_tok_s_b4']:.2f} "
            f"| {r['decode_tok_s_b1'] / ref['decode_tok_s_b1']:.2f}x | {r['bytes_per_token'] / 1e9:.3f} "
            f"| {bound:.2f} | {100 * r['decode_tok_s_b1'] / bound:.0f} | {r['prefill_tok_s']:.1f} "
            f"| {r['prefill_tok_s'] / ref['prefill_tok_s']:.2f}x | {r['stored_bytes'] / 1e9:.2f} "
            f"| {r['peak_rss_bytes'] / 1e9:.2f} | {r['peak_rss_bytes'] / r['stored_bytes']:.2f} |"
            if ref else f"| {r['model']} | {name} | {r['decode_tok_s_b1']:.2f} | ... (no bf16 row) |")
    return "\n".join(lines)


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['model']} {'bf16' if r['weights'] == 'bf16' else r['weights'] + '-bit'}"
              + (f" +{r['wide_rows']:g} wide" if r.get("wide_rows") else "")
              + (" int8 x" if r.get("x_int8") else "") + (" compiled" if r.get("compiled") else "")
              + (" C++" if r.get("cpp_wrapper") else "")
              for r in results]
    xs = range(len(results))
    ax.bar([x - 0.2 for x in xs], [r["decode_tok_s_b1"] for r in results], 0.4, label="batch 1")
    ax.bar([x + 0.2 for x in xs], [r["decode_tok_s_b4"] for r in results], 0.4, label="batch 4")
    ax.set_xticks(list(xs), labels, rotation=20)
    ax.set_ylabel("decoded tokens/s (all sequences of the batch)")
    ax.set_title("Greedy decoding, HF generate, random weights")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="1b", help="comma-separated shapes: 1b, 8b (default 1b)")
    parser.add_argument("--bits", default="2,3", help="comma-separated bit widths of the quantized models")
    parser.add_argument("--layers", type=int, default=0, help="decoder blocks (default: the real model's)")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens per timed generate (default 16)")
    parser.add_argument("--prefill", type=int, default=512, help="prompt length of the prefill timing")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--modes", default="eager",
                        help="comma-separated: eager, compiled (torch.compile(fullgraph=True), static KV cache), "
                             "compiled-cpp (the same with Inductor's C++ wrapper)")
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)  # child process: compiled
    parser.add_argument("--cpp-wrapper", action="store_true", help=argparse.SUPPRESS)  # ... with the C++ wrapper
    parser.add_argument("--x-int8", action="store_true",
                        help="also run each quantized model with int8 activations")
    parser.add_argument("--wide-rows", type=float, default=0.0, metavar="F",
                        help="also run each bit width b with a fraction F of every layer's rows at b + 1 bits")
    parser.add_argument("--name", default="e2e-decode-cpu", help="results file stem")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: "bf16" or a bit width
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one and args.write:
        write_checkpoint(args)
        return 0
    if args.one:
        print(json.dumps(run_one(args)))
        return 0

    from tqdm.auto import tqdm

    modes = args.modes.split(",")
    if not modes or not set(modes) <= {"eager", "compiled", "compiled-cpp"}:
        parser.error(f"--modes takes eager, compiled and/or compiled-cpp, got {args.modes!r}")
    bandwidth = measure_read_bandwidth("cpu")
    jobs = []  # (shape, "bf16" or bits, wide rows, int8 activations, mode), the modes of a model in a row
    for shape in args.models.split(","):
        jobs += [(shape, "bf16", 0.0, False, mode) for mode in modes]
        for bits in args.bits.split(","):
            for wide in [0.0] + ([args.wide_rows] if args.wide_rows else []):
                jobs += [(shape, bits, wide, x_int8, mode)
                         for x_int8 in ([False, True] if args.x_int8 else [False]) for mode in modes]
    results = []
    with tempfile.TemporaryDirectory(prefix="tacq-e2e-") as scratch:
        for i, (shape, weights, wide, x_int8, mode) in enumerate(tqdm(jobs, desc="models")):
            checkpoint = Path(scratch) / f"{shape}-{weights}-{wide:g}"
            common = [sys.executable, __file__, "--one", weights, "--shape", shape, "--layers", str(args.layers),
                      "--checkpoint", str(checkpoint), "--wide-rows", str(wide)]
            if weights != "bf16" and not checkpoint.exists():
                subprocess.run(common + ["--write"], check=True)
            command = common + ["--new-tokens", str(args.new_tokens), "--prefill", str(args.prefill),
                                "--threads", str(args.threads)] + (["--compile"] if mode != "eager" else []) \
                + (["--cpp-wrapper"] if mode == "compiled-cpp" else []) \
                + (["--x-int8"] if x_int8 else [])
            child = subprocess.run(command, capture_output=True, text=True)
            if child.returncode:
                raise SystemExit(f"{shape} {weights} failed:\n{child.stderr[-4000:]}")
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
            if (shape, weights, wide) not in [j[:3] for j in jobs[i + 1:]]:
                shutil.rmtree(checkpoint, ignore_errors=True)
    table = format_table(results, bandwidth)
    print(f"read bandwidth measured in this run: {bandwidth / 1e9:.1f} GB/s")
    print(table)
    stem = write_table_results(args.name, command_line("e2e_decode.py", argv), table,
                               [f"measured read bandwidth: {bandwidth / 1e9:.1f} GB/s"],
                               {"bandwidth_Bps": bandwidth, "results": results})
    plot(results, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
