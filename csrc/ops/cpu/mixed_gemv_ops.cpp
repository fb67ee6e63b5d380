// CPU entry point of tacq.mixed_gemv: checks (CSR content included), x staged
// once as zero-padded fp32 rows plus its per-group sums, threads over output
// rows, ISA dispatch, and the TORCH_LIBRARY_IMPL registration.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../kernels/cpu/mixed_gemv.h"
#include "tacq/cpu_isa.h"
#include "tacq/validate.h"

namespace tacq {
namespace {

cpu::GemvRowsFn gemv_kernel_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return &cpu::avx512::mixed_gemv_rows;
    case CpuIsa::kAvx2: return &cpu::avx2::mixed_gemv_rows;
    case CpuIsa::kGeneric: return &cpu::generic::mixed_gemv_rows;
  }
  TORCH_CHECK(false, "tacq.mixed_gemv: no kernel for CPU ISA ", static_cast<int>(isa));
}

at::Tensor mixed_gemv_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                          const at::Tensor& zero, int64_t bits, int64_t group_size,
                          const at::Tensor& row_ptr, const at::Tensor& col_idx,
                          const at::Tensor& values) {
  const char* op = "mixed_gemv";
  check_bits(op, bits);
  check_dim(op, "x", x, 2, "[M, K]");
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(M >= 1 && M <= cpu::kGemvMaxRows, "tacq.", op, ": x must have 1 to 16 rows (M), got ",
              M, "; use dequantize + matmul for larger M");
  check_float_dtype(op, "x", x, true, true, true);
  const int64_t N = check_packed(op, packed, bits, K);
  check_same_device(op, "x", x, packed, "packed");
  int64_t group_len = 0;
  const int64_t G = check_group_size(op, group_size, K, &group_len);
  check_scale_zero(op, scale, zero, packed, N, G);
  check_csr(op, row_ptr, col_idx, values, packed, N, K, /*check_content=*/true);

  const int64_t Kp = (K + 31) / 32 * 32;
  at::Tensor xs = at::zeros({M, Kp}, x.options().dtype(at::kFloat));
  xs.narrow(1, 0, K).copy_(x);
  const at::Tensor xsum = xs.narrow(1, 0, K).reshape({M, G, group_len}).sum(-1).contiguous();
  const at::Tensor scale32 = scale.to(at::kFloat).contiguous(), zero32 = zero.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({M, N}, x.options().dtype(at::kFloat));
  const cpu::GemvProblem problem{
      reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()), scale32.data_ptr<float>(),
      zero32.data_ptr<float>(), xs.data_ptr<float>(), xsum.data_ptr<float>(),
      row_ptr.data_ptr<int32_t>(), col_idx.data_ptr<int32_t>(),
      reinterpret_cast<const uint16_t*>(values.data_ptr<at::Half>()), M, N, K, Kp, group_len,
      static_cast<int>(bits), y.data_ptr<float>()};
  const cpu::GemvRowsFn kernel = gemv_kernel_for(cpu_isa());
  // ~64 KiB of packed codes per task keeps scheduling overhead negligible.
  const int64_t row_bytes = Kp / 32 * bits * 4;
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / row_bytes);
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { kernel(problem, begin, end); });
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("mixed_gemv", &mixed_gemv_cpu); }

}  // namespace tacq
