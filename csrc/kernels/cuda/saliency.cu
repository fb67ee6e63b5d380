// Launcher of the CUDA saliency_accumulate kernel (saliency_kernel.cuh: data
// layout, thread mapping, the kernel): the shared-memory opt-in, the grid (one
// block per tile) and the dispatch over the element type and the load path
// (16-byte cp.async or element-wise).
#include "saliency.cuh"

#include "saliency_kernel.cuh"

namespace tacq::cuda {
namespace {

template <typename T, bool kAsync>
Result launch_tiles(const T* grad_out, const T* act, float* acc, int64_t B, int64_t T_, int64_t N,
                    int64_t K, cudaStream_t stream) {
  using namespace saliency;
  constexpr int smem = Tiling<T>::kSmemBytes;
  const cudaError_t e = cudaFuncSetAttribute(saliency_kernel<T, kAsync>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return Result{Status::kLaunchFailed, static_cast<int64_t>(e)};
  saliency_kernel<T, kAsync><<<launch_grid(N, K), kThreads, smem, stream>>>(grad_out, act, acc, B, T_, N, K);
  return last_launch_result();
}

template <typename T>
Result launch_typed(const void* grad_out, const void* act, float* acc, int64_t B, int64_t T_,
                    int64_t N, int64_t K, cudaStream_t stream) {
  const T* g = static_cast<const T*>(grad_out);
  const T* a = static_cast<const T*>(act);
  return saliency::async_loads(g, a, N, K) ? launch_tiles<T, true>(g, a, acc, B, T_, N, K, stream)
                                           : launch_tiles<T, false>(g, a, acc, B, T_, N, K, stream);
}

}  // namespace

Result launch_saliency_accumulate(const void* grad_out, const void* act, DType dtype, float* acc,
                                  int64_t B, int64_t T, int64_t N, int64_t K, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return launch_typed<float>(grad_out, act, acc, B, T, N, K, stream);
    case DType::kFloat16: return launch_typed<__half>(grad_out, act, acc, B, T, N, K, stream);
    case DType::kBFloat16: return launch_typed<__nv_bfloat16>(grad_out, act, acc, B, T, N, K, stream);
  }
  return Result{Status::kBadDType, static_cast<int64_t>(dtype)};
}

}  // namespace tacq::cuda
