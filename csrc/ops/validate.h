// Argument checks shared by the CPU and CUDA entry points of every op. Each
// failure raises a c10::Error (RuntimeError in Python) whose message starts
// with "tacq.<op>: <argument>" and says what was expected and what was given.
// The fake kernels in python/tacq_ext/ops.py check the same things with the
// same words.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "stored_layer.h"
#include "tacq/limits.h"

namespace tacq {

// Python's spelling of a dtype ("torch.float32"), so C++ and fake-kernel
// messages read alike.
std::string dtype_name(at::ScalarType s);

// bits in {2, 3, 4}.
void check_bits(const char* op, int64_t bits);

// group_size is -1, K, or a multiple of 32 dividing K. Returns the number of
// groups per row G and writes the effective group length (K for whole rows).
int64_t check_group_size(const char* op, int64_t group_size, int64_t K, int64_t* group_len);

// Generic tensor checks.
void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* layout);
void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType expected);
void check_float_dtype(const char* op, const char* name, const at::Tensor& t, bool allow_fp32,
                       bool allow_fp16, bool allow_bf16);
void check_contiguous(const char* op, const char* name, const at::Tensor& t);
void check_same_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& ref,
                       const char* ref_name);
void check_size(const char* op, const char* name, const at::Tensor& t, int64_t dim, int64_t expected,
                const char* meaning);

// packed int32 [N, ceil(K/32)*bits], contiguous, on ref's device. Returns N.
int64_t check_packed(const char* op, const at::Tensor& packed, int64_t bits, int64_t K);

// scale and zero: fp32 or fp16, [N, G], same dtype, contiguous, on packed's device.
void check_scale_zero(const char* op, const at::Tensor& scale, const at::Tensor& zero,
                      const at::Tensor& packed, int64_t N, int64_t G);

// CSR residual: row_ptr int32 [N+1], col_idx int32 [nnz], values fp16 [nnz],
// contiguous, on packed's device. When `check_rows` (the tensors are on the
// CPU) also checks row_ptr[0] == 0, non-decreasing, row_ptr[N] == nnz: O(N).
void check_csr(const char* op, const at::Tensor& row_ptr, const at::Tensor& col_idx,
               const at::Tensor& values, const at::Tensor& packed, int64_t N, int64_t K,
               bool check_rows);

// CSR rows (host memory): row_ptr[0] == 0, non-decreasing, row_ptr[N] == nnz. O(N).
void check_csr_rows(const char* op, const int32_t* row_ptr, int64_t N, int64_t nnz);

// CSR columns (host memory, rows already checked): in [0, K) and strictly
// increasing within each row; the error names the first bad entry. O(nnz):
// the CPU kernels check columns as they read them and call this only to report.
void check_csr_columns(const char* op, const int32_t* row_ptr, const int32_t* col_idx, int64_t N, int64_t K);

// codes: uint8 [N, K] with K >= 1 and every code < 2^bits. Reads the maximum
// code (a device sync for CUDA tensors: pack runs at load time, not per token).
void check_codes(const char* op, const at::Tensor& codes, int64_t bits);

// Output dtype of dequantize: fp32, fp16 or bf16.
void check_out_dtype(const char* op, at::ScalarType dtype);

// gather_columns: y fp32 / fp16 / bf16 [M, N] contiguous; index int64 [N_out]
// contiguous on y's device (its range is the kernel's to check).
void check_gather_columns_args(const char* op, const at::Tensor& y, const at::Tensor& index);

// bf16_gemv: x bf16 [..., K] with at most kMixedGemvMaxRows rows, weight bf16
// [N, K] contiguous, on x's device.
void check_bf16_gemv_args(const char* op, const at::Tensor& x, const at::Tensor& weight);

// Op-level argument checks shared by the CPU and CUDA glue of one op.
// saliency_accumulate: acc fp32 [N, K] contiguous; grad_out [B, T, N] or
// [T, N] and act [B, T, K] or [T, K] of one float dtype, on acc's device.
void check_saliency_args(const char* op, const at::Tensor& acc, const at::Tensor& grad_out,
                         const at::Tensor& act);
// quantize: bits, w float [N, K], group_size, keep_mask bool [N, K] on w's
// device, w finite. Returns G and writes the group length.
int64_t check_quantize_args(const char* op, const at::Tensor& w, int64_t bits, int64_t group_size,
                            const std::optional<at::Tensor>& keep_mask, int64_t* group_len);

// What the glue of dequantize and mixed_gemv needs once their checks passed.
struct PackedShape {
  int64_t N, G, group_len;  // rows, groups per row, codes per group
};
// dequantize: bits, packed [N, ...] for K, group_size, scale/zero, out_dtype.
PackedShape check_dequantize_args(const char* op, const at::Tensor& packed, const at::Tensor& scale,
                                  const at::Tensor& zero, int64_t bits, int64_t group_size,
                                  int64_t K, at::ScalarType out_dtype);
// mixed_gemv: the dequantize checks with K = x.size(-1), x float [..., K] on
// packed's device, and the CSR residual (its content too when it is on the
// CPU).
PackedShape check_mixed_gemv_args(const char* op, const at::Tensor& x, const at::Tensor& packed,
                                  const at::Tensor& scale, const at::Tensor& zero, int64_t bits,
                                  int64_t group_size, const at::Tensor& row_ptr,
                                  const at::Tensor& col_idx, const at::Tensor& values);

// mixed_gemv_stored: bits, x float [..., K], group_size, N and nnz in
// [0, INT32_MAX], storage uint8 contiguous on x's device holding
// stored_layout(...).bytes bytes (any shape), its start aligned to
// kStoredAlign; on the CPU the CSR rows too. The header is not read.
struct StoredShape {
  PackedShape shape;
  StoredLayout layout;
};
StoredShape check_mixed_gemv_stored_args(const char* op, const at::Tensor& x, const at::Tensor& storage,
                                         int64_t N, int64_t bits, int64_t group_size, int64_t nnz,
                                         const char* storage_name = "storage");

// mixed_gemv_layer: layer uint8 [N, B] contiguous on x's device (the CPU),
// x float [..., K], and layer's header: the magic, N and K as the shapes
// say, x_int8 0 or 1; the rest as check_mixed_gemv_stored_args checks it.
StoredHeader read_stored_header(const char* op, const at::Tensor& x, const at::Tensor& layer);

// x [..., K] (checked) as its M rows [M, K]: x itself when 2-D, else a view
// where x's strides allow one, else a copy. M may be 0.
at::Tensor activation_rows(const at::Tensor& x);
// mixed_gemv's output shape for x [..., K]: [..., N].
std::vector<int64_t> output_shape(const at::Tensor& x, int64_t N);

// Errors if t holds a NaN or an infinity (t floating point, any device).
void check_finite(const char* op, const char* name, const at::Tensor& t);

}  // namespace tacq
