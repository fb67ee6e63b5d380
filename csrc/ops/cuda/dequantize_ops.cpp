// CUDA entry point of tacq.dequantize: the CPU glue's checks, device guard,
// current stream, launch (csrc/kernels/cuda/dequantize.cu), registration.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "../../kernels/cuda/dequantize.cuh"
#include "launch_check.h"
#include "../validate.h"

namespace tacq {
namespace {

at::Tensor dequantize_cuda(const at::Tensor& packed, const at::Tensor& scale,
                           const at::Tensor& zero, int64_t bits, int64_t group_size, int64_t K,
                           std::optional<at::ScalarType> dtype) {
  constexpr const char* op = "dequantize";
  const at::ScalarType out_dtype = dtype.value_or(at::kFloat);
  const auto [N, G, group_len] =
      check_dequantize_args(op, packed, scale, zero, bits, group_size, K, out_dtype);

  const c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor out = at::empty({N, K}, packed.options().dtype(out_dtype));
  const cuda::Result r = cuda::launch_dequantize(
      reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()), scale.data_ptr(),
      zero.data_ptr(), cuda_dtype(scale.scalar_type()), N, K, G, group_len, static_cast<int>(bits),
      out.data_ptr(), cuda_dtype(out_dtype), c10::cuda::getCurrentCUDAStream());
  check_launch(op, r,
               "N = " + std::to_string(N) + ", K = " + std::to_string(K) + ", G = " +
                   std::to_string(G) + ", bits = " + std::to_string(bits));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CUDA, m) { m.impl("dequantize", &dequantize_cuda); }

}  // namespace tacq
