// CUDA tacq.quantize: launcher and the dispatch over element types, bits and
// block sizes. The kernel, its thread mapping and its shared memory:
// quantize_kernel.cuh.
#include "quantize.cuh"

#include "quantize_kernel.cuh"

namespace tacq::cuda {
namespace {

using quant::dynamic_smem_bytes;
using quant::kMaxStagedLen;
using quant::kSmallGroup;
using quant::quantize_kernel;

// ---- launch ------------------------------------------------------------------

template <typename T, int kBits, int kThreads>
Result launch_blocks(const T* w, const bool* keep, int64_t N, int64_t K, int64_t len,
                     uint8_t* codes, float* scale, float* zero, cudaStream_t stream) {
  const int64_t groups = N * (K / len);
  const bool staged = len <= kMaxStagedLen;
  const size_t smem = dynamic_smem_bytes<kThreads>(len);
  const unsigned grid = static_cast<unsigned>(groups < (int64_t{1} << 20) ? groups : int64_t{1} << 20);
  quantize_kernel<T, kBits, kThreads>
      <<<grid, kThreads, smem, stream>>>(w, keep, groups, K, len, staged, codes, scale, zero);
  return last_launch_result();
}

template <typename T, int kBits>
Result launch_bits(const T* w, const bool* keep, int64_t N, int64_t K, int64_t len, uint8_t* codes,
                   float* scale, float* zero, cudaStream_t stream) {
  return len <= kSmallGroup ? launch_blocks<T, kBits, 128>(w, keep, N, K, len, codes, scale, zero, stream)
                            : launch_blocks<T, kBits, 256>(w, keep, N, K, len, codes, scale, zero, stream);
}

template <typename T>
Result launch_typed(const void* w, const bool* keep, int64_t N, int64_t K, int64_t len, int bits,
                    uint8_t* codes, float* scale, float* zero, cudaStream_t stream) {
  const T* wt = static_cast<const T*>(w);
  switch (bits) {
    case 2: return launch_bits<T, 2>(wt, keep, N, K, len, codes, scale, zero, stream);
    case 3: return launch_bits<T, 3>(wt, keep, N, K, len, codes, scale, zero, stream);
    case 4: return launch_bits<T, 4>(wt, keep, N, K, len, codes, scale, zero, stream);
  }
  return Result{Status::kBadBits, bits};
}

}  // namespace

Result launch_quantize(const void* w, DType dtype, const bool* keep, int64_t N, int64_t K,
                       int64_t group_len, int bits, uint8_t* codes, float* scale, float* zero,
                       cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch_typed<float>(w, keep, N, K, group_len, bits, codes, scale, zero, stream);
    case DType::kFloat16:
      return launch_typed<__half>(w, keep, N, K, group_len, bits, codes, scale, zero, stream);
    case DType::kBFloat16:
      return launch_typed<__nv_bfloat16>(w, keep, N, K, group_len, bits, codes, scale, zero, stream);
  }
  return Result{Status::kBadDType, static_cast<int64_t>(dtype)};
}

}  // namespace tacq::cuda
