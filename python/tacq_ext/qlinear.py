"""QuantizedLinear: a drop-in nn.Linear holding packed low-bit codes, fp16
scale/zero and a CSR fp16 residual (docs/method.md step 6, docs/format.md)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from . import ops

# buffers of the stored format, whose dtypes are fixed whatever the module is cast to
QUANTIZED_TENSORS = ("packed", "scale", "zero", "row_ptr", "col_idx", "values")
FORMAT_DTYPES = (torch.int32, torch.float16, torch.float16, torch.int32, torch.int32, torch.float16)


def format_shapes(N: int, K: int, bits: int, G: int, nnz: int) -> dict:
    """{name: shape} of the six format tensors of an N x K layer."""
    return {"packed": (N, ops.packed_words_per_row(K, bits)), "scale": (N, G), "zero": (N, G),
            "row_ptr": (N + 1,), "col_idx": (nnz,), "values": (nnz,)}


class _LayerBuffers(dict):
    """QuantizedLinear's ``_buffers``, holding also its stored layer (one
    uint8 buffer of which the six format tensors are views, see
    QuantizedLinear.consolidate). Every other way a format tensor can be
    replaced (setattr, ``load_state_dict(assign=True)``, ``_apply``, or a
    direct ``_buffers`` write as accelerate's hooks do) writes through this
    dict, which then drops the stored layer: forward never reads a buffer that
    disagrees with the tensors."""

    __slots__ = ("stored", "stored_nnz", "reads_header")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stored, self.stored_nnz, self.reads_header = None, 0, False

    def __setitem__(self, name, value):
        if name in QUANTIZED_TENSORS and value is not self.get(name):
            self.stored = None
        super().__setitem__(name, value)

    def __delitem__(self, name):
        if name in QUANTIZED_TENSORS:
            self.stored = None
        super().__delitem__(name)


def stored_views(stored: torch.Tensor, layout: dict, shapes: dict) -> dict:
    """{name: view} of the six format tensors in a stored-layer buffer
    (``layout`` from ops.stored_layout), ``shapes`` giving each one's shape."""
    views = {}
    for name, dtype in zip(QUANTIZED_TENSORS, FORMAT_DTYPES):
        shape = shapes[name]
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        views[name] = stored[layout[name]:layout[name] + size].view(dtype).view(shape)
    return views


def stored_copy(tensors: dict, layout: dict, device=None) -> dict:
    """{name: view} of a new stored-layer buffer (``layout`` from
    ops.stored_layout) on ``device`` (default: the tensors') holding a copy
    of each of the six format tensors in ``tensors``, and the buffer itself
    under "stored"."""
    device = tensors["packed"].device if device is None else device
    stored = torch.empty(layout["bytes"], dtype=torch.uint8, device=device)
    views = stored_views(stored, layout, {name: tuple(t.shape) for name, t in tensors.items()})
    for name in QUANTIZED_TENSORS:
        views[name].copy_(tensors[name])
    return {"stored": stored, **views}


def _laid_out_buffer(tensors: dict, layout: dict) -> Optional[torch.Tensor]:
    """The buffer the six tensors are already views of, laid out as
    ``layout`` (as stored_copy makes them), as a uint8 tensor; else None."""
    storage = tensors["packed"].untyped_storage()
    if storage.nbytes() != layout["bytes"] or storage.data_ptr() % 64:
        return None
    for name, t in tensors.items():
        if (t.untyped_storage().data_ptr() != storage.data_ptr() or not t.is_contiguous()
                or t.storage_offset() * t.element_size() != layout[name]):
            return None
    return torch.empty(0, dtype=torch.uint8, device=tensors["packed"].device).set_(storage, 0, (layout["bytes"],))


def _consolidate_after_load(layer: "QuantizedLinear", incompatible_keys) -> None:
    layer.consolidate()


class QuantizedLinear(nn.Module):
    """y = x (dequant(packed) + R)^T + bias, by ops.mixed_gemv: batches of at
    most ops.MIXED_GEMV_MAX_ROWS (16) rows run its fused kernel, larger ones
    too, 16 rows a call, on CUDA and on the CPU up to ops.cpu_fused_rows_limit
    rows (by x's dtype and the layer's size); on the CPU longer prompts multiply
    blocks of the dense weight with a GEMM.

    ``x_int8`` (default False; ``set_int8_activations`` sets it on a whole
    model): x is rounded to int8 per 32-value block first (ops.mixed_gemv's
    x_int8), several times faster on AVX2 CPUs. A runtime choice, not part of
    the checkpoint.

    Buffers: packed int32 [N, ceil(K/32)*bits], scale/zero fp16 [N, G],
    row_ptr int32 [N+1], col_idx int32 [nnz], values fp16 [nnz], bias (optional).
    The six format tensors are views of one uint8 buffer, the stored layer
    (``consolidate``; ``ops.stored_layout``), which forward hands to
    ``ops.mixed_gemv_layer`` on the CPU (the buffer [N, bytes / N], its header
    giving the sizes and x_int8) and ``ops.mixed_gemv_stored`` elsewhere: one
    tensor a call instead of six, which is what a compiled graph pays for per
    tensor (a guard and a size check, ~1 us apiece), and on the CPU no int
    arguments either. Replacing a format tensor drops the stored layer until the next
    ``consolidate``: the loaders, ``from_quantized``, ``load_state_dict`` and
    device moves call it, and so does an eager forward that finds it dropped.
    A compiled forward that finds it dropped passes the six tensors."""

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, nnz: int = 0,
                 bias: bool = False, device=None, dtype=torch.float32):
        super().__init__()
        ops.check_bits("QuantizedLinear", bits)
        G = ops.check_group_size("QuantizedLinear", group_size, in_features)
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        self.x_int8 = False
        self._buffers = _LayerBuffers()
        words = ops.packed_words_per_row(in_features, bits)
        self.register_buffer("packed", torch.zeros(out_features, words, dtype=torch.int32, device=device))
        self.register_buffer("scale", torch.zeros(out_features, G, dtype=torch.float16, device=device))
        self.register_buffer("zero", torch.zeros(out_features, G, dtype=torch.float16, device=device))
        self.register_buffer("row_ptr", torch.zeros(out_features + 1, dtype=torch.int32, device=device))
        self.register_buffer("col_idx", torch.zeros(nnz, dtype=torch.int32, device=device))
        self.register_buffer("values", torch.zeros(nnz, dtype=torch.float16, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)
        self.register_load_state_dict_post_hook(_consolidate_after_load)
        self.consolidate()

    def consolidate(self) -> bool:
        """Makes the six format tensors views of one uint8 buffer laid out as
        ``ops.stored_layout`` (adopting it without a copy when they already
        are, as the loaders read them; else copying them into a new one) and
        has forward read it. Does nothing (returns False) unless the six are on
        one device other than meta, with the format's dtypes and this layer's
        shapes: forward then passes them one by one, and the op names what is
        wrong."""
        b = self._buffers
        if b.stored is not None:  # the tensors are still its views
            return True
        tensors = {name: b.get(name) for name in QUANTIZED_TENSORS}
        if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            return False
        N, K = self.out_features, self.in_features
        G, nnz = ops.check_group_size("QuantizedLinear", self.group_size, K), tensors["col_idx"].numel()
        shapes = format_shapes(N, K, self.bits, G, nnz)
        device = tensors["packed"].device
        if device.type == "meta" or any(
            t.device != device or t.dtype != dtype or tuple(t.shape) != shapes[name]
            for (name, t), dtype in zip(tensors.items(), FORMAT_DTYPES)
        ):
            return False
        layout = ops.stored_layout(N, K, self.bits, G, nnz)
        stored = _laid_out_buffer(tensors, layout)
        if stored is None:
            views = stored_copy(tensors, layout)
            stored = views.pop("stored")
            for name, view in views.items():
                dict.__setitem__(b, name, view)
        ops.write_stored_header(stored, N, K, self.bits, self.group_size, nnz, self.x_int8)
        b.reads_header = device.type == "cpu" and N > 0
        b.stored, b.stored_nnz = stored.view(N, -1) if N > 0 else stored, nnz
        return True

    @property
    def x_int8(self) -> bool:
        return self._x_int8

    @x_int8.setter
    def x_int8(self, enabled: bool) -> None:
        """Also written into the stored layer's header, which the CPU op reads."""
        self._x_int8 = bool(enabled)
        b = self._buffers
        if isinstance(b, _LayerBuffers) and b.stored is not None:
            ops.write_stored_header(b.stored, self.out_features, self.in_features, self.bits, self.group_size,
                                    b.stored_nnz, self._x_int8)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """The format tensors as copies of their own (``keep_vars``: the views
        themselves): views of one buffer with different dtypes are what
        ``torch.save`` refuses to pickle."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not keep_vars:
            for name in QUANTIZED_TENSORS:
                if prefix + name in destination:
                    destination[prefix + name] = destination[prefix + name].clone()

    def __getstate__(self):
        """Pickled (torch.save, copy.deepcopy) with the format tensors as
        copies of their own, for the same reason; unpickling rebuilds the
        stored layer."""
        state = self.__dict__.copy()
        state["_buffers"] = {name: t.clone() if name in QUANTIZED_TENSORS and t is not None else t
                             for name, t in self._buffers.items()}
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._buffers = _LayerBuffers(self._buffers)
        self.consolidate()

    def _apply(self, fn, recurse=True):
        """Casts of the module (.to(dtype), .half(), .float(), .bfloat16())
        reach the bias only: the stored format's tensors (int32 codes and CSR
        indices, fp16 scale, zero and residual values) move between devices
        but keep their dtypes, which the kernels require; a move makes a new
        stored layer on the new device."""
        format_tensors = {id(self._buffers[name]) for name in QUANTIZED_TENSORS}

        def moved_keeping_format(t):
            if id(t) not in format_tensors:
                return fn(t)
            probe = fn(t[:0])
            return fn(t) if probe.dtype == t.dtype else t.to(device=probe.device)

        module = super()._apply(moved_keeping_format, recurse)
        self.consolidate()
        return module

    @classmethod
    def from_quantized(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                       weight: torch.Tensor, keep: Optional[torch.Tensor], bits: int, group_size: int,
                       bias: Optional[torch.Tensor] = None) -> "QuantizedLinear":
        """codes [N,K] (kept positions hold zero), scale/zero [N,G] (fp16-exact),
        weight [N,K] the final weights: the residual stores weight - dequant at
        kept positions."""
        N, K = codes.shape
        layer = cls(K, N, bits, group_size, bias=bias is not None, device=codes.device,
                    dtype=bias.dtype if bias is not None else torch.float32)
        layer.packed = ops.pack(codes.contiguous(), bits)
        layer.scale, layer.zero = scale.half().contiguous(), zero.half().contiguous()
        if keep is not None and bool(keep.any()):
            deq = ops.dequantize(layer.packed, layer.scale, layer.zero, bits, group_size, K)
            rows, cols = keep.nonzero(as_tuple=True)
            layer.row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64, device=codes.device),
                                       keep.sum(1).cumsum(0)]).to(torch.int32)
            layer.col_idx = cols.to(torch.int32)
            layer.values = (weight[rows, cols].float() - deq[rows, cols]).half()
        if bias is not None:
            layer.bias = bias.detach().clone()
        layer.consolidate()
        return layer

    @property
    def nnz(self) -> int:
        return self.col_idx.numel()

    def dense_weight(self, dtype=torch.float32) -> torch.Tensor:
        """dequant(codes) + R as a dense [N, K] tensor."""
        W = ops.dequantize(self.packed, self.scale, self.zero, self.bits, self.group_size,
                           self.in_features, torch.float32)
        if self.nnz:
            counts = (self.row_ptr[1:] - self.row_ptr[:-1]).long()
            rows = torch.repeat_interleave(torch.arange(self.out_features, device=W.device), counts,
                                           output_size=self.nnz)
            W = W.index_put((rows, self.col_idx.long()), self.values.float(), accumulate=True)
        return W.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The buffers from _buffers directly: each self.<buffer> goes through
        # nn.Module.__getattr__ after a failed lookup that builds an
        # AttributeError, about 0.7 us apiece, as long as a small layer's GEMV.
        # x of any shape [..., K] goes to the op as it is: reshaping it here
        # cost ~2.8 us a call, a third of a 192-wide layer's time.
        b = self._buffers
        if b.stored is None and not torch.compiler.is_compiling():
            with torch.inference_mode(False):  # a buffer that outlives this call
                self.consolidate()
        if b.reads_header and b.stored is not None:
            y = ops.mixed_gemv_layer(x, b.stored)
        elif b.stored is not None:
            y = ops.mixed_gemv_stored(x, b.stored, self.out_features, self.bits, self.group_size,
                                      b.stored_nnz, self.x_int8)
        else:
            y = ops.mixed_gemv(x, b["packed"], b["scale"], b["zero"], self.bits, self.group_size,
                               b["row_ptr"], b["col_idx"], b["values"], self.x_int8)
        if b["bias"] is not None:
            y = y + b["bias"].to(y.dtype)
        return y

    def stored_bits(self) -> int:
        """Bits of the stored format's tensors (codes, scale, zero, CSR residual)."""
        return sum(8 * t.numel() * t.element_size() for t in (self._buffers[n] for n in QUANTIZED_TENSORS))

    def avg_bits(self) -> float:
        return average_bits(self.out_features, self.in_features, self.bits, self.scale.shape[1], self.nnz)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, nnz={self.nnz}, bias={self.bias is not None}")


def set_int8_activations(model: nn.Module, enabled: bool = True) -> int:
    """Sets ``x_int8`` on every QuantizedLinear of ``model``; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    for layer in layers:
        layer.x_int8 = enabled
    return len(layers)


def average_bits(N: int, K: int, bits: int, G: int, nnz: int) -> float:
    """docs/method.md, Average bits: (N K b + 32 N G + 48 nnz + 32 (N+1)) / (N K)."""
    return (N * K * bits + 32 * N * G + 48 * nnz + 32 * (N + 1)) / (N * K)
