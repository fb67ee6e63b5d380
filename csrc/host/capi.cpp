// The C API of tacq/tacq.h over the host layer (host.h): null checks, the
// error detail of tacq_last_error(), and no exception ever crossing into C.
#include <new>
#include <vector>

#include "host.h"
#include "tacq/cpu_isa.h"
#include "tacq/limits.h"

static_assert(TACQ_MIXED_GEMV_MAX_ROWS == tacq::kMixedGemvMaxRows, "one row limit");
static_assert(sizeof(tacq_weights) == 88, "tacq_weights layout is ABI");

namespace {

using tacq::host::fail;
using tacq::host::guarded;

}  // namespace

extern "C" {

int32_t tacq_version(void) { return TACQ_VERSION; }

const char* tacq_status_string(tacq_status status) {
  switch (status) {
    case TACQ_OK: return "success";
    case TACQ_ERROR_NULL_POINTER: return "a required pointer argument is NULL";
    case TACQ_ERROR_BAD_SIZE: return "a size (N, K, M or nnz) is out of range or inconsistent";
    case TACQ_ERROR_BAD_BITS: return "bits must be 2, 3 or 4";
    case TACQ_ERROR_BAD_GROUP_SIZE: return "group_size must be -1, K, or a multiple of 32 that divides K";
    case TACQ_ERROR_BAD_DTYPE: return "unsupported element type";
    case TACQ_ERROR_BAD_VALUE: return "invalid value in an input array";
    case TACQ_ERROR_BAD_CSR: return "invalid CSR residual (row_ptr or col_idx)";
    case TACQ_ERROR_BAD_ARGUMENT: return "invalid argument";
    case TACQ_ERROR_OUT_OF_MEMORY: return "out of memory";
    case TACQ_ERROR_IO: return "cannot open or read a checkpoint file";
    case TACQ_ERROR_BAD_CHECKPOINT: return "malformed or corrupted checkpoint";
    case TACQ_ERROR_NOT_FOUND: return "no such quantized layer";
    case TACQ_ERROR_NO_CUDA: return "the library was built without CUDA";
    case TACQ_ERROR_CUDA: return "CUDA error";
    case TACQ_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* tacq_last_error(void) { return tacq::host::last_error(); }

const char* tacq_cpu_isa(void) { return tacq::cpu_isa_name(tacq::cpu_isa()); }

tacq_status tacq_pack(const uint8_t* codes, int64_t N, int64_t K, int32_t bits, int32_t* packed,
                      int32_t num_threads) {
  return guarded([&] { return tacq::host::pack(codes, N, K, bits, packed, num_threads); });
}

tacq_status tacq_unpack(const int32_t* packed, int64_t N, int64_t K, int32_t bits, uint8_t* codes,
                        int32_t num_threads) {
  return guarded([&] { return tacq::host::unpack(packed, N, K, bits, codes, num_threads); });
}

tacq_status tacq_quantize(const float* w, const uint8_t* keep, int64_t N, int64_t K, int32_t bits,
                          int64_t group_size, uint8_t* codes, float* scale, float* zero, int32_t num_threads) {
  return guarded([&] {
    return tacq::host::quantize(w, keep, N, K, bits, group_size, codes, scale, zero, num_threads);
  });
}

tacq_status tacq_dequantize_f32(const tacq_weights* weights, float* out, int32_t num_threads) {
  return guarded([&] {
    if (weights == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "tacq_dequantize_f32: weights is NULL");
    return tacq::host::dequantize(*weights, TACQ_DTYPE_F32, out, num_threads);
  });
}

tacq_status tacq_mixed_gemv_f32(const tacq_weights* weights, const float* x, int64_t M, float* y,
                                int32_t num_threads) {
  return guarded([&] {
    if (weights == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "tacq_mixed_gemv_f32: weights is NULL");
    const tacq::host::Activations a{x, TACQ_DTYPE_F32, M, weights->K, weights->K, 1};
    return tacq::host::mixed_gemv(*weights, a, y, num_threads);
  });
}

tacq_status tacq_mixed_gemv_int8x_f32(const tacq_weights* weights, const float* x, int64_t M, float* y,
                                      int32_t num_threads) {
  return guarded([&] {
    if (weights == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "tacq_mixed_gemv_int8x_f32: weights is NULL");
    const tacq::host::Activations a{x, TACQ_DTYPE_F32, M, weights->K, weights->K, 1, /*int8=*/true};
    return tacq::host::mixed_gemv(*weights, a, y, num_threads);
  });
}

tacq_status tacq_mixed_gemv_bf16(const tacq_weights* weights, const uint16_t* x, int64_t M, uint16_t* y,
                                 int32_t num_threads) {
  return guarded([&] {
    if (weights == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "tacq_mixed_gemv_bf16: weights is NULL");
    if (y == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "tacq_mixed_gemv_bf16: y is NULL");
    if (M < 1 || M > TACQ_MIXED_GEMV_MAX_ROWS || weights->N < 0 || weights->N > (int64_t{1} << 40))
      return fail(TACQ_ERROR_BAD_SIZE, "tacq_mixed_gemv_bf16: M must be 1 to %d and N in [0, 2^40], got M = %lld, N = %lld",
                  TACQ_MIXED_GEMV_MAX_ROWS, static_cast<long long>(M), static_cast<long long>(weights->N));
    std::vector<float> y32(static_cast<size_t>(M * weights->N) + 1);  // + 1: never empty (N = 0)
    const tacq::host::Activations a{x, TACQ_DTYPE_BF16, M, weights->K, weights->K, 1};
    const tacq_status s = tacq::host::mixed_gemv(*weights, a, y32.data(), num_threads);
    if (s != TACQ_OK) return s;
    for (size_t i = 0; i + 1 < y32.size(); ++i) y[i] = tacq::host::float_to_bf16(y32[i]);
    return TACQ_OK;
  });
}

#if !defined(TACQ_WITH_CUDA)
// Built without CUDA: the entry point exists (one ABI for every build) and says so.
int32_t tacq_has_cuda(void) { return 0; }

tacq_status tacq_mixed_gemv_cuda(const tacq_weights*, const void*, int32_t, int64_t, void*, struct CUstream_st*) {
  tacq::host::clear_error();
  return fail(TACQ_ERROR_NO_CUDA, "tacq_mixed_gemv_cuda: this libtacq was built without CUDA (TACQ_CUDA=OFF)");
}
#endif

}  // extern "C"
