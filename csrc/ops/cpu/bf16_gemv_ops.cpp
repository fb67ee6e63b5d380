// CPU entry point of tacq.bf16_gemv: tensor checks, the AVX-512 BF16 check,
// torch's threads over output rows (csrc/kernels/cpu/bf16_gemv_avx512bf16.cpp,
// each thread at least 64 KiB of weight), y rounded to bf16; registration.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../../kernels/cpu/bf16_gemv.h"
#include "../validate.h"
#include "tacq/cpu_isa.h"

namespace tacq {
namespace {

at::Tensor bf16_gemv_cpu(const at::Tensor& x, const at::Tensor& weight) {
  constexpr const char* op = "bf16_gemv";
  check_bf16_gemv_args(op, x, weight);
  TORCH_CHECK(cpu_has_avx512_bf16(), "tacq.", op, ": needs a CPU with AVX-512 BF16 (this one runs the ",
              cpu_isa_name(cpu_isa()), " kernels; TACQ_CPU_ISA can cap them); use F.linear here");
  const int64_t N = weight.size(0), K = weight.size(1);
  const std::vector<int64_t> y_shape = output_shape(x, N);
  at::Tensor rows = activation_rows(x);
  if (rows.size(0) == 0 || N == 0) return at::empty(y_shape, x.options());
  if (rows.stride(1) != 1) rows = rows.contiguous();
  at::Tensor y = at::empty({rows.size(0), N}, x.options().dtype(at::kFloat));
  const cpu::Bf16GemvProblem p{reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>()),
                               reinterpret_cast<const uint16_t*>(rows.data_ptr<at::BFloat16>()),
                               rows.stride(0), rows.size(0), N, K, y.data_ptr<float>()};
  const int64_t grain = std::max<int64_t>(4, (int64_t{1} << 15) / std::max<int64_t>(1, K));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { cpu::avx512bf16::bf16_gemv_rows(p, begin, end); });
  return y.to(at::kBFloat16).view(y_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("bf16_gemv", &bf16_gemv_cpu); }

}  // namespace tacq
