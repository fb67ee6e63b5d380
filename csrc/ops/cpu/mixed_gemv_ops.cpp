// CPU entry point of tacq.mixed_gemv: tensor checks (CSR rows here, CSR
// columns by the kernels as they read them), the output, and the
// TORCH_LIBRARY_IMPL registration. The host layer (csrc/host) stages x (any
// strides, fp32/fp16/bf16), picks the ISA kernel and threads over rows.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../validate.h"
#include "host_call.h"

namespace tacq {
namespace {

tacq_dtype x_dtype(at::ScalarType s) {
  return s == at::kHalf ? TACQ_DTYPE_F16 : (s == at::kBFloat16 ? TACQ_DTYPE_BF16 : TACQ_DTYPE_F32);
}

at::Tensor mixed_gemv_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                          const at::Tensor& zero, int64_t bits, int64_t group_size,
                          const at::Tensor& row_ptr, const at::Tensor& col_idx,
                          const at::Tensor& values, bool x_int8) {
  const auto [N, G, group_len] = check_mixed_gemv_args("mixed_gemv", x, packed, scale, zero, bits,
                                                       group_size, row_ptr, col_idx, values);
  const int64_t M = x.size(0), K = x.size(1);
  tacq_weights w = weights_view(packed, scale, zero, bits, group_size, K);
  w.nnz = col_idx.size(0);
  w.row_ptr = row_ptr.data_ptr<int32_t>();
  w.col_idx = col_idx.data_ptr<int32_t>();
  w.values = reinterpret_cast<const uint16_t*>(values.data_ptr<at::Half>());
  const host::Activations a{x.data_ptr(), x_dtype(x.scalar_type()), M, K, x.stride(0), x.stride(1), x_int8};
  at::Tensor y = at::empty({M, N}, x.options().dtype(at::kFloat));
  const tacq_status status = host::mixed_gemv(w, a, y.data_ptr<float>(), torch_threads());
  // The full column check names the offending entry with torch's words.
  if (status == TACQ_ERROR_BAD_CSR) check_csr_columns("mixed_gemv", row_ptr, col_idx, N, K);
  TORCH_CHECK_VALUE(status != TACQ_ERROR_BAD_VALUE, "tacq.mixed_gemv: x contains NaN or infinity, which "
                    "x_int8=True cannot round to int8");
  check_host("mixed_gemv", status);
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("mixed_gemv", &mixed_gemv_cpu); }

}  // namespace tacq
