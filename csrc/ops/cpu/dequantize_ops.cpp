// CPU entry point of tacq.dequantize: tensor checks, output dtype, and the
// TORCH_LIBRARY_IMPL registration; the host layer (csrc/host) converts fp16
// scales, picks the ISA kernel and threads over rows.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../validate.h"
#include "host_call.h"

namespace tacq {
namespace {

at::Tensor dequantize_cpu(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& zero,
                          int64_t bits, int64_t group_size, int64_t K,
                          std::optional<at::ScalarType> dtype) {
  const at::ScalarType out_dtype = dtype.value_or(at::kFloat);
  check_dequantize_args("dequantize", packed, scale, zero, bits, group_size, K, out_dtype);
  at::Tensor out = at::empty({packed.size(0), K}, packed.options().dtype(at::kFloat));
  check_host("dequantize", host::dequantize(weights_view(packed, scale, zero, bits, group_size, K),
                                            out.data_ptr<float>(), torch_threads()));
  return out_dtype == at::kFloat ? out : out.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("dequantize", &dequantize_cpu); }

}  // namespace tacq
