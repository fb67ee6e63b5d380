"""tacq.mixed_gemv_stored (a layer's six tensors in one buffer) against the
reference (which reads the buffer by the documented layout) and, bit for bit,
tacq.mixed_gemv on the same tensors; the layout, opcheck and bad input; and
QuantizedLinear's stored layer: built, dropped when a tensor is replaced
(by every route), rebuilt, moved, copied, saved and compiled."""

import copy

import pytest
import torch

from tacq_ext import QuantizedLinear, ops, reference

from test_mixed_gemv import XTYPES, check, make_layer, random_x

SECTIONS = ("packed", "scale", "zero", "row_ptr", "col_idx", "values")


def store(layer, device="cpu"):
    """(storage, N, nnz): the layer's tensors (scale and zero as fp16) in a stored-layer buffer."""
    N, K = layer.codes.shape
    G = layer.scale.shape[1]
    nnz = layer.col_idx.numel()
    layout = ops.stored_layout(N, K, layer.bits, G, nnz)
    storage = torch.zeros(layout["bytes"], dtype=torch.uint8)
    tensors = (layer.packed, layer.scale.half(), layer.zero.half(), layer.row_ptr, layer.col_idx, layer.values)
    for name, t in zip(SECTIONS, tensors):
        storage[layout[name]:layout[name] + t.numel() * t.element_size()] = t.contiguous().view(-1).view(torch.uint8)
    return storage.to(device), N, nnz


def stored_dense(storage, N, K, bits, group_size, nnz):
    """The layer's weight (dequant + residual, fp64) read from the buffer by the reference."""
    t = reference.stored_sections(storage.cpu(), N, K, bits, reference.num_groups(K, group_size)[0], nnz)
    return (reference.dequantize(t["packed"], t["scale"], t["zero"], bits, group_size, K).double()
            + reference.csr_to_dense(t["row_ptr"], t["col_idx"], t["values"], N, K).double())


def six_tensor_gemv(x, layer, device):
    args = (layer.packed, layer.scale.half(), layer.zero.half(), layer.bits, layer.group_size,
            layer.row_ptr, layer.col_idx, layer.values)
    return ops.mixed_gemv(x.to(device), *(a.to(device) if isinstance(a, torch.Tensor) else a for a in args))


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(1, 32, -1), (37, 100, -1), (64, 192, 64), (130, 256, 32),
                                            (16, 4096, 128), (0, 64, -1)])
def test_layout(bits, N, K, group_size):
    G = 1 if group_size == -1 else K // group_size
    nnz = 3 * N
    layout = ops.stored_layout(N, K, bits, G, nnz)
    storage = torch.arange(layout["bytes"]).to(torch.uint8)
    for name, t in reference.stored_sections(storage, N, K, bits, G, nnz).items():
        assert t.numel() == 0 or t.data_ptr() - storage.data_ptr() == layout[name], name
    sizes = {"header": 64, "packed": N * ((K + 31) // 32) * bits * 4, "scale": N * G * 2, "zero": N * G * 2,
             "row_ptr": (N + 1) * 4, "col_idx": nnz * 4, "values": nnz * 2}
    assert layout["header"] == 0
    end = 0
    for name in ("header",) + SECTIONS:  # in order, 64-byte aligned, not overlapping, no more padding than alignment
        assert layout[name] % 64 == 0 and end <= layout[name] < end + 64
        end = layout[name] + sizes[name]
    aligned_end = (end + 63) // 64 * 64  # then up to a multiple of N, so that it can be seen as [N, bytes / N]
    if N == 0:
        assert layout["bytes"] == aligned_end
    else:
        assert layout["bytes"] % N == 0 and aligned_end <= layout["bytes"] < aligned_end + N


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size,counts", [
    (1, 32, -1, None), (37, 100, -1, None), (64, 192, 64, None), (96, 256, 32, [0] * 95 + [256]),
    (48, 192, -1, [0] * 48), (130, 512, 128, None)])
