// The torch-free host layer: argument checks, x staging, ISA dispatch and
// threading around the CPU kernels (csrc/kernels/cpu). Used by the C API
// (capi.cpp, tacq/tacq.h) and by the ATen glue (csrc/ops/cpu/*_ops.cpp), which
// checks tensors first with torch's messages and then calls these functions.
// Every function returns a tacq_status; on failure the detail is in
// tacq_last_error() (set_error below). Nothing here throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "tacq/tacq.h"

namespace tacq::host {

// Records `status` and a printf-style detail for tacq_last_error(); returns status.
tacq_status fail(tacq_status status, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void clear_error();

// Runs body() (returning a tacq_status) with the error detail cleared first and
// no C++ exception escaping: the wrapper of every extern "C" entry point.
template <typename F>
tacq_status guarded(F&& body) {
  clear_error();
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(TACQ_ERROR_OUT_OF_MEMORY, "out of memory");
  } catch (...) {
    return fail(TACQ_ERROR_INTERNAL, "unexpected C++ exception");
  }
}
const char* last_error();

// Activations [M, K] of dtype F32, F16 or BF16 with element strides;
// int8: mixed_gemv rounds them to int8 per 32-value block first
// (csrc/kernels/cpu/mixed_gemv.h, Int8Order).
struct Activations {
  const void* data;
  tacq_dtype dtype;
  int64_t M, K;
  int64_t stride_m, stride_k;
  bool int8 = false;
};

// Shape facts of a checked tacq_weights.
struct Shape {
  int64_t G, group_len;
};

// What check_weights looks at beyond bits, N, K, group_size, the scale dtype
// and the dense pointers: nothing of the residual, its nnz and pointers, or
// those and the row_ptr content (O(N); host memory only).
enum class Residual { kSkip, kPointers, kContent };
// `fn` names the caller in messages.
tacq_status check_weights(const char* fn, const tacq_weights& w, Residual residual, Shape* shape);
tacq_status check_threads(const char* fn, int num_threads);

tacq_status pack(const uint8_t* codes, int64_t N, int64_t K, int bits, int32_t* packed,
                 int num_threads);
tacq_status unpack(const int32_t* packed, int64_t N, int64_t K, int bits, uint8_t* codes,
                   int num_threads);
// dequant(packed) [N, K] in out, of out_dtype: F32, or BF16 rounded to
// nearest even from the fp32 value.
tacq_status dequantize(const tacq_weights& w, tacq_dtype out_dtype, void* out, int num_threads);
// Rows [row_begin, row_end) of the dense weight dequant(packed) + R, [row_end -
// row_begin, K] of out_dtype (F32, or BF16 rounded once from the fp32 sum) in
// out: what batches too large for mixed_gemv multiply with a GEMM. row_ptr's
// content must have been checked (check_weights with Residual::kContent); a bad
// column of these rows is TACQ_ERROR_BAD_CSR.
tacq_status dense_rows(const tacq_weights& w, int64_t row_begin, int64_t row_end, tacq_dtype out_dtype,
                       void* out, int num_threads);
// keep: NULL or [N, K] bytes of 0/1.
tacq_status quantize(const float* w, const uint8_t* keep, int64_t N, int64_t K, int bits,
                     int64_t group_size, uint8_t* codes, float* scale, float* zero,
                     int num_threads);
// y fp32 [M, N]. Returns TACQ_ERROR_BAD_CSR if a row's columns are invalid,
// TACQ_ERROR_BAD_VALUE if x.int8 and x holds NaN or infinity.
// row_ptr_checked: the caller has checked row_ptr's content (once for several
// calls on the same weights), so it is not read again here.
tacq_status mixed_gemv(const tacq_weights& w, const Activations& x, float* y, int num_threads,
                       bool row_ptr_checked = false);

// Scalar conversions (round to nearest even; NaN stays NaN).
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

// 64-byte aligned heap buffer (the AVX-512 kernels use aligned loads).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) { allocate(bytes); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(ptr_);
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  ~AlignedBuffer() { std::free(ptr_); }
  // false when out of memory; bytes == 0 still allocates one cache line.
  bool allocate(size_t bytes) {
    std::free(ptr_);
    bytes_ = bytes;
    const size_t rounded = bytes / 64 * 64 + 64;
    ptr_ = bytes > SIZE_MAX - 64 ? nullptr : std::aligned_alloc(64, rounded);
    return ptr_ != nullptr;
  }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  void* get() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace tacq::host
