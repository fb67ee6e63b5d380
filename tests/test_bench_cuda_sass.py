"""bench/cuda_sass.py's reading of cuobjdump output, on synthetic SASS: which
functions are the mixed_gemv kernels, every instruction of them (predicated
ones and those past address 0xffff included), and the densest-FFMA window."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
MANGLED = "_ZN4tacq4cuda12_GLOBAL__N_117mixed_gemv_kernelILi2E13__nv_bfloat166__halfLi1EEEvNS1_6ParamsIT0_T1_EE"
DEMANGLED = ("void tacq::cuda::(anonymous namespace)::mixed_gemv_kernel<2, __nv_bfloat16, __half, 1>"
             "(tacq::cuda::(anonymous namespace)::Params<__nv_bfloat16, __half>)")


@pytest.fixture
def cuda_sass(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # its `from common import ...`
    spec = importlib.util.spec_from_file_location("cuda_sass", BENCH / "cuda_sass.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sass_listing(name: str, opcodes: list, first_address: int) -> str:
    lines = [f"\t\tFunction : {name}", "\t.headerflags\t@\"EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)\""]
    for i, op in enumerate(opcodes):
        predicate = "@!P0 " if i % 7 == 0 else ""
        lines.append(f"        /*{first_address + 16 * i:04x}*/                   {predicate}{op} R1, R2, R3 ;"
                     f"   /* 0x000fe20000000f00 */")
        lines.append("                                                                  /* 0x000fe20000000f00 */")
    return "\n".join(lines)


def test_reads_every_instruction_of_the_gemv_kernels_only(cuda_sass):
    opcodes = ["MOV"] * 40 + ["LOP3.LUT", "SHF.R.U32.HI", "FFMA"] * 1500 + ["EXIT"]
    sass = ("\n\tcode for sm_90\n" + sass_listing(MANGLED, opcodes, 0) + "\n"
            + sass_listing("_ZN4tacq4cuda5otherEv", ["FFMA"] * 10, 0) + "\n")
    kernels = cuda_sass.functions(sass, {MANGLED: DEMANGLED, "_ZN4tacq4cuda5otherEv": "tacq::cuda::other()"})
    assert list(kernels) == [(2, "bf16", "fp16", 1)]
    name, ops = kernels[(2, "bf16", "fp16", 1)]
    assert name == MANGLED
    assert len(opcodes) * 16 > 0x10000 and ops == [op.split(".")[0] for op in opcodes]


def test_densest_window_counts_per_ffma(cuda_sass):
    ops = ["NOP"] * 50 + ["LOP3", "SHF", "FADD", "FFMA"] * 100 + ["BRA"] * 50
    per_ffma, integer = cuda_sass.densest_window(ops, 300)
    assert per_ffma == pytest.approx(4.0) and integer == pytest.approx(2.0)
    per_ffma, integer = cuda_sass.densest_window(["FFMA", "IMAD.SHL"] * 10, 300)  # shorter than the window
    assert per_ffma == pytest.approx(2.0) and integer == pytest.approx(1.0)
