// CUDA entry point of tacq.saliency_accumulate: the CPU glue's checks, device
// guard, current stream, launch (csrc/kernels/cuda/saliency.cu), registration.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>

#include "../../kernels/cuda/saliency.cuh"
#include "launch_check.h"
#include "../validate.h"

namespace tacq {
namespace {

void saliency_accumulate_cuda(at::Tensor& acc, const at::Tensor& grad_out, const at::Tensor& act) {
  constexpr const char* op = "saliency_accumulate";
  check_saliency_args(op, acc, grad_out, act);
  const at::Tensor g = (grad_out.dim() == 2 ? grad_out.unsqueeze(0) : grad_out).contiguous();
  const at::Tensor a = (act.dim() == 2 ? act.unsqueeze(0) : act).contiguous();
  const int64_t B = g.size(0), T = g.size(1), N = acc.size(0), K = acc.size(1);
  if (B == 0 || T == 0 || N == 0 || K == 0) return;

  const c10::cuda::CUDAGuard guard(acc.device());
  const cuda::Result r = cuda::launch_saliency_accumulate(
      g.data_ptr(), a.data_ptr(), cuda_dtype(g.scalar_type()), acc.data_ptr<float>(), B, T, N, K,
      c10::cuda::getCurrentCUDAStream());
  check_launch(op, r,
               "B = " + std::to_string(B) + ", T = " + std::to_string(T) + ", N = " +
                   std::to_string(N) + ", K = " + std::to_string(K) + ", dtype = " +
                   dtype_name(g.scalar_type()));
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CUDA, m) { m.impl("saliency_accumulate", &saliency_accumulate_cuda); }

}  // namespace tacq
