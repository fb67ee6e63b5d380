/* tacq.h: the C API of the TACQ kernel library (libtacq), torch-free.
 *
 * Ops on raw pointers for 2-4 bit packed weights with a sparse fp16 CSR
 * residual (docs/format.md), and a reader for checkpoints written by the
 * Python package. Plain C99 (also valid C++); every function returns a
 * tacq_status, and tacq_status_string() turns it into a message. Build,
 * threading, versioning and the ABI rule: docs/c-api.md.
 *
 * Conventions
 *   - Arrays are dense and row-major; [N, K] means N rows of K elements.
 *   - fp16 and bf16 values are passed as their uint16_t bit patterns.
 *   - packed words are int32 holding the little-endian uint32 bit stream of
 *     docs/format.md: ceil(K/32)*bits words per row.
 *   - group_size is -1 or K (one group per row, G = 1) or a multiple of 32
 *     that divides K (G = K / group_size).
 *   - num_threads: 0 uses every OpenMP thread (omp_get_max_threads()), n > 0
 *     at most n threads, negative values are TACQ_ERROR_BAD_ARGUMENT.
 *   - Stack: the AVX-512 mixed_gemv keeps about 35 KiB of staged x on the
 *     stack of each thread it runs on (rows of K <= 256), so call it from
 *     threads with more stack than that (OpenMP workers and main threads have
 *     megabytes; some runtimes' default thread stacks are 64-128 KiB).
 *   - On failure nothing is guaranteed about output buffers, and
 *     tacq_last_error() describes the failure in the calling thread.
 */
#ifndef TACQ_TACQ_H
#define TACQ_TACQ_H

#include <stddef.h>
#include <stdint.h>

/* The version of this header. The library's own version is tacq_version().
 * ABI rule (docs/c-api.md): within one major version, functions, enum values
 * and struct fields are only ever added, never changed or removed; the
 * structs below are never extended (new data comes with new structs and new
 * functions), so their size and layout are part of the ABI. */
#define TACQ_VERSION_MAJOR 1
#define TACQ_VERSION_MINOR 2
#define TACQ_VERSION_PATCH 1
#define TACQ_VERSION_NUMBER(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))
#define TACQ_VERSION TACQ_VERSION_NUMBER(TACQ_VERSION_MAJOR, TACQ_VERSION_MINOR, TACQ_VERSION_PATCH)

/* The most activation rows (M) one mixed_gemv call takes. */
#define TACQ_MIXED_GEMV_MAX_ROWS 16

/* Exported from the shared library; the library's other symbols are hidden. */
#if defined(__GNUC__) && defined(TACQ_BUILDING_LIBRARY) && !defined(TACQ_HIDE_API)
#define TACQ_API __attribute__((visibility("default")))
#else
#define TACQ_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Values are stable (ABI); new ones are only appended. */
typedef enum tacq_status {
  TACQ_OK = 0,
  TACQ_ERROR_NULL_POINTER = 1,     /* a required pointer argument is NULL */
  TACQ_ERROR_BAD_SIZE = 2,         /* N, K, M or nnz out of range or inconsistent */
  TACQ_ERROR_BAD_BITS = 3,         /* bits not 2, 3 or 4 */
  TACQ_ERROR_BAD_GROUP_SIZE = 4,   /* group_size not -1, K, or a multiple of 32 dividing K */
  TACQ_ERROR_BAD_DTYPE = 5,        /* a tacq_dtype this call does not take */
  TACQ_ERROR_BAD_VALUE = 6,        /* a code >= 2^bits, a keep flag not 0/1, a non-finite weight */
  TACQ_ERROR_BAD_CSR = 7,          /* row_ptr not 0..nnz non-decreasing, or a row's columns
                                      not strictly increasing in [0, K) */
  TACQ_ERROR_BAD_ARGUMENT = 8,     /* another argument out of its domain (num_threads < 0, ...) */
  TACQ_ERROR_OUT_OF_MEMORY = 9,
  TACQ_ERROR_IO = 10,              /* a checkpoint file cannot be opened or read */
  TACQ_ERROR_BAD_CHECKPOINT = 11,  /* a checkpoint file is malformed or fails a check */
  TACQ_ERROR_NOT_FOUND = 12,       /* no quantized layer of that name / index */
  TACQ_ERROR_NO_CUDA = 13,         /* the library was built without CUDA */
  TACQ_ERROR_CUDA = 14,            /* the CUDA runtime refused a call or a launch */
  TACQ_ERROR_INTERNAL = 15
} tacq_status;

/* Element types. Values are stable (ABI). */
typedef enum tacq_dtype {
  TACQ_DTYPE_F32 = 0,
  TACQ_DTYPE_F16 = 1,   /* uint16_t bit patterns */
  TACQ_DTYPE_BF16 = 2,  /* uint16_t bit patterns */
  TACQ_DTYPE_F64 = 3    /* only as a checkpoint's bias dtype */
} tacq_dtype;

