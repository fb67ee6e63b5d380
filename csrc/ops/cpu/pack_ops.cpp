// CPU entry points of tacq.pack / tacq.unpack: tensor checks, outputs, and the
// TORCH_LIBRARY_IMPL registration; the host layer (csrc/host) threads over rows.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "tacq/packing.h"
#include "../validate.h"
#include "host_call.h"

namespace tacq {
namespace {

at::Tensor pack_cpu(const at::Tensor& codes, int64_t bits) {
  check_bits("pack", bits);
  check_codes("pack", codes, bits);
  const at::Tensor c = codes.contiguous();
  const int64_t N = c.size(0), K = c.size(1);
  at::Tensor packed = at::empty({N, packed_words_per_row(K, static_cast<int>(bits))},
                                c.options().dtype(at::kInt));
  check_host("pack", host::pack(c.data_ptr<uint8_t>(), N, K, static_cast<int>(bits),
                                packed.data_ptr<int32_t>(), torch_threads()));
  return packed;
}

at::Tensor unpack_cpu(const at::Tensor& packed, int64_t bits, int64_t K) {
  check_bits("unpack", bits);
  const int64_t N = check_packed("unpack", packed, bits, K);
  at::Tensor codes = at::empty({N, K}, packed.options().dtype(at::kByte));
  check_host("unpack", host::unpack(packed.data_ptr<int32_t>(), N, K, static_cast<int>(bits),
                                    codes.data_ptr<uint8_t>(), torch_threads()));
  return codes;
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) {
  m.impl("pack", &pack_cpu);
  m.impl("unpack", &unpack_cpu);
}

}  // namespace tacq
