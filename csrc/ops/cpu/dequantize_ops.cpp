// CPU entry point of tacq.dequantize: checks, threads over rows, ISA
// dispatch, output dtype, and the TORCH_LIBRARY_IMPL registration.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../kernels/cpu/dequantize.h"
#include "tacq/cpu_isa.h"
#include "../validate.h"

namespace tacq {
namespace {

cpu::DequantizeRowsFn dequantize_kernel_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return &cpu::avx512::dequantize_rows;
    case CpuIsa::kAvx2: return &cpu::avx2::dequantize_rows;
    case CpuIsa::kGeneric: return &cpu::generic::dequantize_rows;
  }
  TORCH_CHECK(false, "tacq.dequantize: no kernel for CPU ISA ", static_cast<int>(isa));
}

at::Tensor dequantize_cpu(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& zero,
                          int64_t bits, int64_t group_size, int64_t K,
                          std::optional<at::ScalarType> dtype) {
  const at::ScalarType out_dtype = dtype.value_or(at::kFloat);
  const auto [N, G, group_len] =
      check_dequantize_args("dequantize", packed, scale, zero, bits, group_size, K, out_dtype);

  const at::Tensor scale32 = scale.to(at::kFloat), zero32 = zero.to(at::kFloat);
  at::Tensor out = at::empty({N, K}, packed.options().dtype(at::kFloat));
  const cpu::DequantizeProblem problem{reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()),
                                       scale32.data_ptr<float>(), zero32.data_ptr<float>(), K,
                                       group_len, static_cast<int>(bits), out.data_ptr<float>()};
  const cpu::DequantizeRowsFn kernel = dequantize_kernel_for(cpu_isa());
  const int64_t grain = std::max<int64_t>(1, (1 << 15) / K);
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { kernel(problem, begin, end); });
  return out_dtype == at::kFloat ? out : out.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("dequantize", &dequantize_cpu); }

}  // namespace tacq