@pytest.mark.parametrize("M", [1, 3, 16, 17, 200])
def test_equals_mixed_gemv(device, cpu_isa, bits, N, K, group_size, counts, M):
    layer = make_layer(N, K, bits, group_size, counts=counts, seed=N + K + bits)
    storage, N, nnz = store(layer, device)
    for dtype in XTYPES:
        x = random_x(M, K, dtype, seed=M)
        y = ops.mixed_gemv_stored(x.to(device), storage, N, bits, group_size, nnz)
        assert y.dtype == dtype and y.shape == (M, N)
        torch.testing.assert_close(y, six_tensor_gemv(x, layer, device), rtol=0, atol=0)
        if M <= ops.MIXED_GEMV_MAX_ROWS:  # one fused call (more rows: test_mixed_gemv.py holds those routes)
            check(y, x, stored_dense(storage, N, K, bits, group_size, nnz), device)


def test_reference_reads_the_buffer_as_the_op():
    layer = make_layer(40, 160, 3, 32)
    storage, N, nnz = store(layer)
    x = random_x(4, 160, torch.float32)
    torch.testing.assert_close(ops.mixed_gemv_stored(x, storage, N, 3, 32, nnz),
                               reference.mixed_gemv_stored(x, storage, N, 3, 32, nnz), rtol=1e-5, atol=1e-5)


def test_leading_dims_strides_int8_and_empty(device):
    layer = make_layer(40, 96, 3, 32)
    storage, N, nnz = store(layer, device)
    x = torch.randn(2, 3, 5, 192)[..., ::2].to(device)  # non-contiguous [2, 3, 5, 96]
    y = ops.mixed_gemv_stored(x, storage, N, 3, 32, nnz)
    assert y.shape == (2, 3, 5, 40)
    assert torch.equal(ops.mixed_gemv_stored(x, storage.view(N, -1), N, 3, 32, nnz), y)  # as QuantizedLinear keeps it
    torch.testing.assert_close(y, six_tensor_gemv(x, layer, device).view(2, 3, 5, 40), rtol=0, atol=0)
    y8 = ops.mixed_gemv_stored(x, storage, N, 3, 32, nnz, x_int8=True)
    torch.testing.assert_close(y8, ops.mixed_gemv(x, *(t.to(device) for t in (layer.packed, layer.scale.half(),
                               layer.zero.half())), 3, 32, *(t.to(device) for t in layer[3:6]), True),
                               rtol=0, atol=0)
    assert ops.mixed_gemv_stored(x[:, :0], storage, N, 3, 32, nnz).shape == (2, 0, 5, 40)
    for dtype in XTYPES:  # contiguous, read in place: 40 rows, 16 a call
        x = torch.randn(2, 20, 96).to(dtype).to(device)
        torch.testing.assert_close(ops.mixed_gemv_stored(x, storage, N, 3, 32, nnz),
                                   six_tensor_gemv(x.reshape(40, 96), layer, device).view(2, 20, 40), rtol=0, atol=0)
        check(ops.mixed_gemv_stored(x[:1, :3], storage, N, 3, 32, nnz).view(3, 40), x[0, :3].cpu(),
              stored_dense(storage, N, 96, 3, 32, nnz), device)


@pytest.mark.parametrize("bits", [2, 4])
def test_opcheck(device, bits):
    layer = make_layer(24, 64, bits, 32)
    storage, N, nnz = store(layer, device)
    for M, dtype in [(1, torch.float32), (5, torch.bfloat16), (16, torch.float16)]:
        torch.library.opcheck(torch.ops.tacq.mixed_gemv_stored.default,
                              (random_x(M, 64, dtype).to(device), storage, N, bits, 32, nnz, False))


