// Glue-side handling of the CUDA launchers' tacq::cuda::Result: anything but
// kOk becomes a c10::Error naming the op and quoting the problem's sizes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include <string>

#include "tacq/cuda_launch.h"

namespace tacq {

inline cuda::DType cuda_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "tacq: no CUDA kernel handles dtype ", s);
  }
}

// `sizes` describes the problem, e.g. "N = 4096, K = 14336, bits = 3".
inline void check_launch(const char* op, const cuda::Result& r, const std::string& sizes) {
  switch (r.status) {
    case cuda::Status::kOk: return;
    case cuda::Status::kBadBits:
      TORCH_CHECK(false, "tacq.", op, ": no CUDA kernel for bits = ", r.detail, " (", sizes, ")");
    case cuda::Status::kBadDType:
      TORCH_CHECK(false, "tacq.", op, ": no CUDA kernel for element type ", r.detail, " (", sizes,
                  ")");
    case cuda::Status::kBadRows:
      TORCH_CHECK(false, "tacq.", op, ": no CUDA kernel for M = ", r.detail,
                  " rows of x, expected 1 to 16 (", sizes, ")");
    case cuda::Status::kLaunchFailed:
      TORCH_CHECK(false, "tacq.", op, ": CUDA error: ",
                  cudaGetErrorString(static_cast<cudaError_t>(r.detail)), " (", sizes, ")");
  }
  TORCH_CHECK(false, "tacq.", op, ": unknown launcher status ", static_cast<int>(r.status), " (",
              sizes, ")");
}

}  // namespace tacq
