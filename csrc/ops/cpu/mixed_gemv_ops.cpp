// CPU entry points of tacq.mixed_gemv, tacq.mixed_gemv_stored (the same
// product, the layer's tensors in one buffer: csrc/ops/stored_layer.h) and
// tacq.mixed_gemv_layer (the same, its sizes read from that buffer): tensor
// checks (CSR rows here, CSR columns by the kernels as they read them), the
// output, and the TORCH_LIBRARY_IMPL registrations. x [..., K] is taken as its rows [M, K]
// (y [..., N], as F.linear). Up to cpu_fused_rows_limit rows of x run the fused
// kernel, kMixedGemvMaxRows rows a call: the host layer (csrc/host) stages x
// (any strides, fp32/fp16/bf16), picks the ISA kernel and threads over rows;
// more rows (a prompt) take a GEMM over blocks of the dense weight.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include <algorithm>

#include "../activation_int8.h"
#include "../validate.h"
#include "host_call.h"
#include "mixed_gemv_route.h"

namespace tacq {
namespace {

tacq_dtype x_dtype(at::ScalarType s) {
  return s == at::kHalf ? TACQ_DTYPE_F16 : (s == at::kBFloat16 ? TACQ_DTYPE_BF16 : TACQ_DTYPE_F32);
}

// More than cpu_fused_rows_limit rows: torch's threads split the weight's
// rows, and each makes its rows dense in x's dtype (bf16 straight from the
// host layer, fp16 rounded from fp32 by torch), as F.linear with the dense
// weight would have it, a block at a time in a scratch of its own, and
// multiplies x by the block with at::mm into its columns of y; with x_int8,
// in fp32 on the rounded x. Inside the parallel region that GEMM runs on the
// thread that wrote the block, so no core reads a block from another core's
// cache: a GEMM threaded over a block one thread had written ran at a
// fraction of its speed (Zen 4 VM, 2 threads, 54 rows of fp32 x, 2-bit
// 192x192: 125 us against F.linear's 55 and 51 for a one-thread GEMM of a
// freshly written block; docs/benchmarks.md, Dense blocks per thread). Blocks
// are ~1 MiB, at least 128 rows (with fewer the GEMM is far from its peak:
// 512 rows of bf16 x at 4096x14336, blocks of 32 rows 11-25 % slower). No
// [N, K] copy of the weight is made.
at::Tensor multiply_dense_blocks(const char* op, const at::Tensor& x, const tacq_weights& w, bool x_int8) {
  const at::Tensor xs = x_int8 ? round_int8_blocks(op, x) : x;
  const int64_t N = w.N, K = w.K;
  const at::ScalarType dense_type = xs.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  const int64_t block = std::max<int64_t>(128, (int64_t{1} << 20) / (K * at::elementSize(dense_type)) / 16 * 16);
  // At least 32 weight rows a thread: fewer leave its GEMM too narrow to pay
  // for the thread's start.
  constexpr int64_t kMinRowsPerThread = 32;
  at::Tensor y = at::empty({x.size(0), N}, xs.options());
  at::parallel_for(0, N, kMinRowsPerThread, [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // as on the calling thread: a worker starts without it
    const int64_t rows_here = std::min(block, end - begin);
    at::Tensor dense = at::empty({rows_here, K}, x.options().dtype(dense_type));
    for (int64_t first = begin; first < end; first += block) {
      const int64_t rows = std::min(block, end - first);
      const tacq_status status = host::dense_rows(w, first, first + rows, x_dtype(dense_type), dense.data_ptr(), 1);
      if (status == TACQ_ERROR_BAD_CSR) check_csr_columns(op, w.row_ptr, w.col_idx, N, K);
      check_host(op, status);
      at::Tensor y_block = y.narrow(1, first, rows);
      at::mm_out(y_block, xs, dense.narrow(0, 0, rows).to(xs.scalar_type()).t());
    }
  });
  return y.to(x.scalar_type());
}

// x [..., K] (checked: K >= 1) -> y [..., N] for the checked weights w (row_ptr
// included, so the host layer does not read it again on each call). The
// fused kernel reads a contiguous x in place as its rows (no reshaped tensor:
// a decoding step's x is [1, 1, K], and making its [1, K] view costs about as
// much as a small layer's product); other strides go through activation_rows.
at::Tensor mixed_gemv_rows(const char* op, const at::Tensor& x_any, const tacq_weights& w, bool x_int8) {
  const int64_t K = x_any.size(-1), N = w.N, rows = x_any.numel() / K;
  const std::vector<int64_t> y_shape = output_shape(x_any, N);
  if (rows == 0) return at::empty(y_shape, x_any.options());
  if (rows > kMixedGemvMaxRows && rows > cpu_fused_rows_limit(x_any.scalar_type(), N, K))
    return multiply_dense_blocks(op, activation_rows(x_any), w, x_int8).view(y_shape);
  const bool in_place = x_any.is_contiguous();
  const at::Tensor x = in_place ? x_any : activation_rows(x_any);
  const int64_t stride_m = in_place ? K : x.stride(0), stride_k = in_place ? 1 : x.stride(1);
  at::Tensor y = at::empty(y_shape, x_any.options().dtype(at::kFloat));
  const auto* x_bytes = static_cast<const char*>(x.data_ptr());
  tacq_status status = TACQ_OK;
  for (int64_t first = 0; first < rows && status == TACQ_OK; first += kMixedGemvMaxRows) {
    const host::Activations a{x_bytes + first * stride_m * x.element_size(), x_dtype(x.scalar_type()),
                              std::min(kMixedGemvMaxRows, rows - first), K, stride_m, stride_k, x_int8};
    status = host::mixed_gemv(w, a, y.data_ptr<float>() + first * N, torch_threads(), /*row_ptr_checked=*/true);
  }
  // The full column check names the offending entry with torch's words.
  if (status == TACQ_ERROR_BAD_CSR) check_csr_columns(op, w.row_ptr, w.col_idx, N, K);
  TORCH_CHECK_VALUE(status != TACQ_ERROR_BAD_VALUE, "tacq.", op, ": x contains NaN or infinity, which "
                    "x_int8=True cannot round to int8");
  check_host(op, status);
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

// x [..., K] -> y [..., N], as F.linear: the rows of x in one call.
at::Tensor mixed_gemv_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                          const at::Tensor& zero, int64_t bits, int64_t group_size,
                          const at::Tensor& row_ptr, const at::Tensor& col_idx,
                          const at::Tensor& values, bool x_int8) {
  check_mixed_gemv_args("mixed_gemv", x, packed, scale, zero, bits, group_size, row_ptr, col_idx, values);
  tacq_weights w = weights_view(packed, scale, zero, bits, group_size, x.size(-1));
  w.nnz = col_idx.size(0);
  w.row_ptr = row_ptr.data_ptr<int32_t>();
  w.col_idx = col_idx.data_ptr<int32_t>();
  w.values = reinterpret_cast<const uint16_t*>(values.data_ptr<at::Half>());
  return mixed_gemv_rows("mixed_gemv", x, w, x_int8);
}

// The same for a stored layer (checked): the weights' pointers are its sections.
at::Tensor stored_rows(const char* op, const at::Tensor& x, const at::Tensor& storage, const StoredLayout& s,
                       int64_t N, int64_t bits, int64_t group_size, int64_t nnz, bool x_int8) {
  const uint8_t* base = storage.data_ptr<uint8_t>();
  tacq_weights w{};
  w.N = N;
  w.K = x.size(-1);
  w.bits = static_cast<int32_t>(bits);
  w.scale_dtype = TACQ_DTYPE_F16;
  w.group_size = group_size;
  w.packed = reinterpret_cast<const int32_t*>(base + s.packed);
  w.scale = base + s.scale;
  w.zero = base + s.zero;
  w.nnz = nnz;
  w.row_ptr = reinterpret_cast<const int32_t*>(base + s.row_ptr);
  w.col_idx = reinterpret_cast<const int32_t*>(base + s.col_idx);
  w.values = reinterpret_cast<const uint16_t*>(base + s.values);
  return mixed_gemv_rows(op, x, w, x_int8);
}

at::Tensor mixed_gemv_stored_cpu(const at::Tensor& x, const at::Tensor& storage, int64_t N, int64_t bits,
                                 int64_t group_size, int64_t nnz, bool x_int8) {
  constexpr const char* op = "mixed_gemv_stored";
  const StoredLayout s = check_mixed_gemv_stored_args(op, x, storage, N, bits, group_size, nnz).layout;
  return stored_rows(op, x, storage, s, N, bits, group_size, nnz, x_int8);
}

// The same with the sizes and x_int8 read from the stored layer's header.
at::Tensor mixed_gemv_layer_cpu(const at::Tensor& x, const at::Tensor& layer) {
  constexpr const char* op = "mixed_gemv_layer";
  const StoredHeader h = read_stored_header(op, x, layer);
  const StoredLayout s = check_mixed_gemv_stored_args(op, x, layer, h.N, h.bits, h.group_size, h.nnz, "layer").layout;
  return stored_rows(op, x, layer, s, h.N, h.bits, h.group_size, h.nnz, h.x_int8 != 0);
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) {
  m.impl("mixed_gemv", &mixed_gemv_cpu);
  m.impl("mixed_gemv_stored", &mixed_gemv_stored_cpu);
  m.impl("mixed_gemv_layer", &mixed_gemv_layer_cpu);
}

}  // namespace tacq
