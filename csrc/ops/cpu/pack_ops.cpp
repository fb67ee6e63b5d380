// CPU entry points of tacq.pack / tacq.unpack: checks, threading over rows,
// and the TORCH_LIBRARY_IMPL registration.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../kernels/cpu/pack.h"
#include "tacq/packing.h"
#include "../validate.h"

namespace tacq {
namespace {

// Rows per parallel task: enough work per task to amortize scheduling.
int64_t row_grain(int64_t K) { return std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(K, 1)); }

at::Tensor pack_cpu(const at::Tensor& codes, int64_t bits) {
  check_bits("pack", bits);
  check_codes("pack", codes, bits);
  const at::Tensor c = codes.contiguous();
  const int64_t N = c.size(0), K = c.size(1);
  at::Tensor packed = at::empty({N, packed_words_per_row(K, static_cast<int>(bits))},
                                c.options().dtype(at::kInt));
  const uint8_t* src = c.data_ptr<uint8_t>();
  auto* dst = reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>());
  at::parallel_for(0, N, row_grain(K), [&](int64_t begin, int64_t end) {
    cpu::pack_rows(src, K, static_cast<int>(bits), dst, begin, end);
  });
  return packed;
}

at::Tensor unpack_cpu(const at::Tensor& packed, int64_t bits, int64_t K) {
  check_bits("unpack", bits);
  const int64_t N = check_packed("unpack", packed, bits, K);
  at::Tensor codes = at::empty({N, K}, packed.options().dtype(at::kByte));
  const auto* src = reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>());
  uint8_t* dst = codes.data_ptr<uint8_t>();
  at::parallel_for(0, N, row_grain(K), [&](int64_t begin, int64_t end) {
    cpu::unpack_rows(src, K, static_cast<int>(bits), dst, begin, end);
  });
  return codes;
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) {
  m.impl("pack", &pack_cpu);
  m.impl("unpack", &unpack_cpu);
}

}  // namespace tacq
