// CPU entry point of tacq.quantize: checks, fp32 staging, threads over
// (row, group) pairs, ISA dispatch, and the TORCH_LIBRARY_IMPL registration.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../../kernels/cpu/quantize.h"
#include "tacq/cpu_isa.h"
#include "../validate.h"

namespace tacq {
namespace {

cpu::QuantizeGroupsFn quantize_kernel_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return &cpu::avx512::quantize_groups;
    case CpuIsa::kAvx2: return &cpu::avx2::quantize_groups;
    case CpuIsa::kGeneric: return &cpu::generic::quantize_groups;
  }
  TORCH_CHECK(false, "tacq.quantize: no kernel for CPU ISA ", static_cast<int>(isa));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_cpu(
    const at::Tensor& w, int64_t bits, int64_t group_size,
    const std::optional<at::Tensor>& keep_mask) {
  const char* op = "quantize";
  int64_t group_len = 0;
  const int64_t G = check_quantize_args(op, w, bits, group_size, keep_mask, &group_len);

  const at::Tensor w32 = w.to(at::kFloat).contiguous();
  const at::Tensor keep = keep_mask.has_value() ? keep_mask->contiguous() : at::Tensor();
  const int64_t N = w.size(0), K = w.size(1);
  at::Tensor codes = at::empty({N, K}, w.options().dtype(at::kByte));
  at::Tensor scale = at::empty({N, G}, w.options().dtype(at::kFloat));
  at::Tensor zero = at::empty({N, G}, w.options().dtype(at::kFloat));
  const cpu::QuantizeProblem problem{w32.data_ptr<float>(),
                                     keep.defined() ? keep.data_ptr<bool>() : nullptr,
                                     K, group_len, static_cast<int>(bits), codes.data_ptr<uint8_t>(),
                                     scale.data_ptr<float>(), zero.data_ptr<float>()};
  const cpu::QuantizeGroupsFn kernel = quantize_kernel_for(cpu_isa());
  // ~80 passes over each group: a few thousand elements per task is plenty.
  const int64_t grain = std::max<int64_t>(1, 4096 / group_len);
  at::parallel_for(0, N * G, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(group_len));
    kernel(problem, begin, end, scratch.data());
  });
  return {codes, scale, zero};
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("quantize", &quantize_cpu); }

}  // namespace tacq