/* A quantized weight W[N, K] = D + R (docs/format.md), all pointers
 * borrowed (host memory for the CPU calls, device memory for the CUDA call):
 *   D[n, k] = scale[n, g] * (code[n, k] - zero[n, g]),  g = k / group_len
 *   R       = CSR matrix (row_ptr, col_idx, values) of nnz fp16 entries.
 * dequantize reads only the first eight fields. */
typedef struct tacq_weights {
  int64_t N;              /* rows (out features), >= 0 */
  int64_t K;              /* columns (in features), >= 1 */
  int32_t bits;           /* 2, 3 or 4 */
  int32_t scale_dtype;    /* a tacq_dtype: TACQ_DTYPE_F32 or TACQ_DTYPE_F16 */
  int64_t group_size;     /* -1 or K: whole rows; else a multiple of 32 dividing K */
  const int32_t* packed;  /* [N, ceil(K/32)*bits] */
  const void* scale;      /* [N, G], scale_dtype */
  const void* zero;       /* [N, G], scale_dtype */
  int64_t nnz;            /* residual entries, 0 <= nnz <= INT32_MAX */
  const int32_t* row_ptr; /* [N + 1]: 0 = row_ptr[0] <= ... <= row_ptr[N] = nnz */
  const int32_t* col_idx; /* [nnz]: strictly increasing within a row, in [0, K) */
  const uint16_t* values; /* [nnz] fp16 */
} tacq_weights;

/* ---- library facts --------------------------------------------------------- */

/* TACQ_VERSION_NUMBER of the library linked at run time. */
TACQ_API int32_t tacq_version(void);
/* A static, never-NULL message for a status ("unknown status" if out of range). */
TACQ_API const char* tacq_status_string(tacq_status status);
/* What the last failing call of this thread reported (sizes, names); "" if
 * none. Valid until the next tacq call of this thread. */
TACQ_API const char* tacq_last_error(void);
/* The CPU kernels in use: "avx512", "avx2" or "generic" (the environment
 * variable TACQ_CPU_ISA=generic|avx2|avx512 caps the choice). */
TACQ_API const char* tacq_cpu_isa(void);
/* 1 if the library was built with its CUDA kernels, else 0. */
TACQ_API int32_t tacq_has_cuda(void);

/* ---- packing ------------------------------------------------------------- */

/* codes uint8 [N, K] (each < 2^bits) -> packed [N, ceil(K/32)*bits]. */
TACQ_API tacq_status tacq_pack(const uint8_t* codes, int64_t N, int64_t K, int32_t bits,
                               int32_t* packed, int32_t num_threads);
/* packed [N, ceil(K/32)*bits] -> codes uint8 [N, K]. */
TACQ_API tacq_status tacq_unpack(const int32_t* packed, int64_t N, int64_t K, int32_t bits,
                                 uint8_t* codes, int32_t num_threads);

/* ---- quantization -------------------------------------------------------- */

/* Row- or group-wise asymmetric uniform quantization of w fp32 [N, K] with
 * the 80-step clipping search of docs/method.md. keep (NULL, or uint8 [N, K]
 * of 0/1): kept weights are left out of the statistics and get the code of 0.
 * Outputs: codes uint8 [N, K], scale and zero fp32 [N, G]. w must be finite. */
TACQ_API tacq_status tacq_quantize(const float* w, const uint8_t* keep, int64_t N, int64_t K,
                                   int32_t bits, int64_t group_size, uint8_t* codes,
                                   float* scale, float* zero, int32_t num_threads);

/* out fp32 [N, K] = scale * (code - zero); the residual fields are not read. */
TACQ_API tacq_status tacq_dequantize_f32(const tacq_weights* weights, float* out,
                                         int32_t num_threads);

/* ---- mixed_gemv: y[M, N] = x[M, K] (D + R)^T, fp32 accumulation ------------ */

/* x fp32 [M, K], 1 <= M <= TACQ_MIXED_GEMV_MAX_ROWS -> y fp32 [M, N].
 * The CSR content is checked (TACQ_ERROR_BAD_CSR, y then undefined). */
TACQ_API tacq_status tacq_mixed_gemv_f32(const tacq_weights* weights, const float* x, int64_t M,
                                         float* y, int32_t num_threads);
/* The same with x first rounded to int8 per block of 32 values along K:
 * q = round_half_even(x * (127 / amax)), x = q * (amax / 127), amax the
 * block's max |x| (blocks below 2^-64 scaled by 2^64 first, docs/c-api.md);
 * the AVX2 and AVX-512 VNNI kernels multiply the int8 values, faster than
 * fp32 x. x must be finite (TACQ_ERROR_BAD_VALUE). Since 1.1. */
TACQ_API tacq_status tacq_mixed_gemv_int8x_f32(const tacq_weights* weights, const float* x, int64_t M,
                                               float* y, int32_t num_threads);