def _bad_cases():
    layer = make_layer(8, 64, 3, 32, counts=[1] * 8)
    storage, N, nnz = store(layer)
    x = torch.randn(2, 64)
    bytes_ = storage.numel()
    row_ptr_at, col_idx_at = (ops.stored_layout(8, 64, 3, 2, 8)[k] for k in ("row_ptr", "col_idx"))

    def corrupt(offset, value):
        s = storage.clone()
        s[offset:offset + 4] = torch.tensor([value], dtype=torch.int32).view(torch.uint8)
        return s

    misaligned = torch.zeros(bytes_ + 64, dtype=torch.uint8)[1:bytes_ + 1]
    misaligned.copy_(storage)
    return [
        ("storage must have dtype torch.uint8", (x, storage.view(torch.int32), N, 3, 32, nnz)),
        ("storage must hold", (x, storage[:-64], N, 3, 32, nnz)),
        ("storage must be contiguous", (x, torch.zeros(2 * bytes_, dtype=torch.uint8)[::2], N, 3, 32, nnz)),
        ("storage must start at a multiple of 64", (x, misaligned, N, 3, 32, nnz)),
        ("storage must hold", (x, storage, N + 1, 3, 32, nnz)),
        ("storage must hold", (x, storage, N, 3, 32, nnz + 16)),
        ("storage must hold", (x, storage, N, 2, 32, nnz)),
        ("N must be in", (x, storage, -1, 3, 32, nnz)),
        ("N must be in", (x, storage, 2**40, 3, 32, nnz)),
        ("nnz must be in", (x, storage, N, 3, 32, -1)),
        ("bits must be 2, 3 or 4", (x, storage, N, 5, 32, nnz)),
        ("group_size", (x, storage, N, 3, 48, nnz)),
        ("x must have dtype", (x.double(), storage, N, 3, 32, nnz)),
        ("x must be [..., K]", (torch.tensor(1.0), storage, N, 3, 32, nnz)),
        ("row_ptr[0] must be 0", (x, corrupt(row_ptr_at, 1), N, 3, 32, nnz)),
        ("row_ptr must be non-decreasing", (x, corrupt(row_ptr_at + 12, 7), N, 3, 32, nnz)),
        ("col_idx[0] = 64", (x, corrupt(col_idx_at, 64), N, 3, 32, nnz)),
        ("col_idx[0] = -5", (x, corrupt(col_idx_at, -5), N, 3, 32, nnz)),
    ]


