// CPU entry point of tacq.quantize: tensor checks, fp32 staging, outputs, and
// the TORCH_LIBRARY_IMPL registration; the host layer (csrc/host) runs the
// clipping search over (row, group) pairs with the ISA kernel.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../validate.h"
#include "host_call.h"

namespace tacq {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_cpu(
    const at::Tensor& w, int64_t bits, int64_t group_size,
    const std::optional<at::Tensor>& keep_mask) {
  int64_t group_len = 0;
  const int64_t G = check_quantize_args("quantize", w, bits, group_size, keep_mask, &group_len);

  const at::Tensor w32 = w.to(at::kFloat).contiguous();
  const at::Tensor keep = keep_mask.has_value() ? keep_mask->contiguous() : at::Tensor();
  const int64_t N = w.size(0), K = w.size(1);
  at::Tensor codes = at::empty({N, K}, w.options().dtype(at::kByte));
  at::Tensor scale = at::empty({N, G}, w.options().dtype(at::kFloat));
  at::Tensor zero = at::empty({N, G}, w.options().dtype(at::kFloat));
  // bool tensors hold bytes 0 / 1, the host layer's keep flags.
  const auto* keep_flags = keep.defined() ? reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>()) : nullptr;
  check_host("quantize", host::quantize(w32.data_ptr<float>(), keep_flags, N, K, static_cast<int>(bits),
                                        group_size, codes.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                                        zero.data_ptr<float>(), torch_threads()));
  return {codes, scale, zero};
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("quantize", &quantize_cpu); }

}  // namespace tacq
