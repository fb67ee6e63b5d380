"""Shared test fixtures: the devices to run on, a deterministic generator, and
torch's thread count set for a block."""

import contextlib

import pytest
import torch

import tacq_ext  # registers torch.ops.tacq

# Every op test that takes `device` runs on the CPU and on CUDA; the CUDA case
# is collected everywhere (its id holds "cuda", so `pytest -k cuda` selects
# exactly the CUDA tests, as scripts/gpu_check.sh does) and skipped without a GPU.
CUDA = pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the CUDA kernels are compile-checked only "
    "(tests/test_cuda_compile.py)"))
DEVICES = ["cpu", CUDA]
OPS = ["saliency_accumulate", "quantize", "pack", "unpack", "dequantize", "mixed_gemv", "mixed_gemv_stored"]


@pytest.fixture
def device(request):
    """The device an op test runs on, "cpu" or "cuda" (parametrized by
    pytest_generate_tests below). With a GPU, an extension built without CUDA
    kernels fails the CUDA cases rather than skipping them."""
    device = getattr(request, "param", "cpu")
    if device == "cuda":
        missing = [op for op in OPS if not has_kernel(op, "cuda")]
        assert not missing, (f"tacq.{missing} have no CUDA kernel although a GPU is present: the extension "
                             "was built without CUDA (TACQ_CUDA=ON makes that an error)")
    return device


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's CPU thread count (which the CPU ops split work by) set to
    `threads` inside the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _isa_paths():
    """The vector ISA paths this CPU can run, in increasing order: an ISA the
    CPU lacks would fall back to the best one it has, a path already run.
    "avx512" is AVX-512 without its BF16 and VNNI extensions (the kernels
    Skylake-X and, but for int8 x, Ice Lake run); "native", no cap, adds the
    extensions where this CPU has them."""
    import os

    order = ["generic", "avx2", "avx512"]
    cap = os.environ.pop("TACQ_CPU_ISA", None)
    try:
        info = tacq_ext.build_info()
    finally:
        if cap is not None:
            os.environ["TACQ_CPU_ISA"] = cap
    paths = order[: order.index(info["cpu_isa"]) + 1]
    return paths + ["native"] if info["avx512_bf16"] or info["avx512_vnni"] else paths


ISA_PATHS = _isa_paths()


@pytest.fixture
def cpu_isa(request, monkeypatch):
    """Runs a CPU test once per vector ISA path this CPU has (set through
    TACQ_CPU_ISA, which caps the ISA the kernels dispatch to); None, leaving the
    CPU's best ISA, in the CUDA case of a test that also takes `device`."""
    isa = getattr(request, "param", None)
    if isa is not None:
        monkeypatch.setenv("TACQ_CPU_ISA", isa)
    return isa


def _parametrized_by_mark(metafunc, name):
    return any(name in (m.args[0] if isinstance(m.args[0], (list, tuple)) else m.args[0].replace(" ", "").split(","))
               for m in metafunc.definition.iter_markers("parametrize"))


def pytest_generate_tests(metafunc):
    """`device` alone: cpu, cuda. `cpu_isa` alone: each ISA path. Both: each ISA
    path on the CPU (ids cpu-<isa>) and once on CUDA (id cuda), where the CPU
    ISA does not matter."""
    names = [n for n in ("device", "cpu_isa")
             if n in metafunc.fixturenames and not _parametrized_by_mark(metafunc, n)]
    if names == ["device", "cpu_isa"]:
        metafunc.parametrize(("device", "cpu_isa"),
                             [pytest.param("cpu", isa, id=f"cpu-{isa}") for isa in ISA_PATHS]
                             + [pytest.param("cuda", None, id="cuda", marks=CUDA.marks)], indirect=True)
    elif names == ["device"]:
        metafunc.parametrize("device", DEVICES, indirect=True)
    elif names == ["cpu_isa"]:
        metafunc.parametrize("cpu_isa", ISA_PATHS, indirect=True)


def has_kernel(op_name: str, device: str) -> bool:
    key = "CUDA" if device.startswith("cuda") else "CPU"
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"tacq::{op_name}", key)


def random_csr(N, K, density, gen, device="cpu", full_row=None, empty_rows=()):
    """CSR residual (row_ptr, col_idx, values fp16) with each entry kept with
    probability `density`; `full_row` holds all K entries, `empty_rows` none."""
    mask = torch.rand(N, K, generator=gen) < density
    if full_row is not None:
        mask[full_row] = True
    for r in empty_rows:
        mask[r] = False
    row_ptr = torch.zeros(N + 1, dtype=torch.int32)
    row_ptr[1:] = mask.sum(1).cumsum(0)
    col_idx = mask.nonzero()[:, 1].to(torch.int32)
    values = torch.randn(col_idx.numel(), generator=gen).half()
    return row_ptr.to(device), col_idx.to(device), values.to(device)
