// CPU entry point of tacq.mixed_gemv: checks (CSR columns are checked by the
// kernels as they read them), x staged once as zero-padded fp32 rows plus its
// per-group sums (and in lane order for the AVX-512 lane kernels), threads over
// output rows, ISA dispatch, and the TORCH_LIBRARY_IMPL registration.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "../../kernels/cpu/mixed_gemv.h"
#include "tacq/cpu_isa.h"
#include "../validate.h"

namespace tacq {
namespace {

// The kernel for this call: the AVX-512 lane kernels read x in lane order
// (bf16 lanes for bf16 x where the CPU multiplies bf16), the others natural x.
cpu::GemvKernel gemv_kernel_for(CpuIsa isa, int64_t bits, at::ScalarType x_dtype) {
  switch (isa) {
    case CpuIsa::kAvx512:
      if (x_dtype == at::kBFloat16 && cpu_has_avx512_bf16())
        return {&cpu::avx512bf16::mixed_gemv_rows, cpu::avx512bf16::kLaneBits, &cpu::avx512bf16::stage_lanes};
      return {&cpu::avx512::mixed_gemv_rows, cpu::avx512::kLaneBits, &cpu::avx512::stage_lanes};
    case CpuIsa::kAvx2: return {&cpu::avx2::mixed_gemv_rows, 0, nullptr};
    case CpuIsa::kGeneric: return {&cpu::generic::mixed_gemv_rows, 0, nullptr};
  }
  TORCH_CHECK(false, "tacq.mixed_gemv: no kernel for CPU ISA ", static_cast<int>(isa));
}

// x [M,K] (any strides) -> xs fp32 [M,Kp] zero-padded and xsum [M,G] (sum of
// xs over each group), one thread per activation row.
template <typename T>
void stage_activations(const at::Tensor& x, int64_t K, int64_t Kp, int64_t group_len, at::Tensor& xs,
                       at::Tensor& xsum) {
  const int64_t M = x.size(0), G = K / group_len;
  const auto src = x.accessor<T, 2>();
  at::parallel_for(0, M, 1, [&](int64_t m_begin, int64_t m_end) {
    for (int64_t m = m_begin; m < m_end; ++m) {
      float* row = xs.data_ptr<float>() + m * Kp;
      for (int64_t k = 0; k < K; ++k) row[k] = static_cast<float>(src[m][k]);
      for (int64_t k = K; k < Kp; ++k) row[k] = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        float partial[8] = {0.f};  // independent adds: no serial dependency chain
        int64_t k = g * group_len;
        for (; k + 8 <= (g + 1) * group_len; k += 8)
          for (int i = 0; i < 8; ++i) partial[i] += row[k + i];
        for (; k < (g + 1) * group_len; ++k) partial[0] += row[k];
        float sum = 0.f;
        for (float v : partial) sum += v;
        xsum.data_ptr<float>()[m * G + g] = sum;
      }
    }
  });
}

at::Tensor mixed_gemv_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                          const at::Tensor& zero, int64_t bits, int64_t group_size,
                          const at::Tensor& row_ptr, const at::Tensor& col_idx,
                          const at::Tensor& values) {
  const auto [N, G, group_len] = check_mixed_gemv_args("mixed_gemv", x, packed, scale, zero, bits,
                                                       group_size, row_ptr, col_idx, values);
  const int64_t M = x.size(0), K = x.size(1);

  const int64_t Kp = (K + 31) / 32 * 32;
  at::Tensor xs = at::empty({M, Kp}, x.options().dtype(at::kFloat));
  at::Tensor xsum = at::empty({M, G}, x.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "tacq_stage_x", [&] {
    stage_activations<scalar_t>(x, K, Kp, group_len, xs, xsum);
  });
  const cpu::GemvKernel kernel = gemv_kernel_for(cpu_isa(), bits, x.scalar_type());
  at::Tensor x_lanes;
  int64_t Kc = 0;
  if (kernel.lane_bits != 0) {
    Kc = cpu::LaneOrder{static_cast<int>(bits), kernel.lane_bits}.staged_length(Kp);
    x_lanes = at::empty({M, Kc}, x.options().dtype(kernel.lane_bits == 16 ? at::kBFloat16 : at::kFloat));
    const int64_t row_bytes = Kc * x_lanes.element_size();
    auto* lanes = static_cast<char*>(x_lanes.data_ptr());
    at::parallel_for(0, M, 1, [&](int64_t m_begin, int64_t m_end) {
      for (int64_t m = m_begin; m < m_end; ++m)
        kernel.stage_lanes(xs.data_ptr<float>() + m * Kp, Kp, static_cast<int>(bits), Kc, lanes + m * row_bytes);
    });
  }
  const at::Tensor scale32 = scale.to(at::kFloat).contiguous(), zero32 = zero.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({M, N}, x.options().dtype(at::kFloat));
  const cpu::GemvProblem problem{
      reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()), scale32.data_ptr<float>(),
      zero32.data_ptr<float>(), xs.data_ptr<float>(), xsum.data_ptr<float>(),
      x_lanes.defined() ? x_lanes.data_ptr() : nullptr, row_ptr.data_ptr<int32_t>(),
      col_idx.data_ptr<int32_t>(), reinterpret_cast<const uint16_t*>(values.data_ptr<at::Half>()),
      M, N, K, Kp, Kc, group_len, static_cast<int>(bits), y.data_ptr<float>()};
  // ~64 KiB of packed codes per task keeps scheduling overhead negligible.
  const int64_t row_bytes = Kp / 32 * bits * 4;
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / row_bytes);
  std::atomic<bool> residual_ok{true};
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    if (!kernel.rows(problem, begin, end)) residual_ok = false;
  });
  // The kernels check residual columns as they read them; the full check
  // names the offending entry.
  if (!residual_ok) check_csr_columns("mixed_gemv", row_ptr, col_idx, N, K);
  TORCH_CHECK(residual_ok, "tacq.mixed_gemv: internal error: a kernel rejected residual columns ",
              "that pass check_csr_columns");
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("mixed_gemv", &mixed_gemv_cpu); }

}  // namespace tacq
