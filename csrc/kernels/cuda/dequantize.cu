// CUDA dequantize: out[n, k] = scale[n, g] * (code[n, k] - zero[n, g]), g = k / group_len.
//
// Thread mapping: one thread per (row n, 32-code block b), t = n*nb + b with
// nb = ceil(K/32), grid-stride, 64-bit indices. A thread reads its block's
// `bits` packed words (a warp reads one contiguous span), one scale/zero pair
// (a block never straddles groups: group_len is K or a multiple of 32), and
// writes the 32 outputs out[n, 32b .. 32b+31] with 16-byte stores when every
// row start is 16-byte aligned, else element by element; the last block of a
// row stops at K. The arithmetic is dequantize_value of tacq/quant_math.h, the
// CPU kernel's, so the results are bitwise equal.
#include "dequantize.cuh"

#include "float_types.cuh"
#include "tacq/packing.h"
#include "tacq/quant_math.h"

namespace tacq::cuda {
namespace {

constexpr int kThreads = 256;

template <int BITS, typename S, typename O>
__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const uint32_t* __restrict__ packed,  // [N, nb*BITS]
                      const S* __restrict__ scale,          // [N, G]
                      const S* __restrict__ zero,           // [N, G]
                      int64_t N, int64_t K, int64_t G, int64_t group_len,
                      bool vector_store,                    // rows of out 16-byte aligned
                      O* __restrict__ out) {                // [N, K]
  constexpr int kPerVector = 16 / sizeof(O);
  const int64_t nb = (K + kCodesPerBlock - 1) / kCodesPerBlock;
  const int64_t total = N * nb;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = t / nb, k0 = (t % nb) * kCodesPerBlock;
    uint32_t words[BITS];
#pragma unroll
    for (int w = 0; w < BITS; ++w) words[w] = __ldg(packed + t * BITS + w);
    const int64_t g = n * G + k0 / group_len;
    const QParams p{to_float(scale[g]), to_float(zero[g])};

    union {
      uint4 vec[kCodesPerBlock / kPerVector];
      O val[kCodesPerBlock];
    } block;
#pragma unroll
    for (int i = 0; i < kCodesPerBlock; ++i)
      block.val[i] = from_float<O>(dequantize_value(static_cast<float>(extract_code(words, i, BITS)), p));

    O* dst = out + n * K + k0;
    const int64_t valid = K - k0;
    if (vector_store && valid >= kCodesPerBlock) {
#pragma unroll
      for (int v = 0; v < kCodesPerBlock / kPerVector; ++v) reinterpret_cast<uint4*>(dst)[v] = block.vec[v];
    } else {
#pragma unroll
      for (int i = 0; i < kCodesPerBlock; ++i)
        if (i < valid) dst[i] = block.val[i];
    }
  }
}

template <int BITS, typename S, typename O>
Result run(const uint32_t* packed, const void* scale, const void* zero, int64_t N, int64_t K,
           int64_t G, int64_t group_len, void* out, cudaStream_t stream) {
  const int64_t total = N * ((K + kCodesPerBlock - 1) / kCodesPerBlock);
  if (total == 0) return {};
  const bool vector_store =
      (K * int64_t{sizeof(O)}) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  dequantize_kernel<BITS, S, O><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      packed, static_cast<const S*>(scale), static_cast<const S*>(zero), N, K, G, group_len,
      vector_store, static_cast<O*>(out));
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
