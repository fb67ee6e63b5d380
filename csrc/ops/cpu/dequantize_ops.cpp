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
  // fp32 and bf16 come from the host layer as they are; fp16 is fp32 rounded by torch.
  const bool bf16 = out_dtype == at::kBFloat16;
  at::Tensor out = at::empty({packed.size(0), K}, packed.options().dtype(bf16 ? at::kBFloat16 : at::kFloat));
  check_host("dequantize", host::dequantize(weights_view(packed, scale, zero, bits, group_size, K),
                                            bf16 ? TACQ_DTYPE_BF16 : TACQ_DTYPE_F32, out.data_ptr(),
                                            torch_threads()));
  return out.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("dequantize", &dequantize_cpu); }

}  // namespace tacq
