// tacq_mixed_gemv_cuda (tacq/tacq.h): the C entry point of the CUDA
// mixed_gemv launcher (csrc/kernels/cuda/mixed_gemv.cuh) on a caller's stream.
// Built only with TACQ_CUDA; capi.cpp has the stub that reports TACQ_ERROR_NO_CUDA.
#include <cuda_runtime.h>

#include "../kernels/cuda/mixed_gemv.cuh"
#include "host.h"

namespace {

using tacq::host::fail;

bool to_cuda_dtype(int32_t d, tacq::cuda::DType* out) {
  switch (d) {
    case TACQ_DTYPE_F32: *out = tacq::cuda::DType::kFloat32; return true;
    case TACQ_DTYPE_F16: *out = tacq::cuda::DType::kFloat16; return true;
    case TACQ_DTYPE_BF16: *out = tacq::cuda::DType::kBFloat16; return true;
    default: return false;
  }
}

}  // namespace

extern "C" {

int32_t tacq_has_cuda(void) { return 1; }

tacq_status tacq_mixed_gemv_cuda(const tacq_weights* weights, const void* x, int32_t x_dtype, int64_t M,
                                 void* y, struct CUstream_st* stream) {
  const char* fn = "tacq_mixed_gemv_cuda";
  tacq::host::clear_error();
  if (weights == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "%s: weights is NULL", fn);
  const tacq_weights& w = *weights;
  tacq::host::Shape shape{};
  // Device memory: the CSR content is not read here (see tacq.h).
  const tacq_status s = tacq::host::check_weights(fn, w, tacq::host::Residual::kPointers, &shape);
  if (s != TACQ_OK) return s;
  if (M < 1 || M > TACQ_MIXED_GEMV_MAX_ROWS)
    return fail(TACQ_ERROR_BAD_SIZE, "%s: x must have 1 to %d rows (M), got %lld", fn, TACQ_MIXED_GEMV_MAX_ROWS,
                static_cast<long long>(M));
  tacq::cuda::GemvProblem p{};
  tacq::cuda::DType scale_dtype{};
  if (!to_cuda_dtype(x_dtype, &p.x_dtype) || !to_cuda_dtype(w.scale_dtype, &scale_dtype))
    return fail(TACQ_ERROR_BAD_DTYPE, "%s: x_dtype must be F32, F16 or BF16, got %d", fn, static_cast<int>(x_dtype));
  if (x == nullptr || y == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "%s: x and y must not be NULL", fn);
  p.x = x;
  p.M = M;
  p.N = w.N;
  p.K = w.K;
  p.packed = reinterpret_cast<const uint32_t*>(w.packed);
  p.bits = w.bits;
  p.scale = w.scale;
  p.zero = w.zero;
  p.scale_dtype = scale_dtype;
  p.G = shape.G;
  p.group_len = shape.group_len;
  p.row_ptr = w.row_ptr;
  p.col_idx = w.col_idx;
  p.values = w.values;
  p.nnz = w.nnz;
  p.y = y;
  if (w.N == 0) return TACQ_OK;
  const tacq::cuda::Result r = tacq::cuda::launch_mixed_gemv(p, stream);
  switch (r.status) {
    case tacq::cuda::Status::kOk: return TACQ_OK;
    case tacq::cuda::Status::kBadBits: return fail(TACQ_ERROR_BAD_BITS, "%s: no CUDA kernel for bits = %lld", fn, static_cast<long long>(r.detail));
    case tacq::cuda::Status::kBadDType: return fail(TACQ_ERROR_BAD_DTYPE, "%s: no CUDA kernel for element type %lld", fn, static_cast<long long>(r.detail));
    case tacq::cuda::Status::kBadRows: return fail(TACQ_ERROR_BAD_SIZE, "%s: no CUDA kernel for M = %lld", fn, static_cast<long long>(r.detail));
    case tacq::cuda::Status::kLaunchFailed:
      return fail(TACQ_ERROR_CUDA, "%s: %s (M = %lld, N = %lld, K = %lld, bits = %d)", fn,
                  cudaGetErrorString(static_cast<cudaError_t>(r.detail)), static_cast<long long>(M),
                  static_cast<long long>(w.N), static_cast<long long>(w.K), static_cast<int>(w.bits));
  }
  return fail(TACQ_ERROR_INTERNAL, "%s: unknown launcher status %d", fn, static_cast<int>(r.status));
}

}  // extern "C"
