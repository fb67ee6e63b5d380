"""tacq.mixed_gemv_layer (a stored layer [N, bytes / N] whose header gives its
sizes) against the reference, which parses the header itself, and bitwise
against tacq.mixed_gemv_stored given the same sizes; opcheck, the fake kernel,
bad headers and bad tensors; and QuantizedLinear, which calls it on the CPU:
x_int8 kept in the header, eager and compiled."""

import re

import pytest
import torch

from tacq_ext import ops, reference

from test_mixed_gemv import XTYPES, random_x
from test_mixed_gemv_stored import make_layer, quantized_linear, six_tensor_forward, store


def stored_layer(N, K, bits, group_size, x_int8=False, counts=None, seed=0):
    """(layer buffer [N, bytes / N] with its header, the 1-D buffer, nnz)."""
    storage, N, nnz = store(make_layer(N, K, bits, group_size, counts=counts, seed=seed))
    ops.write_stored_header(storage, N, K, bits, group_size, nnz, x_int8)
    return storage.view(N, -1), storage, nnz


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size,counts", [
    (1, 32, -1, None), (37, 100, -1, None), (64, 192, 64, None), (96, 256, 32, [0] * 95 + [256]),
    (130, 512, 128, None)])
@pytest.mark.parametrize("M", [1, 5, 16, 40])
def test_equals_mixed_gemv_stored(cpu_isa, bits, N, K, group_size, counts, M):
    for x_int8 in (False, True):
        layer, storage, nnz = stored_layer(N, K, bits, group_size, x_int8, counts, seed=N + K + bits)
        for dtype in XTYPES:
            x = random_x(M, K, dtype, seed=M)
            y = ops.mixed_gemv_layer(x, layer)
            assert y.dtype == dtype and y.shape == (M, N)
            torch.testing.assert_close(y, ops.mixed_gemv_stored(x, storage, N, bits, group_size, nnz, x_int8),
                                       rtol=0, atol=0)


@pytest.mark.parametrize("x_int8", [False, True])
def test_against_the_reference(x_int8):
    layer, _, _ = stored_layer(40, 160, 3, 32, x_int8)
    x = torch.randn(2, 3, 160, generator=torch.Generator().manual_seed(3))
    y = ops.mixed_gemv_layer(x, layer)
    assert y.shape == (2, 3, 40)
    torch.testing.assert_close(y, reference.mixed_gemv_layer(x, layer), rtol=1e-5, atol=1e-5)


def test_opcheck():
    layer, _, _ = stored_layer(24, 64, 2, 32)
    for M, dtype in [(1, torch.float32), (5, torch.bfloat16), (16, torch.float16)]:
        torch.library.opcheck(torch.ops.tacq.mixed_gemv_layer.default, (random_x(M, 64, dtype), layer))


def test_fake_gives_n_from_the_shape_and_checks_the_tensors():
    layer, _, _ = stored_layer(8, 64, 3, 32)
    y = torch.ops.tacq.mixed_gemv_layer.default(torch.randn(2, 5, 64, device="meta"), layer.to("meta"))
    assert y.shape == (2, 5, 8) and y.device.type == "meta"
    with pytest.raises(RuntimeError, match="tacq.mixed_gemv_layer: layer must be 2-D"):
        torch.ops.tacq.mixed_gemv_layer.default(torch.randn(2, 64, device="meta"), layer.view(-1).to("meta"))


def _bad_cases():
    layer, storage, nnz = stored_layer(8, 64, 3, 32, counts=[1] * 8)
    x = torch.randn(2, 64)

    def with_field(index, value):
        """layer with int64 field `index` of its header (magic, N, K, bits,
        group_size, nnz, x_int8) set to value."""
        bad = layer.clone()
        bad.view(-1)[:64].view(torch.int64)[index] = value
        return bad

    misaligned = torch.zeros(storage.numel() + 64, dtype=torch.uint8)[1:storage.numel() + 1]
    misaligned.copy_(storage)
    return [
        ('header does not start with "TACQSL01"', (x, with_field(0, 0))),
        ('header does not start with "TACQSL01"', (x, torch.zeros_like(layer))),
        ("header says N = 8 rows but layer is [4,", (x, layer.view(4, -1))),
        ("header says N = 9 rows", (x, with_field(1, 9))),
        ("x has K = 96 columns but layer's header says K = 64", (torch.randn(2, 96), layer)),
        ("bits must be 2, 3 or 4", (x, with_field(3, 5))),
        ("group_size", (x, with_field(4, 48))),
        ("nnz must be in", (x, with_field(5, -1))),
        ("layer must hold", (x, with_field(5, nnz + 100))),
        ("x_int8 = 7, not 0 or 1", (x, with_field(6, 7))),
        ("layer must be 2-D", (x, storage)),
        ("layer must have dtype torch.uint8", (x, layer.view(torch.int32))),
        ("layer must be contiguous", (x, torch.zeros(8, 2 * layer.shape[1], dtype=torch.uint8)[:, ::2])),
        ("layer must start at a multiple of 64", (x, misaligned.view(8, -1))),
        ("layer must hold at least its 64-byte header", (x, torch.zeros(1, 32, dtype=torch.uint8))),
        ("x must have dtype", (x.double(), layer)),
        ("x must be \\[..., K\\]", (torch.tensor(1.0), layer)),
    ]


