// CUDA dequantize: launcher and the dispatch over bits, scale and output
// dtypes. The kernel and its thread mapping: dequantize_kernel.cuh.
#include "dequantize.cuh"

#include "dequantize_kernel.cuh"

namespace tacq::cuda {
namespace {

using dequant::dequantize_kernel;
using dequant::kThreads;

template <int BITS, typename S, typename O>
Result run(const uint32_t* packed, const void* scale, const void* zero, int64_t N, int64_t K,
           int64_t G, int64_t group_len, void* out, cudaStream_t stream) {
  const int64_t total = N * ((K + kCodesPerBlock - 1) / kCodesPerBlock);
  if (total == 0) return {};
  O* const y = static_cast<O*>(out);
  dequantize_kernel<BITS, S, O><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      packed, static_cast<const S*>(scale), static_cast<const S*>(zero), N, K, G, group_len,
      dequant::vector_stores(y, K), y);
  return last_launch_result();
}

template <int BITS, typename S>
Result dispatch_out(DType out_dtype, const uint32_t* packed, const void* scale, const void* zero,
                    int64_t N, int64_t K, int64_t G, int64_t group_len, void* out, cudaStream_t s) {
  switch (out_dtype) {
    case DType::kFloat32: return run<BITS, S, float>(packed, scale, zero, N, K, G, group_len, out, s);
    case DType::kFloat16: return run<BITS, S, __half>(packed, scale, zero, N, K, G, group_len, out, s);
    case DType::kBFloat16:
      return run<BITS, S, __nv_bfloat16>(packed, scale, zero, N, K, G, group_len, out, s);
  }
  return {Status::kBadDType, static_cast<int64_t>(out_dtype)};
}

template <int BITS>
Result dispatch_scale(DType scale_dtype, DType out_dtype, const uint32_t* packed, const void* scale,
                      const void* zero, int64_t N, int64_t K, int64_t G, int64_t group_len,
                      void* out, cudaStream_t s) {
  switch (scale_dtype) {
    case DType::kFloat32:
      return dispatch_out<BITS, float>(out_dtype, packed, scale, zero, N, K, G, group_len, out, s);
    case DType::kFloat16:
      return dispatch_out<BITS, __half>(out_dtype, packed, scale, zero, N, K, G, group_len, out, s);
    case DType::kBFloat16: break;  // scales are stored as fp32 or fp16 only
  }
  return {Status::kBadDType, static_cast<int64_t>(scale_dtype)};
}

}  // namespace

// ---- dispatch: bits x scale dtype {fp32, fp16} x out dtype {fp32, fp16, bf16} ----

Result launch_dequantize(const uint32_t* packed, const void* scale, const void* zero,
                         DType scale_dtype, int64_t N, int64_t K, int64_t G, int64_t group_len,
                         int bits, void* out, DType out_dtype, cudaStream_t stream) {
  switch (bits) {
    case 2:
      return dispatch_scale<2>(scale_dtype, out_dtype, packed, scale, zero, N, K, G, group_len, out, stream);
    case 3:
      return dispatch_scale<3>(scale_dtype, out_dtype, packed, scale, zero, N, K, G, group_len, out, stream);
    case 4:
      return dispatch_scale<4>(scale_dtype, out_dtype, packed, scale, zero, N, K, G, group_len, out, stream);
    default: return {Status::kBadBits, bits};
  }
}

}  // namespace tacq::cuda
