// CUDA entry point of tacq.quantize: the CPU glue's checks, device guard,
// current stream, launch (csrc/kernels/cuda/quantize.cu), registration.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "../../kernels/cuda/quantize.cuh"
#include "launch_check.h"
#include "../validate.h"

namespace tacq {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_cuda(
    const at::Tensor& w, int64_t bits, int64_t group_size,
    const std::optional<at::Tensor>& keep_mask) {
  constexpr const char* op = "quantize";
  int64_t group_len = 0;
  const int64_t G = check_quantize_args(op, w, bits, group_size, keep_mask, &group_len);

  const c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor wc = w.contiguous();
  const at::Tensor keep = keep_mask.has_value() ? keep_mask->contiguous() : at::Tensor();
  const int64_t N = w.size(0), K = w.size(1);
  at::Tensor codes = at::empty({N, K}, w.options().dtype(at::kByte));
  at::Tensor scale = at::empty({N, G}, w.options().dtype(at::kFloat));
  at::Tensor zero = at::empty({N, G}, w.options().dtype(at::kFloat));
  if (N == 0 || K == 0) return {codes, scale, zero};

  const cuda::Result r = cuda::launch_quantize(
      wc.data_ptr(), cuda_dtype(wc.scalar_type()), keep.defined() ? keep.data_ptr<bool>() : nullptr,
      N, K, group_len, static_cast<int>(bits), codes.data_ptr<uint8_t>(), scale.data_ptr<float>(),
      zero.data_ptr<float>(), c10::cuda::getCurrentCUDAStream());
  check_launch(op, r,
               "N = " + std::to_string(N) + ", K = " + std::to_string(K) + ", group length = " +
                   std::to_string(group_len) + ", bits = " + std::to_string(bits));
  return {codes, scale, zero};
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CUDA, m) { m.impl("quantize", &quantize_cuda); }

}  // namespace tacq