@pytest.mark.parametrize("message,args", _bad_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_names_the_argument(message, args):
    pattern = message.replace(".", r"\.").replace("(", r"\(").replace("[", r"\[") if "\\" not in message else message
    with pytest.raises(RuntimeError, match="tacq.mixed_gemv_layer: .*" + pattern):
        ops.mixed_gemv_layer(*args)


FAKE_CHECKED = ("layer must be 2-D", "layer must have dtype", "layer must be contiguous", "x must have dtype",
                "x must be")


@pytest.mark.parametrize("message,args", [c for c in _bad_cases() if c[0].startswith(FAKE_CHECKED)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_the_fake_kernel_raises_the_cpu_message(message, args):
    """What the fake kernel can check without the header's bytes, it words as the CPU kernel does."""
    def first_line(*tensors):
        with pytest.raises(RuntimeError) as info:
            torch.ops.tacq.mixed_gemv_layer.default(*tensors)
        return str(info.value).splitlines()[0]

    on_meta = (torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="meta") for a in args)
    assert first_line(*on_meta) == first_line(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_error_names_the_op_to_call():
    layer, _, _ = stored_layer(8, 64, 3, 32)
    with pytest.raises(RuntimeError, match="tacq.mixed_gemv_layer: .*call tacq.mixed_gemv_stored"):
        ops.mixed_gemv_layer(torch.randn(2, 64, device="cuda"), layer.cuda())


# ----------------------------------------------------------------------------- QuantizedLinear

def x_int8_forward(layer, x):
    b = layer._buffers
    return ops.mixed_gemv(x, b["packed"], b["scale"], b["zero"], layer.bits, layer.group_size,
                          b["row_ptr"], b["col_idx"], b["values"], True) + b["bias"]


def test_quantized_linear_keeps_x_int8_in_the_header_through_rebuilds():
    layer = quantized_linear()
    stored = layer._buffers.stored
    assert layer._buffers.reads_header and stored.shape == (48, stored.numel() // 48)
    x = torch.randn(3, 96)
    torch.testing.assert_close(layer(x), six_tensor_forward(layer, x), rtol=0, atol=0)
    layer.x_int8 = True
    torch.testing.assert_close(layer(x), x_int8_forward(layer, x), rtol=0, atol=0)
    layer.scale = layer.scale.clone()  # dropped, then rebuilt by the next forward: the flag is written again
    torch.testing.assert_close(layer(x), x_int8_forward(layer, x), rtol=0, atol=0)
    layer.x_int8 = False
    torch.testing.assert_close(layer(x), six_tensor_forward(layer, x), rtol=0, atol=0)


def test_compiled_quantized_linear_calls_it_without_int_arguments():
    """The compiled graph's Python wrapper calls mixed_gemv_layer with the
    activation and the layer only, and x_int8 set after compiling is read
    from the header without a recompile."""
    run_and_get_code = pytest.importorskip("torch._inductor.utils").run_and_get_code
    layer = quantized_linear().eval()
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)
    x = torch.randn(1, 96)
    with torch.no_grad():
        y, code = run_and_get_code(compiled, x)
        torch.testing.assert_close(y, six_tensor_forward(layer, x), rtol=0, atol=0)
        calls = re.findall(r"= torch\.ops\.tacq\.(\w+)\.default\((.*)\)$", "\n".join(code), re.MULTILINE)
        assert [op for op, _ in calls] == ["mixed_gemv_layer"], calls
        args = calls[0][1]
        while "(" in args:  # reinterpret_tensor(buf, (sizes), (strides), offset) -> reinterpret_tensor
            args = re.sub(r"\([^()]*\)", "", args)
        assert len(args.split(",")) == 2, calls  # x and the layer, no int argument
        layer.x_int8 = True
        torch.testing.assert_close(compiled(x), x_int8_forward(layer, x), rtol=0, atol=0)
