// CUDA entry points of tacq.mixed_gemv and tacq.mixed_gemv_stored (and mixed_gemv_layer's
// error): the CPU glue's shape/dtype checks (the
// CSR *content* is not read on the device, see mixed_gemv.cuh), device guard,
// current stream, launch (csrc/kernels/cuda/mixed_gemv.cu), registration.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../../kernels/cuda/mixed_gemv.cuh"
#include "launch_check.h"
#include "../activation_int8.h"
#include "../validate.h"

namespace tacq {
namespace {

// x [..., K] (checked) -> y [..., N] for the checked weights of p (p's x, y
// and M are set here): the rows of x, at most kMixedGemvMaxRows per launch.
at::Tensor mixed_gemv_launches(const char* op, const at::Tensor& x, cuda::GemvProblem p, bool x_int8) {
  const at::Tensor rows = activation_rows(x);
  const int64_t M = rows.size(0);
  if (M == 0) return at::empty(output_shape(x, p.N), x.options());

  const c10::cuda::CUDAGuard guard(x.device());
  // With x_int8 the kernel reads the rounded x in fp32, as the CPU kernels
  // without an int8 variant do.
  const at::Tensor xc = x_int8 ? round_int8_blocks(op, rows) : rows.contiguous();
  at::Tensor y = at::empty({M, p.N}, xc.options());
  p.x_dtype = cuda_dtype(xc.scalar_type());
  // More rows than one launch takes (a prompt): one launch per kMixedGemvMaxRows
  // rows, each reading the weights again (a dequantize + cuBLAS path would
  // read them once; not written yet).
  for (int64_t first = 0; first < M; first += kMixedGemvMaxRows) {
    p.M = std::min(kMixedGemvMaxRows, M - first);
    p.x = xc.narrow(0, first, p.M).data_ptr();
    p.y = y.narrow(0, first, p.M).data_ptr();
    check_launch(op, cuda::launch_mixed_gemv(p, c10::cuda::getCurrentCUDAStream()),
                 "M = " + std::to_string(p.M) + ", N = " + std::to_string(p.N) + ", K = " +
                     std::to_string(p.K) + ", G = " + std::to_string(p.G) + ", bits = " +
                     std::to_string(p.bits) + ", nnz = " + std::to_string(p.nnz));
  }
  const at::Tensor out = x_int8 ? y.to(x.scalar_type()) : y;
  return x.dim() == 2 ? out : out.view(output_shape(x, p.N));
}

at::Tensor mixed_gemv_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                           const at::Tensor& zero, int64_t bits, int64_t group_size,
                           const at::Tensor& row_ptr, const at::Tensor& col_idx,
                           const at::Tensor& values, bool x_int8) {
  constexpr const char* op = "mixed_gemv";
  const auto [N, G, group_len] = check_mixed_gemv_args(op, x, packed, scale, zero, bits, group_size,
                                                       row_ptr, col_idx, values);
  cuda::GemvProblem p{};
  p.N = N;
  p.K = x.size(-1);
  p.packed = reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>());
  p.bits = static_cast<int>(bits);
  p.scale = scale.data_ptr();
  p.zero = zero.data_ptr();
  p.scale_dtype = cuda_dtype(scale.scalar_type());
  p.G = G;
  p.group_len = group_len;
  p.row_ptr = row_ptr.data_ptr<int32_t>();
  p.col_idx = col_idx.data_ptr<int32_t>();
  p.values = values.data_ptr();
  p.nnz = col_idx.size(0);
  return mixed_gemv_launches(op, x, p, x_int8);
}

// The same for a stored layer (csrc/ops/stored_layer.h): the weights' pointers
// are its sections.
at::Tensor mixed_gemv_stored_cuda(const at::Tensor& x, const at::Tensor& storage, int64_t N, int64_t bits,
                                  int64_t group_size, int64_t nnz, bool x_int8) {
  constexpr const char* op = "mixed_gemv_stored";
  const auto [shape, s] = check_mixed_gemv_stored_args(op, x, storage, N, bits, group_size, nnz);
  const uint8_t* base = storage.data_ptr<uint8_t>();
  cuda::GemvProblem p{};
  p.N = N;
  p.K = x.size(-1);
  p.packed = reinterpret_cast<const uint32_t*>(base + s.packed);
  p.bits = static_cast<int>(bits);
  p.scale = base + s.scale;
  p.zero = base + s.zero;
  p.scale_dtype = cuda_dtype(at::kHalf);
  p.G = shape.G;
  p.group_len = shape.group_len;
  p.row_ptr = reinterpret_cast<const int32_t*>(base + s.row_ptr);
  p.col_idx = reinterpret_cast<const int32_t*>(base + s.col_idx);
  p.values = base + s.values;
  p.nnz = nnz;
  return mixed_gemv_launches(op, x, p, x_int8);
}

// mixed_gemv_layer is a CPU op (csrc/registration.cpp says why): on CUDA an
// error that says which op to call instead, not the dispatcher's.
at::Tensor mixed_gemv_layer_cuda(const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, "tacq.mixed_gemv_layer: layer is on a CUDA device, and this op runs on the CPU only (its "
              "sizes are read from the layer's header); call tacq.mixed_gemv_stored with them");
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CUDA, m) {
  m.impl("mixed_gemv", &mixed_gemv_cuda);
  m.impl("mixed_gemv_stored", &mixed_gemv_stored_cuda);
  m.impl("mixed_gemv_layer", &mixed_gemv_layer_cuda);
}

}  // namespace tacq
