// CUDA entry points of tacq.pack / tacq.unpack: the CPU glue's checks, device
// guard, current stream, launch (csrc/kernels/cuda/pack.cu), registration.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../kernels/cuda/pack.cuh"
#include "launch_check.h"
#include "tacq/packing.h"
#include "../validate.h"

namespace tacq {
namespace {

std::string sizes(int64_t N, int64_t K, int64_t bits) {
  return "N = " + std::to_string(N) + ", K = " + std::to_string(K) + ", bits = " + std::to_string(bits);
}

at::Tensor pack_cuda(const at::Tensor& codes, int64_t bits) {
  check_bits("pack", bits);
  check_codes("pack", codes, bits);
  const c10::cuda::CUDAGuard guard(codes.device());
  const at::Tensor c = codes.contiguous();
  const int64_t N = c.size(0), K = c.size(1);
  at::Tensor packed = at::empty({N, packed_words_per_row(K, static_cast<int>(bits))},
                                c.options().dtype(at::kInt));
  check_launch("pack",
               cuda::launch_pack(c.data_ptr<uint8_t>(), N, K, static_cast<int>(bits),
                                 reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>()),
                                 c10::cuda::getCurrentCUDAStream()),
               sizes(N, K, bits));
  return packed;
}

at::Tensor unpack_cuda(const at::Tensor& packed, int64_t bits, int64_t K) {
  check_bits("unpack", bits);
  const int64_t N = check_packed("unpack", packed, bits, K);
  const c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor codes = at::empty({N, K}, packed.options().dtype(at::kByte));
  check_launch("unpack",
               cuda::launch_unpack(reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()), N,
                                   K, static_cast<int>(bits), codes.data_ptr<uint8_t>(),
                                   c10::cuda::getCurrentCUDAStream()),
               sizes(N, K, bits));
  return codes;
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CUDA, m) {
  m.impl("pack", &pack_cuda);
  m.impl("unpack", &unpack_cuda);
}

}  // namespace tacq
