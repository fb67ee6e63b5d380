// The one place every tacq op schema is declared (README.md, Ops). Backend
// kernels register themselves in csrc/ops/{cpu,cuda}/*.cpp with
// TORCH_LIBRARY_IMPL; fake (meta) kernels live in python/tacq_ext/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(tacq, m) {
  // acc[N,K] += sum_b |grad_out[b]^T act[b]|, the absolute value taken per
  // sample before summing; grad_out [B,T,N] or [T,N], act [B,T,K] or [T,K].
  m.def("saliency_accumulate(Tensor(a!) acc, Tensor grad_out, Tensor act) -> ()");

  // Row- or group-wise asymmetric uniform quantization with the clipping
  // search of docs/method.md -> (codes uint8 [N,K], scale fp32 [N,G], zero fp32 [N,G]).
  m.def("quantize(Tensor w, int bits, int group_size, Tensor? keep_mask=None)"
        " -> (Tensor codes, Tensor scale, Tensor zero)");

  // codes uint8 [N,K] -> packed int32 [N, ceil(K/32)*bits] (docs/format.md).
  m.def("pack(Tensor codes, int bits) -> Tensor");

  // packed int32 [N, ceil(K/32)*bits] -> codes uint8 [N,K].
  m.def("unpack(Tensor packed, int bits, int K) -> Tensor");

  // -> scale * (code - zero) as [N,K] of `dtype` (default float32).
  m.def("dequantize(Tensor packed, Tensor scale, Tensor zero, int bits, int group_size,"
        " int K, ScalarType? dtype=None) -> Tensor");

  // y[..., N] = x[..., K] (dequant(packed) + CSR residual)^T, fp32
  // accumulation, returned in x's dtype, as F.linear; any number of rows M
  // (the product of x's leading sizes, 0 included): up to 16 run the fused
  // kernel, more a GEMM over dense blocks (CPU) or one launch per 16 (CUDA).
  // x_int8: x is first rounded to int8 per
  // block of 32 values along K (scale max|x|/127), which the AVX2 CPU kernel
  // multiplies as int8 (csrc/kernels/cpu/mixed_gemv.h, Int8Order).
  m.def("mixed_gemv(Tensor x, Tensor packed, Tensor scale, Tensor zero, int bits,"
        " int group_size, Tensor row_ptr, Tensor col_idx, Tensor values, bool x_int8=False) -> Tensor");

  // mixed_gemv with the layer's six tensors in one uint8 buffer, `storage`,
  // laid out as csrc/ops/stored_layer.h says (tacq_ext.ops.stored_layout):
  // N rows, K = x.size(-1), fp16 scale and zero, nnz residual entries. One
  // tensor argument instead of six, for compiled graphs (QuantizedLinear).
  // x_int8 has no default: compiled graphs then pass it by position, where a
  // keyword costs ~0.6 us more a call.
  m.def("mixed_gemv_stored(Tensor x, Tensor storage, int N, int bits, int group_size, int nnz,"
        " bool x_int8) -> Tensor");

  // mixed_gemv_stored of a stored layer seen as uint8 [N, bytes / N], its
  // header (stored_layer.h) giving K, bits, group_size, nnz and x_int8: no
  // Python int argument, each of which costs ~0.25 us of torch.ops' argument
  // parsing in a compiled graph's Python wrapper (five of them, a fifth of a
  // small layer's call). CPU only: a CUDA launch needs bits on the host, and
  // reading the header there would wait for the device; on CUDA QuantizedLinear
  // calls mixed_gemv_stored.
  m.def("mixed_gemv_layer(Tensor x, Tensor layer) -> Tensor");

  // out[M, N_out] = y[:, index]: the columns of y [M, N] (fp32, fp16 or bf16)
  // in the order of index int64 [N_out], each in [0, N). Puts the rows of a
  // layer stored in parts of different widths back in place
  // (python/tacq_ext/row_split.py). CPU kernel only: on other devices torch's
  // own index_select is already fast.
  m.def("gather_columns(Tensor y, Tensor index) -> Tensor");

  // y[..., N] = x[..., K] weight[N, K]^T for bf16 x (at most 16 rows, the
  // product of its leading sizes) and a bf16 weight: fp32 accumulation, y bf16
  // (nearest even), as F.linear. For the unquantized layers of a quantized
  // model at decoding batch sizes (the LM head). CPU kernel for AVX-512 BF16
  // only (an error elsewhere): torch's own GEMV serves other CPUs and devices.
  m.def("bf16_gemv(Tensor x, Tensor weight) -> Tensor");
}