@pytest.mark.parametrize("message,args", _bad_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_names_the_argument(message, args):
    with pytest.raises(RuntimeError, match="tacq.mixed_gemv_stored: .*" + message.replace("[", r"\[")
                       .replace("(", r"\(").replace(".", r"\.")):
        ops.mixed_gemv_stored(*args)


def test_fake_checks_the_size():
    layer = make_layer(8, 64, 3, 32)
    storage, N, nnz = store(layer)
    with pytest.raises(RuntimeError, match="storage must hold"):
        torch.ops.tacq.mixed_gemv_stored.default(torch.randn(2, 64, device="meta"),
                                                 storage[:-64].to("meta"), N, 3, 32, nnz, False)
    y = torch.ops.tacq.mixed_gemv_stored.default(torch.randn(2, 64, device="meta"), storage.to("meta"),
                                                 N, 3, 32, nnz, False)
    assert y.shape == (2, 8) and y.device.type == "meta"


# ----------------------------------------------------------------------------- QuantizedLinear's stored layer

def quantized_linear(N=48, K=96, bits=3, group_size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = K // group_size
    codes = torch.randint(0, 2 ** bits, (N, K), generator=g).to(torch.uint8)
    scale = (torch.rand(N, G, generator=g) * 0.05 + 0.01).half().float()
    zero = torch.randint(0, 2 ** bits, (N, G), generator=g).float()
    weight = torch.randn(N, K, generator=g)
    keep = torch.rand(N, K, generator=g) < 0.05
    return QuantizedLinear.from_quantized(codes, scale, zero, weight, keep, bits, group_size,
                                          bias=torch.randn(N, generator=g))


def six_tensor_forward(layer, x):
    b = layer._buffers
    y = ops.mixed_gemv(x, b["packed"], b["scale"], b["zero"], layer.bits, layer.group_size,
                       b["row_ptr"], b["col_idx"], b["values"])
    return y + b["bias"]


def stored_of(layer):
    return layer._buffers.stored


def is_view_of_stored(layer):
    s = stored_of(layer)
    lo, hi = s.data_ptr(), s.data_ptr() + s.numel()
    return all(lo <= layer._buffers[n].data_ptr() < hi or layer._buffers[n].numel() == 0 for n in SECTIONS)


def test_built_by_from_quantized_and_read_by_forward():
    layer = quantized_linear()
    assert stored_of(layer) is not None and is_view_of_stored(layer)
    x = torch.randn(3, 96)
    torch.testing.assert_close(layer(x), six_tensor_forward(layer, x), rtol=0, atol=0)


@pytest.mark.parametrize("route", ["setattr", "buffers_dict", "load_state_dict_assign", "del_and_register"])
def test_replacing_a_tensor_drops_it_and_forward_uses_the_new_one(route):
    layer, other = quantized_linear(seed=0), quantized_linear(seed=1)
    new_packed = other.packed.clone()
    if route == "setattr":
        layer.packed = new_packed
    elif route == "buffers_dict":  # as accelerate's set_module_tensor_to_device does
        layer._buffers["packed"] = new_packed
    elif route == "load_state_dict_assign":
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        state["packed"] = new_packed
        assert layer.load_state_dict(state, assign=True)
    else:
        del layer.packed
        assert stored_of(layer) is None
        layer.register_buffer("packed", new_packed)
    x = torch.randn(2, 96)
    expected = six_tensor_forward(layer, x)
    assert torch.equal(layer._buffers["packed"], new_packed)
    if route != "load_state_dict_assign":  # load_state_dict rebuilds it at once
        assert stored_of(layer) is None
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    assert stored_of(layer) is not None and is_view_of_stored(layer)  # rebuilt by the eager forward


def same_shape_state(layer):
    """A state dict for `layer` with other codes and residual values."""
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["packed"] = quantized_linear(seed=1).packed
    state["values"] = torch.randn(layer.nnz).half()
    return state


def test_views_of_a_laid_out_buffer_are_adopted_without_a_copy():
    """As the loaders read a layer (stored_copy), consolidate takes the buffer
    the tensors already are views of; views laid out otherwise are copied."""
    from tacq_ext.qlinear import stored_copy

    source, layer = quantized_linear(seed=1), quantized_linear()
    G = source.scale.shape[1]
    tensors = {n: source._buffers[n].clone() for n in SECTIONS}
    views = stored_copy(tensors, ops.stored_layout(48, 96, 3, G, source.nnz))
    for name in SECTIONS:
        setattr(layer, name, views[name])
    assert stored_of(layer) is None and layer.consolidate()
    assert stored_of(layer).data_ptr() == views["stored"].data_ptr()
    assert all(layer._buffers[n] is views[n] for n in SECTIONS)
    x = torch.randn(2, 96)
    assert all(torch.equal(layer._buffers[n], source._buffers[n]) for n in SECTIONS)
    torch.testing.assert_close(layer(x), six_tensor_forward(layer, x), rtol=0, atol=0)
    shifted = torch.zeros(views["stored"].numel() + 64, dtype=torch.uint8)[64:]
    shifted.copy_(views["stored"])  # the same bytes inside a bigger buffer: copied, not adopted
    layer.packed = shifted[:views["packed"].numel() * 4].view(torch.int32).view(views["packed"].shape)
    assert layer.consolidate() and stored_of(layer).untyped_storage().data_ptr() != shifted.untyped_storage().data_ptr()


def test_in_place_edits_and_load_state_dict_copy_keep_it():
    layer, other = quantized_linear(), quantized_linear()
    other.load_state_dict(same_shape_state(layer), assign=True)
    stored = stored_of(layer)
    layer.load_state_dict(other.state_dict())
    x = torch.randn(2, 96)
    torch.testing.assert_close(layer(x), other(x), rtol=0, atol=0)
    assert stored_of(layer) is stored
    with torch.no_grad():
        layer.values.mul_(2)
    torch.testing.assert_close(layer(x), six_tensor_forward(layer, x), rtol=0, atol=0)
    assert stored_of(layer) is stored


def test_rebuilt_in_inference_mode_is_a_normal_tensor():
    layer = quantized_linear()
    layer.scale = layer.scale.clone()
    with torch.inference_mode():
        layer(torch.randn(1, 96))
    assert stored_of(layer) is not None and not stored_of(layer).is_inference()
    layer.load_state_dict(same_shape_state(layer))  # copies into the views: must be allowed


def test_casts_moves_copies_and_meta():
    layer = quantized_linear()
    # bf16-exact x: the cast layer's error is then only bf16's rounding of the
    # bias and of y (an unseeded fp32 x, rounded to bf16, sometimes missed the bound)
    x = torch.randn(2, 96, generator=torch.Generator().manual_seed(1)).bfloat16().float()
    expected = six_tensor_forward(layer, x)
    layer.to(torch.bfloat16)
    assert stored_of(layer) is not None and layer.scale.dtype == torch.float16 and layer.bias.dtype == torch.bfloat16
    twin = copy.deepcopy(layer)
    for m in (layer, twin):
        torch.testing.assert_close(m(x.bfloat16()).float(), expected, rtol=1e-2, atol=1e-2)
        assert is_view_of_stored(m)
    assert stored_of(twin).data_ptr() != stored_of(layer).data_ptr()
    empty = QuantizedLinear(96, 48, 3, 32, nnz=5, device="meta")
    assert stored_of(empty) is None
    empty.to_empty(device="cpu")
    assert stored_of(empty) is not None and is_view_of_stored(empty)


def test_torch_save_of_the_layer_and_of_its_state_dict(tmp_path):
    """torch.save refuses views of one buffer with different dtypes: the
    state dict and the pickled layer hold copies of their own."""
    layer = quantized_linear()
    x = torch.randn(2, 96)
    torch.save(layer.state_dict(), tmp_path / "state.pt")
    twin = quantized_linear()
    twin.load_state_dict(same_shape_state(twin))
    twin.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    for m in (twin, loaded):
        assert stored_of(m) is not None and is_view_of_stored(m)
        torch.testing.assert_close(m(x), layer(x), rtol=0, atol=0)
    assert all(layer.state_dict()[n].data_ptr() != layer._buffers[n].data_ptr() for n in SECTIONS)
    assert all(layer.state_dict(keep_vars=True)[n] is layer._buffers[n] for n in SECTIONS)


@pytest.mark.parametrize("bad_scale,message", [
    (lambda s: s.double(), "scale must have dtype"), (lambda s: s.reshape(-1), "scale must be 2-D"),
    (lambda s: s[0, 0], "scale must be 2-D")])
def test_a_bad_tensor_falls_back_to_the_op_that_names_it(bad_scale, message):
    layer = quantized_linear()
    layer.scale = bad_scale(layer.scale)
    assert not layer.consolidate()
    with pytest.raises(RuntimeError, match="tacq.mixed_gemv: " + message):
        layer(torch.randn(1, 96))


def test_compiled_with_the_cpp_wrapper():
    """Inductor's C++ wrapper (docs/usage.md recommends it for small models)
    calls the op from generated C++: the same outputs as the op, bitwise, for
    a decoding step and for a prompt past the fused kernel's rows."""
    layer = quantized_linear().eval()
    compiled = torch.compile(layer, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})
    with torch.no_grad():
        for rows in (1, 40):
            x = torch.randn(1, rows, 96, generator=torch.Generator().manual_seed(rows))
            torch.testing.assert_close(compiled(x), six_tensor_forward(layer, x), rtol=0, atol=0)


def test_compiled_forward_reads_it_and_follows_replacements():
    layer = quantized_linear().eval()
    x = torch.randn(1, 96)
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), six_tensor_forward(layer, x), rtol=0, atol=0)
        layer._buffers["packed"] = quantized_linear(seed=1).packed  # dropped: the compiled call must notice
        torch.testing.assert_close(compiled(x), six_tensor_forward(layer, x), rtol=0, atol=0)
        layer.consolidate()
        torch.testing.assert_close(compiled(x), six_tensor_forward(layer, x), rtol=0, atol=0)
