"""Bad input raises the same message from the CPU kernels and the fake (meta)
kernels, so eager, torch.compile and meta-device users see the same error."""

import pytest
import torch

from tacq_ext import ops


def _csr(N, nnz=0, device="cpu"):
    return (torch.zeros(N + 1, dtype=torch.int32, device=device),
            torch.zeros(nnz, dtype=torch.int32, device=device),
            torch.zeros(nnz, dtype=torch.float16, device=device))


def _packed(N, K, bits, device):
    return torch.zeros(N, (K + 31) // 32 * bits, dtype=torch.int32, device=device)


def _sz(N, G, device, dtype=torch.float32):
    return torch.ones(N, G, dtype=dtype, device=device), torch.zeros(N, G, dtype=dtype, device=device)


CASES = {
    "pack bits": lambda d: ops.pack(torch.zeros(2, 8, dtype=torch.uint8, device=d), 5),
    "pack dtype": lambda d: ops.pack(torch.zeros(2, 8, dtype=torch.int64, device=d), 2),
    "unpack width": lambda d: ops.unpack(torch.zeros(2, 3, dtype=torch.int32, device=d), 2, 64),
    "quantize bits": lambda d: ops.quantize(torch.zeros(2, 64, device=d), 1, -1),
    "quantize group": lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, 48),
    "quantize rank": lambda d: ops.quantize(torch.zeros(64, device=d), 2, -1),
    "quantize dtype": lambda d: ops.quantize(torch.zeros(2, 64, dtype=torch.int32, device=d), 2, -1),
    "quantize mask dtype": lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, -1,
                                                  torch.zeros(2, 64, dtype=torch.uint8, device=d)),
    "quantize mask shape": lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, -1,
                                                  torch.zeros(2, 63, dtype=torch.bool, device=d)),
    "saliency acc dtype": lambda d: ops.saliency_accumulate(
        torch.zeros(4, 8, dtype=torch.float16, device=d), torch.zeros(3, 4, device=d),
        torch.zeros(3, 8, device=d)),
    "saliency N": lambda d: ops.saliency_accumulate(
        torch.zeros(4, 8, device=d), torch.zeros(3, 5, device=d), torch.zeros(3, 8, device=d)),
    "saliency mixed dtypes": lambda d: ops.saliency_accumulate(
        torch.zeros(4, 8, device=d), torch.zeros(3, 4, device=d),
        torch.zeros(3, 8, dtype=torch.bfloat16, device=d)),
    "saliency tokens": lambda d: ops.saliency_accumulate(
        torch.zeros(4, 8, device=d), torch.zeros(2, 3, 4, device=d), torch.zeros(2, 5, 8, device=d)),
    "dequantize scale shape": lambda d: ops.dequantize(
        _packed(4, 64, 2, d), *_sz(4, 2, d), 2, -1, 64),
    "dequantize scale dtype": lambda d: ops.dequantize(
        _packed(4, 64, 2, d), *_sz(4, 1, d, torch.bfloat16), 2, -1, 64),
    "dequantize out dtype": lambda d: ops.dequantize(
        _packed(4, 64, 2, d), *_sz(4, 1, d), 2, -1, 64, torch.int32),
    "gemv rows": lambda d: ops.mixed_gemv(
        torch.zeros(17, 64, device=d), _packed(4, 64, 2, d), *_sz(4, 1, d), 2, -1, *_csr(4, 0, d)),
    "gemv K": lambda d: ops.mixed_gemv(
        torch.zeros(1, 60, device=d), _packed(4, 96, 2, d), *_sz(4, 1, d), 2, -1, *_csr(4, 0, d)),
    "gemv row_ptr": lambda d: ops.mixed_gemv(
        torch.zeros(1, 64, device=d), _packed(4, 64, 2, d), *_sz(4, 1, d), 2, -1, *_csr(3, 0, d)),
    "gemv values dtype": lambda d: ops.mixed_gemv(
        torch.zeros(1, 64, device=d), _packed(4, 64, 2, d), *_sz(4, 1, d), 2, -1,
        *_csr(4, 0, d)[:2], torch.zeros(0, device=d)),
}


def _message(fn, device):
    with pytest.raises(RuntimeError) as info:
        fn(device)
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_and_fake_kernels_raise_the_same_message(case):
    cpu, meta = _message(CASES[case], "cpu"), _message(CASES[case], "meta")
    assert cpu.startswith("tacq."), cpu
    assert cpu == meta
