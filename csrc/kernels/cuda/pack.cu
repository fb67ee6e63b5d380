// CUDA pack / unpack of the code format: launchers and the bits dispatch.
// The kernels and their thread mapping: pack_kernel.cuh.
#include "pack.cuh"

#include "pack_kernel.cuh"

namespace tacq::cuda {
namespace {

using packing::kThreads;
using packing::pack_kernel;
using packing::unpack_kernel;

template <int BITS>
Result pack_bits(const uint8_t* codes, int64_t N, int64_t K, uint32_t* packed, cudaStream_t s) {
  const int64_t total = N * ((K + kCodesPerBlock - 1) / kCodesPerBlock);
  if (total == 0) return {};
  pack_kernel<BITS><<<grid_for(total, kThreads), kThreads, 0, s>>>(codes, N, K, packed);
  return last_launch_result();
}

template <int BITS>
Result unpack_bits(const uint32_t* packed, int64_t N, int64_t K, uint8_t* codes, cudaStream_t s) {
  const int64_t total = N * ((K + kCodesPerBlock - 1) / kCodesPerBlock);
  if (total == 0) return {};
  unpack_kernel<BITS><<<grid_for(total, kThreads), kThreads, 0, s>>>(packed, N, K, codes);
  return last_launch_result();
}

}  // namespace

// ---- dispatch: the instantiation whitelist ---------------------------------

Result launch_pack(const uint8_t* codes, int64_t N, int64_t K, int bits, uint32_t* packed,
                   cudaStream_t stream) {
  switch (bits) {
    case 2: return pack_bits<2>(codes, N, K, packed, stream);
    case 3: return pack_bits<3>(codes, N, K, packed, stream);
    case 4: return pack_bits<4>(codes, N, K, packed, stream);
    default: return {Status::kBadBits, bits};
  }
}

Result launch_unpack(const uint32_t* packed, int64_t N, int64_t K, int bits, uint8_t* codes,
                     cudaStream_t stream) {
  switch (bits) {
    case 2: return unpack_bits<2>(packed, N, K, codes, stream);
    case 3: return unpack_bits<3>(packed, N, K, codes, stream);
    case 4: return unpack_bits<4>(packed, N, K, codes, stream);
    default: return {Status::kBadBits, bits};
  }
}

}  // namespace tacq::cuda
