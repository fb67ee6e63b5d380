"""Bad input raises the same message from the CPU kernels, the CUDA kernels and
the fake (meta) kernels, so eager, torch.compile, meta-device and GPU users see
the same error; tensors on two devices are rejected by name."""

import pytest
import torch

from tacq_ext import ops

from conftest import CUDA


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
    "pack code range": lambda d: ops.pack(torch.full((2, 8), 4, dtype=torch.uint8, device=d), 2),
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
    "gemv 0-D x": lambda d: ops.mixed_gemv(
        torch.zeros((), device=d), _packed(4, 64, 2, d), *_sz(4, 1, d), 2, -1, *_csr(4, 0, d)),
    "gemv K": lambda d: ops.mixed_gemv(
        torch.zeros(1, 60, device=d), _packed(4, 96, 2, d), *_sz(4, 1, d), 2, -1, *_csr(4, 0, d)),
    "gemv bits": lambda d: ops.mixed_gemv(
        torch.zeros(1, 64, device=d), _packed(4, 64, 2, d), *_sz(4, 1, d), 5, -1, *_csr(4, 0, d)),
    "gemv group": lambda d: ops.mixed_gemv(
        torch.zeros(1, 64, dtype=torch.float16, device=d), _packed(4, 64, 2, d), *_sz(4, 1, d), 2, 48,
        *_csr(4, 0, d)),
    "gemv x dtype": lambda d: ops.mixed_gemv(
        torch.zeros(1, 64, dtype=torch.float64, device=d), _packed(4, 64, 2, d), *_sz(4, 1, d), 2, -1,
        *_csr(4, 0, d)),
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
def test_same_message_on_every_device_and_the_fake_kernels(device, case):
    """The CPU's message, and on CUDA the same one; the fake kernels' too, except
    for code values (which a fake kernel cannot read)."""
    cpu = _message(CASES[case], "cpu")
    assert cpu.startswith("tacq."), cpu
    if device != "cpu":
        assert _message(CASES[case], device) == cpu
    if case != "pack code range":
        assert _message(CASES[case], "meta") == cpu


@pytest.mark.parametrize("device", [CUDA], indirect=True)
def test_cuda_tensors_mixed_with_cpu_tensors_are_rejected(device):
    d = device
    layer = (_packed(4, 64, 2, d), *_sz(4, 1, d), 2, -1, *_csr(4, 0, d))
    with pytest.raises(RuntimeError, match=r"tacq.mixed_gemv: x is on cpu but packed is on cuda"):
        ops.mixed_gemv(torch.zeros(1, 64, dtype=torch.float16), *layer)
    with pytest.raises(RuntimeError, match=r"tacq.mixed_gemv: row_ptr is on cpu but packed is on cuda"):
        ops.mixed_gemv(torch.zeros(1, 64, dtype=torch.float16, device=d), *layer[:5], layer[5].cpu(), *layer[6:])
    with pytest.raises(RuntimeError, match="tacq.saliency_accumulate: grad_out"):
        ops.saliency_accumulate(torch.zeros(16, 24, device=d), torch.randn(2, 5, 16), torch.randn(2, 5, 24, device=d))
    with pytest.raises(RuntimeError, match="tacq.quantize: keep_mask"):
        ops.quantize(torch.randn(4, 64, device=d), 2, -1, torch.zeros(4, 64, dtype=torch.bool))
