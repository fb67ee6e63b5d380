"""Shared test fixtures: the devices to run on and a deterministic generator."""

import pytest
import torch

import tacq_ext  # registers torch.ops.tacq

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def _isa_paths():
    """The vector ISA paths this CPU can run, in increasing order: an ISA the
    CPU lacks would fall back to the best one it has, a path already run."""
    import os

    order = ["generic", "avx2", "avx512"]
    cap = os.environ.pop("TACQ_CPU_ISA", None)
    try:
        best = tacq_ext.build_info()["cpu_isa"]
    finally:
        if cap is not None:
            os.environ["TACQ_CPU_ISA"] = cap
    return order[: order.index(best) + 1]


ISA_PATHS = _isa_paths()


@pytest.fixture(params=ISA_PATHS)
def cpu_isa(request, monkeypatch):
    """Runs a CPU test once per vector ISA path this CPU has (set through
    TACQ_CPU_ISA, which caps the ISA the kernels dispatch to)."""
    monkeypatch.setenv("TACQ_CPU_ISA", request.param)
    return request.param


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
