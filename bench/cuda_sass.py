"""Instruction counts of the CUDA mixed_gemv kernels' inner loop, from their SASS,
on a machine without a GPU (csrc/kernels/cuda/README.md: "Status and what to
measure first").

Compiles csrc/kernels/cuda/mixed_gemv.cu with nvcc for one architecture (or
reads a given build), reads the SASS with cuobjdump and, for every
instantiation (bits, x dtype, scale dtype, MT rows), finds the window of
max(300, 160 * MT) instructions with the most FFMAs (the unrolled block loop,
one FFMA per code, row and x row: at least a whole 32-code block of it). It
reports instructions per FFMA, integer-pipe instructions per FFMA (64 a clock
per SM on sm_80/sm_90, half the FFMA rate), registers and stack bytes. Not a
timing: it says how much work a code costs, which bounds the kernel where it is
not memory-bound.

    python bench/cuda_sass.py --arch sm_90 [--cuobjdump PATH] [--cubin FILE]
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import command_line, plot_bars, write_table_results

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "csrc" / "kernels" / "cuda" / "mixed_gemv.cu"
INTEGER_OPS = ("LOP3", "SHF", "IMAD", "IADD3", "LEA", "PRMT", "ISETP", "SEL", "VIADD", "IABS", "MOV")
KERNEL = re.compile(r"mixed_gemv_kernel<(\d+), ([\w:]+), ([\w:]+), (\d+)>")
INSTRUCTION = re.compile(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[0-9T]\s+)?([A-Z0-9_]+)")
DTYPE = {"__nv_bfloat16": "bf16", "__half": "fp16", "float": "fp32"}


def tool(name: str, given: str | None) -> str:
    """`given`, else `name` on PATH, else beside nvcc."""
    nvcc = shutil.which("nvcc")
    path = given or shutil.which(name) or (nvcc and shutil.which(name, path=str(Path(nvcc).parent)))
    if not path:
        raise SystemExit(f"{name} not found: pass --{name} PATH (it ships with the CUDA toolkit)")
    return path


def functions(sass: str, demangled: dict) -> dict:
    """{(bits, x, scale, MT): (mangled name, [opcode, ...])} of the mixed_gemv kernels."""
    out = {}
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
        name, body = part.split("\n", 1)
        match = KERNEL.search(demangled.get(name.strip(), ""))
        if match:
            bits, x, scale, rows = match.groups()
            ops = [m.group(1) for m in map(INSTRUCTION.match, body.split("\n")) if m]
            out[(int(bits), DTYPE.get(x, x), DTYPE.get(scale, scale), int(rows))] = (name.strip(), ops)
    return out


def densest_window(ops: list, window: int) -> tuple:
    """(instructions per FFMA, integer instructions per FFMA) in the window
    of `window` instructions with the most FFMAs."""
    ffma = [op == "FFMA" for op in ops]
    running = sum(ffma[:window])
    best, start = running, 0
    for i in range(window, len(ops)):
        running += ffma[i] - ffma[i - window]
        if running > best:
            best, start = running, i - window + 1
    counts = collections.Counter(ops[start:start + window])
    integer = sum(n for op, n in counts.items() if op.startswith(INTEGER_OPS))
    return min(window, len(ops)) / max(best, 1), integer / max(best, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--cuobjdump", help="path to cuobjdump (default: PATH, then next to nvcc)")
    parser.add_argument("--cubin", help="read this build of mixed_gemv.cu instead of compiling one")
    parser.add_argument("--name", help="results file stem (default: cuda-sass-<arch>)")
    args = parser.parse_args(argv)
    cuobjdump = tool("cuobjdump", args.cuobjdump)
    nvcc = None if args.cubin else tool("nvcc", None)

    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(args.cubin or Path(tmp) / "mixed_gemv.cubin")
        if not args.cubin:
            print(f"compiling {SOURCE.name} for {args.arch} (a few minutes)...", flush=True)
            subprocess.run([nvcc, "-std=c++17", "-O3", f"-arch={args.arch}", "-I", str(ROOT / "csrc" / "include"),
                            "-cubin", "-o", str(cubin), str(SOURCE)], check=True)
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], check=True, capture_output=True, text=True).stdout
        usage = subprocess.run([cuobjdump, "-res-usage", str(cubin)], check=True, capture_output=True,
                               text=True).stdout
    names = sorted(set(re.findall(r"Function (?::\s*)?(_Z\w+)", sass + usage)))
    plain = subprocess.run(["c++filt"], input="\n".join(names), check=True, capture_output=True, text=True).stdout
    demangled = dict(zip(names, plain.split("\n")))
    resources = {m.group(1): (int(m.group(2)), int(m.group(3)))
                 for m in re.finditer(r"Function (_Z\w+):\s*\n\s*REG:(\d+) STACK:(\d+)", usage)}

    kernels = functions(sass, demangled)
    lines = ["| bits | x | scale | MT | instructions / FFMA | integer / FFMA | registers | stack bytes |",
             "|---|---|---|---|---|---|---|---|"]
    payload, bars = {}, {}
    for (bits, x, scale, rows), (name, ops) in sorted(kernels.items()):
        per_ffma, integer = densest_window(ops, max(300, 160 * rows))
        registers, stack = resources[name]
        lines.append(f"| {bits} | {x} | {scale} | {rows} | {per_ffma:.2f} | {integer:.2f} | {registers} | {stack} |")
        payload[f"{bits}-{x}-{scale}-{rows}"] = {"instructions_per_ffma": per_ffma, "integer_per_ffma": integer,
                                                 "registers": registers, "stack_bytes": stack}
        if rows == 1 and scale == "fp16":
            bars[f"{bits}-bit, {x} x"] = per_ffma
    table = "\n".join(lines)
    print(table)
    if nvcc:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
        built = f"nvcc: {version}"
    else:
        built = f"cubin: {args.cubin}"
    notes = [built, f"arch: {args.arch}, window: max(300, 160 * MT) instructions",
             "per FFMA = per code, output row and x row in the block loop"]
    stem = write_table_results(args.name or f"cuda-sass-{args.arch}", command_line("cuda_sass.py", argv), table,
                               notes, {"kernels": payload})
    plot_bars(bars, stem.with_suffix(".png"), "SASS instructions per FFMA",
              f"CUDA mixed_gemv inner loop, {args.arch}, MT = 1, fp16 scales")
    print(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