/* x bf16 [M, K] -> y bf16 [M, N] (computed in fp32, rounded to nearest even). */
TACQ_API tacq_status tacq_mixed_gemv_bf16(const tacq_weights* weights, const uint16_t* x,
                                          int64_t M, uint16_t* y, int32_t num_threads);

/* The CUDA kernel on `stream` (a cudaStream_t; NULL = the legacy default
 * stream), every pointer a device pointer. x and y: x_dtype F32, F16 or BF16,
 * [M, K] and [M, N]. Asynchronous: launch errors are reported, kernel faults
 * surface at the next synchronization. The CSR content cannot be checked
 * without a copy to the host: the kernel clamps row ranges into [0, nnz] and
 * skips out-of-range columns, so it stays memory-safe, but only valid CSR
 * gives the right y. TACQ_ERROR_NO_CUDA in a build without CUDA. */
struct CUstream_st;
TACQ_API tacq_status tacq_mixed_gemv_cuda(const tacq_weights* weights, const void* x,
                                          int32_t x_dtype, int64_t M, void* y,
                                          struct CUstream_st* stream);

/* ---- checkpoints (docs/format.md) ----------------------------------------- */

typedef struct tacq_checkpoint tacq_checkpoint;  /* opaque */

/* A quantized layer of a checkpoint. Every pointer stays valid until
 * tacq_checkpoint_close. weights.scale_dtype is TACQ_DTYPE_F16 (format 1). */
typedef struct tacq_layer {
  const char* name;       /* qualified name, e.g. "model.layers.0.mlp.down_proj" */
  tacq_weights weights;   /* host memory, 64-byte aligned, checked as on loading */
  int32_t has_bias;       /* 0 or 1 */
  int32_t bias_dtype;     /* a tacq_dtype, if has_bias */
  const void* bias;       /* [N], or NULL */
} tacq_layer;

/* Opens the checkpoint directory `dir` (model.safetensors + tacq_config.json):
 * checks the weights file's size and sha256 against tacq_config.json, the
 * safetensors header (every tensor inside the file) and every layer entry of
 * tacq_config.json. Tensors are read when a layer is first asked for. */
TACQ_API tacq_status tacq_checkpoint_open(const char* dir, tacq_checkpoint** out);
/* Frees everything; NULL is a no-op. */
TACQ_API void tacq_checkpoint_close(tacq_checkpoint* checkpoint);
/* Number of quantized layers. */
TACQ_API tacq_status tacq_checkpoint_num_layers(const tacq_checkpoint* checkpoint,
                                                int64_t* count);
/* Name of layer `index` in [0, count), in the order of tacq_config.json. */
TACQ_API tacq_status tacq_checkpoint_layer_name(const tacq_checkpoint* checkpoint, int64_t index,
                                                const char** name);
/* Reads (once) and checks the layer's tensors as the Python loader does:
 * dtypes, shapes, scales finite and > 0, zeros integers in [0, 2^bits - 1],
 * the CSR structure, finite residual values, the bias. Thread-safe. */
TACQ_API tacq_status tacq_checkpoint_layer(tacq_checkpoint* checkpoint, const char* name,
                                           tacq_layer* out);

/* A layer stored in rows of different bit widths (docs/format.md, Row
 * splits; since 1.2). Its parts are layers of the checkpoint (read them with
 * tacq_checkpoint_layer), widths increasing; row n of the layer is the next
 * row not yet taken of the part whose width is row_bits[n], so y[n] comes
 * from that row of that part's y. Every pointer stays valid until
 * tacq_checkpoint_close. */
typedef struct tacq_row_split {
  const char* name;              /* qualified name of the whole layer */
  int64_t N, K;                  /* out_features, in_features */
  int32_t num_parts;
  int32_t has_bias;              /* 0 or 1 */
  const char* const* parts;      /* num_parts layer names: name.parts.0, name.parts.1, ... */
  const uint8_t* row_bits;       /* [N], each the width of one part */
  int32_t bias_dtype;            /* a tacq_dtype, if has_bias */
  int32_t reserved;              /* 0 */
  const void* bias;              /* [N], or NULL */
} tacq_row_split;

/* Number of row splits (0 in a checkpoint without any). Since 1.2. */
TACQ_API tacq_status tacq_checkpoint_num_row_splits(const tacq_checkpoint* checkpoint, int64_t* count);
/* Name of row split `index` in [0, count), in the order of tacq_config.json. Since 1.2. */
TACQ_API tacq_status tacq_checkpoint_row_split_name(const tacq_checkpoint* checkpoint, int64_t index,
                                                    const char** name);
/* Reads (once) and checks the split's row_bits (uint8 [N]: every entry the
 * width of a part, each part given exactly its number of rows) and bias.
 * Thread-safe. Since 1.2. */
TACQ_API tacq_status tacq_checkpoint_row_split(tacq_checkpoint* checkpoint, const char* name,
                                               tacq_row_split* out);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* TACQ_TACQ_H */
