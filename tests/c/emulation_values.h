// What the CUDA emulation tests (cuda_emulation_*.cpp) share for their
// references and messages: the element types' host conversions, by CUDA's
// own header functions rather than the kernels' (float_types.cuh), and names.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace emulation {

template <typename T>
float as_float(T v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}

// v rounded to T, to nearest even.
template <typename T>
T rounded(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return __float2bfloat16_rn(v);
}

template <typename T>
const char* type_name() {
  return std::is_same_v<T, float> ? "fp32" : std::is_same_v<T, __half> ? "fp16" : "bf16";
}

}  // namespace emulation
