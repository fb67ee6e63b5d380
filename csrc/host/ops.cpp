// Host drivers of the CPU ops (host.h): checks, staging, ISA dispatch,
// threading. Shared by the C API (capi.cpp) and the ATen glue
// (csrc/ops/cpu/*_ops.cpp), which checks tensors, allocates outputs and calls these.
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "../kernels/cpu/dequantize.h"
#include "../kernels/cpu/halves.h"
#include "../kernels/cpu/mixed_gemv.h"
#include "../kernels/cpu/pack.h"
#include "../kernels/cpu/quantize.h"
#include "host.h"
#include "parallel.h"
#include "scratch.h"
#include "tacq/cpu_isa.h"
#include "tacq/limits.h"
#include "tacq/packing.h"

namespace tacq::host {

// ---- errors -------------------------------------------------------------------

namespace {
thread_local char g_error[512];
}

tacq_status fail(tacq_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(g_error, sizeof g_error, format, args);
  va_end(args);
  return status;
}

void clear_error() { g_error[0] = '\0'; }
const char* last_error() { return g_error; }

// ---- scalar conversions ---------------------------------------------------------

float half_to_float(uint16_t h) { return cpu::half_bits_to_float(h); }

float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) { return cpu::float_to_bf16_bits(f); }

// ---- checks -------------------------------------------------------------------

namespace {

// N * (K rounded up to 32) elements must stay far from int64 / size_t overflow.
constexpr int64_t kMaxElements = int64_t{1} << 50;
constexpr int64_t kMaxK = INT32_MAX;  // columns are int32 (col_idx)

int64_t padded(int64_t K) { return (K + 31) / 32 * 32; }

tacq_status check_bits(const char* fn, int64_t bits) {
  if (bits == 2 || bits == 3 || bits == 4) return TACQ_OK;
  return fail(TACQ_ERROR_BAD_BITS, "%s: bits must be 2, 3 or 4, got %lld", fn, static_cast<long long>(bits));
}

tacq_status check_matrix(const char* fn, int64_t N, int64_t K) {
  if (K < 1 || K > kMaxK)
    return fail(TACQ_ERROR_BAD_SIZE, "%s: K must be in [1, %lld], got %lld", fn,
                static_cast<long long>(kMaxK), static_cast<long long>(K));
  if (N < 0 || N > kMaxElements / padded(K))
    return fail(TACQ_ERROR_BAD_SIZE, "%s: N must be in [0, %lld] for K = %lld, got %lld", fn,
                static_cast<long long>(kMaxElements / padded(K)), static_cast<long long>(K),
                static_cast<long long>(N));
  return TACQ_OK;
}

tacq_status group_shape(const char* fn, int64_t group_size, int64_t K, Shape* shape) {
  if (group_size == -1 || group_size == K) {
    *shape = Shape{1, K};
    return TACQ_OK;
  }
  if (group_size > 0 && group_size % 32 == 0 && K % group_size == 0) {
    *shape = Shape{K / group_size, group_size};
    return TACQ_OK;
  }
  return fail(TACQ_ERROR_BAD_GROUP_SIZE,
              "%s: group_size must be -1 (whole row), K, or a multiple of 32 that divides K = %lld, got %lld",
              fn, static_cast<long long>(K), static_cast<long long>(group_size));
}

#define TACQ_TRY(expr)                     \
  do {                                     \
    const tacq_status _s = (expr);         \
    if (_s != TACQ_OK) return _s;          \
  } while (0)

}  // namespace

tacq_status check_threads(const char* fn, int num_threads) {
  if (num_threads >= 0) return TACQ_OK;
  return fail(TACQ_ERROR_BAD_ARGUMENT, "%s: num_threads must be >= 0 (0 = all), got %d", fn, num_threads);
}

tacq_status check_weights(const char* fn, const tacq_weights& w, Residual residual, Shape* shape) {
  TACQ_TRY(check_bits(fn, w.bits));
  TACQ_TRY(check_matrix(fn, w.N, w.K));
  TACQ_TRY(group_shape(fn, w.group_size, w.K, shape));
  if (w.scale_dtype != TACQ_DTYPE_F32 && w.scale_dtype != TACQ_DTYPE_F16)
    return fail(TACQ_ERROR_BAD_DTYPE, "%s: scale_dtype must be TACQ_DTYPE_F32 or TACQ_DTYPE_F16, got %d", fn,
                static_cast<int>(w.scale_dtype));
  // Pointers to empty arrays (N = 0, nnz = 0) may be NULL.
  if (w.N > 0 && (w.packed == nullptr || w.scale == nullptr || w.zero == nullptr))
    return fail(TACQ_ERROR_NULL_POINTER, "%s: weights packed, scale and zero must not be NULL", fn);
  if (residual == Residual::kSkip) return TACQ_OK;
  if (w.nnz < 0 || w.nnz > INT32_MAX)
    return fail(TACQ_ERROR_BAD_SIZE, "%s: nnz must be in [0, %d], got %lld", fn, INT32_MAX,
                static_cast<long long>(w.nnz));
  if (w.row_ptr == nullptr || (w.nnz > 0 && (w.col_idx == nullptr || w.values == nullptr)))
    return fail(TACQ_ERROR_NULL_POINTER, "%s: weights row_ptr (and col_idx, values when nnz > 0) must not be NULL",
                fn);
  if (residual == Residual::kPointers) return TACQ_OK;
  const int32_t* rp = w.row_ptr;
  if (rp[0] != 0) return fail(TACQ_ERROR_BAD_CSR, "%s: row_ptr[0] must be 0, got %d", fn, rp[0]);
  if (rp[w.N] != w.nnz)
    return fail(TACQ_ERROR_BAD_CSR, "%s: row_ptr[N] must equal nnz = %lld, got %d", fn,
                static_cast<long long>(w.nnz), rp[w.N]);
  for (int64_t n = 0; n < w.N; ++n)
    if (rp[n] > rp[n + 1])
      return fail(TACQ_ERROR_BAD_CSR, "%s: row_ptr must be non-decreasing, row_ptr[%lld] = %d > row_ptr[%lld] = %d",
                  fn, static_cast<long long>(n), rp[n], static_cast<long long>(n + 1), rp[n + 1]);
  return TACQ_OK;
}

namespace {

// Names the first invalid column (rows already checked); TACQ_OK if none.
tacq_status check_columns(const char* fn, const tacq_weights& w) {
  for (int64_t n = 0; n < w.N; ++n) {
    for (int64_t i = w.row_ptr[n]; i < w.row_ptr[n + 1]; ++i) {
      const int32_t c = w.col_idx[i];
      if (c < 0 || c >= w.K)
        return fail(TACQ_ERROR_BAD_CSR, "%s: col_idx[%lld] = %d (row %lld) is out of range [0, K = %lld)", fn,
                    static_cast<long long>(i), c, static_cast<long long>(n), static_cast<long long>(w.K));
      if (i > w.row_ptr[n] && c <= w.col_idx[i - 1])
        return fail(TACQ_ERROR_BAD_CSR, "%s: col_idx must be strictly increasing within a row, row %lld has %d then %d",
                    fn, static_cast<long long>(n), w.col_idx[i - 1], c);
    }
  }
  return TACQ_OK;
}

// The build of a kernel for `isa`, from its avx512, avx2 and generic builds.
template <typename Fn>
Fn for_isa(CpuIsa isa, Fn avx512, Fn avx2, Fn generic) {
  switch (isa) {
    case CpuIsa::kAvx512: return avx512;
    case CpuIsa::kAvx2: return avx2;
    case CpuIsa::kGeneric: break;
  }
  return generic;
}

cpu::HalvesToFloatsFn halves_kernel_for(CpuIsa isa) {  // F16C: the avx2 build serves avx512 too
  return for_isa(isa, &cpu::avx2::halves_to_floats, &cpu::avx2::halves_to_floats, &cpu::generic::halves_to_floats);
}

cpu::FloatsToBf16Fn bf16_kernel_for(CpuIsa isa) {
  return for_isa(isa, &cpu::avx512::floats_to_bf16, &cpu::avx2::floats_to_bf16, &cpu::generic::floats_to_bf16);
}

// scale/zero as fp32: the caller's arrays, or converted copies in `storage`.
tacq_status scales_f32(const tacq_weights& w, int64_t G, AlignedBuffer& storage, const float** scale,
                       const float** zero) {
  if (w.scale_dtype == TACQ_DTYPE_F32) {
    *scale = static_cast<const float*>(w.scale);
    *zero = static_cast<const float*>(w.zero);
    return TACQ_OK;
  }
  const int64_t count = w.N * G;
  if (!storage.allocate(2 * static_cast<size_t>(count) * sizeof(float)))
    return fail(TACQ_ERROR_OUT_OF_MEMORY, "out of memory for %lld scales", static_cast<long long>(count));
  float* s = storage.as<float>();
  const cpu::HalvesToFloatsFn convert = halves_kernel_for(cpu_isa());
  convert(static_cast<const uint16_t*>(w.scale), s, count);
  convert(static_cast<const uint16_t*>(w.zero), s + count, count);
  *scale = s;
  *zero = s + count;
  return TACQ_OK;
}

int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

}  // namespace

// ---- pack / unpack ----------------------------------------------------------------

tacq_status pack(const uint8_t* codes, int64_t N, int64_t K, int bits, int32_t* packed, int num_threads) {
  const char* fn = "tacq_pack";
  TACQ_TRY(check_bits(fn, bits));
  TACQ_TRY(check_matrix(fn, N, K));
  TACQ_TRY(check_threads(fn, num_threads));
  if (N == 0) return TACQ_OK;
  if (codes == nullptr || packed == nullptr)
    return fail(TACQ_ERROR_NULL_POINTER, "%s: codes and packed must not be NULL", fn);
  const uint8_t limit = static_cast<uint8_t>(1u << bits);
  for (int64_t i = 0; i < N * K; ++i)
    if (codes[i] >= limit)
      return fail(TACQ_ERROR_BAD_VALUE, "%s: codes must be < 2^bits = %d, got a code %d at index %lld", fn,
                  static_cast<int>(limit), static_cast<int>(codes[i]), static_cast<long long>(i));
  auto* dst = reinterpret_cast<uint32_t*>(packed);
  parallel_for(0, N, max64(1, (1 << 16) / K), num_threads, [&](int64_t b, int64_t e, int) {
    cpu::pack_rows(codes, K, bits, dst, b, e);
  });
  return TACQ_OK;
}

tacq_status unpack(const int32_t* packed, int64_t N, int64_t K, int bits, uint8_t* codes, int num_threads) {
  const char* fn = "tacq_unpack";
  TACQ_TRY(check_bits(fn, bits));
  TACQ_TRY(check_matrix(fn, N, K));
  TACQ_TRY(check_threads(fn, num_threads));
  if (N == 0) return TACQ_OK;
  if (codes == nullptr || packed == nullptr)
    return fail(TACQ_ERROR_NULL_POINTER, "%s: packed and codes must not be NULL", fn);
  const auto* src = reinterpret_cast<const uint32_t*>(packed);
  parallel_for(0, N, max64(1, (1 << 16) / K), num_threads, [&](int64_t b, int64_t e, int) {
    cpu::unpack_rows(src, K, bits, codes, b, e);
  });
  return TACQ_OK;
}

// ---- dequantize ---------------------------------------------------------------------

namespace {

cpu::DequantizeRowsFn dequantize_kernel_for(CpuIsa isa) {
  return for_isa(isa, &cpu::avx512::dequantize_rows, &cpu::avx2::dequantize_rows, &cpu::generic::dequantize_rows);
}

}  // namespace

namespace {

// Adds row n's residual into `row`; false if a column is out of range or not
// strictly increasing (the caller's full check names the entry).
bool add_residual_row(const tacq_weights& w, int64_t n, float* row) {
  int32_t previous = -1;
  for (int32_t i = w.row_ptr[n]; i < w.row_ptr[n + 1]; ++i) {
    const int32_t c = w.col_idx[i];
    if (c <= previous || c >= w.K) return false;
    row[c] += half_to_float(w.values[i]);
    previous = c;
  }
  return true;
}

// Rows [row_begin, row_end) of dequant(packed), plus the residual if
// with_residual, into out [rows, K] of out_dtype (F32, or BF16 rounded once
// from the fp32 rows, which each thread builds in a scratch that stays in
// cache: no fp32 copy of the block goes through memory).
tacq_status dense_rows_as(const char* fn, const tacq_weights& w, int64_t row_begin, int64_t row_end,
                          bool with_residual, tacq_dtype out_dtype, void* out, int num_threads) {
  Shape shape{};
  TACQ_TRY(check_weights(fn, w, with_residual ? Residual::kPointers : Residual::kSkip, &shape));
  TACQ_TRY(check_threads(fn, num_threads));
  if (row_begin < 0 || row_begin > row_end || row_end > w.N)
    return fail(TACQ_ERROR_BAD_SIZE, "%s: rows [%lld, %lld) are not within [0, N = %lld)", fn,
                static_cast<long long>(row_begin), static_cast<long long>(row_end), static_cast<long long>(w.N));
  if (out_dtype != TACQ_DTYPE_F32 && out_dtype != TACQ_DTYPE_BF16)
    return fail(TACQ_ERROR_BAD_DTYPE, "%s: out dtype must be F32 or BF16, got %d", fn, static_cast<int>(out_dtype));
  const int64_t N = row_end - row_begin, K = w.K;
  if (N == 0) return TACQ_OK;
  if (out == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "%s: out must not be NULL", fn);
  tacq_weights rows = w;
  rows.N = N;
  rows.packed = static_cast<const int32_t*>(w.packed) + row_begin * (padded(K) / 32 * w.bits);
  const size_t scale_bytes = w.scale_dtype == TACQ_DTYPE_F16 ? 2 : 4;
  rows.scale = static_cast<const char*>(w.scale) + row_begin * shape.G * scale_bytes;
  rows.zero = static_cast<const char*>(w.zero) + row_begin * shape.G * scale_bytes;
  AlignedBuffer converted;
  const float *scale = nullptr, *zero = nullptr;
  TACQ_TRY(scales_f32(rows, shape.G, converted, &scale, &zero));

  // Rows that take a residual or become bf16 are made a few at a time (~128
  // KiB of fp32, in cache): bf16 ones in a per-thread scratch, rounded from
  // there.
  const bool to_bf16 = out_dtype == TACQ_DTYPE_BF16, in_steps = to_bf16 || with_residual;
  const int64_t scratch_rows = max64(1, (32 << 10) / K);
  const int threads = plan_threads(N, max64(1, (1 << 15) / K), num_threads);
  AlignedBuffer scratch;
  if (to_bf16 && !scratch.allocate(static_cast<size_t>(threads * scratch_rows * K) * sizeof(float)))
    return fail(TACQ_ERROR_OUT_OF_MEMORY, "%s: out of memory for %d x %lld rows of %lld floats", fn, threads,
                static_cast<long long>(scratch_rows), static_cast<long long>(K));
  const cpu::DequantizeRowsFn dequantize_kernel = dequantize_kernel_for(cpu_isa());
  const cpu::FloatsToBf16Fn bf16_kernel = bf16_kernel_for(cpu_isa());
  const int64_t words = padded(K) / 32 * w.bits;
  std::atomic<bool> columns_ok{true};
  parallel_for(0, N, threads, [&](int64_t b, int64_t e, int tid) {
    const int64_t step = in_steps ? scratch_rows : e - b;
    for (int64_t first = b; first < e; first += step) {
      const int64_t count = e - first < step ? e - first : step;
      float* dense = to_bf16 ? scratch.as<float>() + tid * scratch_rows * K : static_cast<float*>(out) + first * K;
      const cpu::DequantizeProblem problem{reinterpret_cast<const uint32_t*>(rows.packed) + first * words,
                                           scale + first * shape.G, zero + first * shape.G, K, shape.group_len,
                                           static_cast<int>(w.bits), dense};
      dequantize_kernel(problem, 0, count);
      for (int64_t r = 0; with_residual && r < count; ++r) {
        if (!add_residual_row(w, row_begin + first + r, dense + r * K)) {
          columns_ok = false;
          return;
        }
      }
      if (to_bf16) bf16_kernel(dense, static_cast<uint16_t*>(out) + first * K, count * K);
    }
  });
  if (!columns_ok) {
    TACQ_TRY(check_columns(fn, w));
    return fail(TACQ_ERROR_INTERNAL, "%s: a row has a column that passes the column check", fn);
  }
  return TACQ_OK;
}

}  // namespace

tacq_status dequantize(const tacq_weights& w, tacq_dtype out_dtype, void* out, int num_threads) {
  return dense_rows_as("tacq_dequantize", w, 0, w.N, false, out_dtype, out, num_threads);
}

tacq_status dense_rows(const tacq_weights& w, int64_t row_begin, int64_t row_end, tacq_dtype out_dtype,
                       void* out, int num_threads) {
  return dense_rows_as("tacq_dense_rows", w, row_begin, row_end, true, out_dtype, out, num_threads);
}

// ---- quantize -------------------------------------------------------------------------

namespace {

cpu::QuantizeGroupsFn quantize_kernel_for(CpuIsa isa) {
  return for_isa(isa, &cpu::avx512::quantize_groups, &cpu::avx2::quantize_groups, &cpu::generic::quantize_groups);
}

}  // namespace

tacq_status quantize(const float* w, const uint8_t* keep, int64_t N, int64_t K, int bits, int64_t group_size,
                     uint8_t* codes, float* scale, float* zero, int num_threads) {
  const char* fn = "tacq_quantize";
  TACQ_TRY(check_bits(fn, bits));
  TACQ_TRY(check_matrix(fn, N, K));
  Shape shape{};
  TACQ_TRY(group_shape(fn, group_size, K, &shape));
  TACQ_TRY(check_threads(fn, num_threads));
  if (N == 0) return TACQ_OK;
  if (w == nullptr || codes == nullptr || scale == nullptr || zero == nullptr)
    return fail(TACQ_ERROR_NULL_POINTER, "%s: w, codes, scale and zero must not be NULL", fn);
  for (int64_t i = 0; i < N * K; ++i) {
    if (!std::isfinite(w[i]))
      return fail(TACQ_ERROR_BAD_VALUE, "%s: w contains NaN or infinity (index %lld)", fn, static_cast<long long>(i));
    if (keep != nullptr && keep[i] > 1)
      return fail(TACQ_ERROR_BAD_VALUE, "%s: keep must hold 0 or 1, got %d at index %lld", fn,
                  static_cast<int>(keep[i]), static_cast<long long>(i));
  }
  static_assert(sizeof(bool) == 1, "keep flags are read as bool");
  const cpu::QuantizeProblem problem{w, reinterpret_cast<const bool*>(keep), K, shape.group_len, bits,
                                     codes, scale, zero};
  const cpu::QuantizeGroupsFn kernel = quantize_kernel_for(cpu_isa());
  // ~80 passes over each group: a few thousand elements per task is plenty.
  const int64_t groups = N * shape.G;
  const int threads = plan_threads(groups, max64(1, 4096 / shape.group_len), num_threads);
  AlignedBuffer scratch;
  if (!scratch.allocate(static_cast<size_t>(threads) * static_cast<size_t>(shape.group_len) * sizeof(float)))
    return fail(TACQ_ERROR_OUT_OF_MEMORY, "%s: out of memory for the scratch of %d threads", fn, threads);
  parallel_for(0, groups, threads, [&](int64_t b, int64_t e, int tid) {
    kernel(problem, b, e, scratch.as<float>() + static_cast<int64_t>(tid) * shape.group_len);
  });
  return TACQ_OK;
}

// ---- mixed_gemv ------------------------------------------------------------------------

namespace {

// The kernel for this call: the AVX-512 lane kernels read x in lane order
// (bf16 lanes for bf16 x where the CPU multiplies bf16), the int8 kernels
// (AVX2, or AVX-512 VNNI where the CPU has it) int8 lanes, the others natural
// x. Int8 x on the generic path is read as the rounded values in fp32.
cpu::GemvKernel gemv_kernel_for(CpuIsa isa, tacq_dtype x_dtype, bool int8) {
  switch (isa) {
    case CpuIsa::kAvx512:
      if (int8)
        return {cpu_has_avx512_vnni() ? &cpu::avx512vnni::mixed_gemv_int8_rows : &cpu::avx2::mixed_gemv_int8_rows, 0,
                nullptr, true};
      if (x_dtype == TACQ_DTYPE_BF16 && cpu_has_avx512_bf16())
        return {&cpu::avx512bf16::mixed_gemv_rows, cpu::avx512bf16::kLaneBits, &cpu::avx512bf16::stage_lanes};
      return {&cpu::avx512::mixed_gemv_rows, cpu::avx512::kLaneBits, &cpu::avx512::stage_lanes};
    case CpuIsa::kAvx2:
      if (int8) return {&cpu::avx2::mixed_gemv_int8_rows, 0, nullptr, true};
      return {&cpu::avx2::mixed_gemv_rows, 0, nullptr};
    case CpuIsa::kGeneric: break;
  }
  return {&cpu::generic::mixed_gemv_rows, 0, nullptr};
}

template <typename Load>
void load_row(const Activations& x, int64_t m, int64_t Kp, float* row, Load load) {
  for (int64_t k = 0; k < x.K; ++k) row[k] = load(m * x.stride_m + k * x.stride_k);
  for (int64_t k = x.K; k < Kp; ++k) row[k] = 0.f;
}

// sums[g] = sum over group g of row[k] * weight[k % 8] (groups start at
// multiples of 8; weights powers of 2, so each product is exact).
void group_sums(const float* row, int64_t K, int64_t group_len, const float (&weight)[8], float* sums) {
  for (int64_t g = 0; g < K / group_len; ++g) {
    float partial[8] = {0.f};  // independent adds: no serial dependency chain
    int64_t k = g * group_len;
    for (; k + 8 <= (g + 1) * group_len; k += 8)
      for (int i = 0; i < 8; ++i) partial[i] += row[k + i];
    for (; k < (g + 1) * group_len; ++k) partial[k % 8] += row[k];
    float sum = 0.f;
    for (int i = 0; i < 8; ++i) sum += partial[i] * weight[i];
    sums[g] = sum;
  }
}

constexpr float kUnitWeights[8] = {1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f};

// Whether InPlaceCodes may stage these M rows xs [M, Kp]: they apply to the
// call's shape, and x, staged up to 16x larger, stays far from overflow.
bool codes_in_place(int bits, int lane_bits, int64_t M, int64_t Kp, const float* xs) {
  if (!cpu::InPlaceCodes::applies(bits, lane_bits, M)) return false;
  float largest = 0.f;
  for (int64_t i = 0; i < M * Kp; ++i) largest = std::fmax(largest, std::fabs(xs[i]));
  return largest <= 0x1p100f;
}

// Staged x: xs fp32 [M, Kp] zero-padded (rounded to int8 blocks if x.int8,
// q [M, Kp] and d [M, Kp/32] then hold the int8 form) and xsum [M, G] (sum of
// xs over each group), one thread per activation row. Returns the first row
// holding NaN or infinity when x.int8, else -1.
int64_t stage_activations(const Activations& x, int64_t Kp, int64_t group_len, float* xs, float* xsum,
                          int8_t* q, float* d, int num_threads) {
  const int64_t G = x.K / group_len;
  std::atomic<int64_t> bad_row{x.M};
  parallel_for(0, x.M, 1, num_threads, [&](int64_t b, int64_t e, int) {
    for (int64_t m = b; m < e; ++m) {
      float* row = xs + m * Kp;
      const auto* half = static_cast<const uint16_t*>(x.data);
      const auto* single = static_cast<const float*>(x.data);
      switch (x.dtype) {
        case TACQ_DTYPE_F16: load_row(x, m, Kp, row, [half](int64_t i) { return half_to_float(half[i]); }); break;
        case TACQ_DTYPE_BF16: load_row(x, m, Kp, row, [half](int64_t i) { return bf16_to_float(half[i]); }); break;
        default: load_row(x, m, Kp, row, [single](int64_t i) { return single[i]; }); break;
      }
      if (x.int8 && !cpu::round_int8_blocks(row, Kp, q + m * Kp, d + m * (Kp / 32))) {
        int64_t seen = bad_row.load();
        while (m < seen && !bad_row.compare_exchange_weak(seen, m)) {}
      }
      group_sums(row, x.K, group_len, kUnitWeights, xsum + m * G);
    }
  });
  return bad_row.load() < x.M ? bad_row.load() : -1;
}

// Rows per block of converted fp16 scales: ~32 KiB of fp32 scale and zero,
// a multiple of the AVX-512 kernel's 4-row tiles.
int64_t scale_block_rows(int64_t G) { return max64(4, 4096 / G / 4 * 4); }

}  // namespace

tacq_status mixed_gemv(const tacq_weights& w, const Activations& x, float* y, int num_threads,
                       bool row_ptr_checked) {
  const char* fn = "tacq_mixed_gemv";
  Shape shape{};
  TACQ_TRY(check_weights(fn, w, row_ptr_checked ? Residual::kPointers : Residual::kContent, &shape));
  TACQ_TRY(check_threads(fn, num_threads));
  if (x.M < 1 || x.M > kMixedGemvMaxRows)
    return fail(TACQ_ERROR_BAD_SIZE, "%s: x must have 1 to %lld rows (M), got %lld", fn,
                static_cast<long long>(kMixedGemvMaxRows), static_cast<long long>(x.M));
  if (x.K != w.K)
    return fail(TACQ_ERROR_BAD_SIZE, "%s: x has K = %lld columns but the weights have K = %lld", fn,
                static_cast<long long>(x.K), static_cast<long long>(w.K));
  if (x.dtype != TACQ_DTYPE_F32 && x.dtype != TACQ_DTYPE_F16 && x.dtype != TACQ_DTYPE_BF16)
    return fail(TACQ_ERROR_BAD_DTYPE, "%s: x dtype must be F32, F16 or BF16, got %d", fn, static_cast<int>(x.dtype));
  if (x.data == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "%s: x must not be NULL", fn);
  if (w.N == 0) return TACQ_OK;
  if (y == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "%s: y must not be NULL", fn);

  const int64_t M = x.M, K = w.K, N = w.N, G = shape.G, bits = w.bits;
  const int64_t Kp = padded(K);
  const CpuIsa isa = cpu_isa();  // one read of TACQ_CPU_ISA (a getenv, ~5 % of a tiny layer's call)
  const cpu::GemvKernel kernel = gemv_kernel_for(isa, x.dtype, x.int8);
  // x staged in the kernel's order: Kc values a row, lane_bits wide (lane
  // kernels) or int8 with 8 scales a chunk (int8 kernels).
  int64_t Kc = 0, lane_bytes = 0, lane_scales_per_row = 0;
  if (kernel.lane_bits != 0) {
    Kc = cpu::LaneOrder{static_cast<int>(bits), kernel.lane_bits}.staged_length(Kp);
    lane_bytes = kernel.lane_bits / 8;
  } else if (kernel.int8_lanes) {
    const cpu::Int8Order order{static_cast<int>(bits)};
    Kc = order.staged_length(Kp);
    lane_bytes = 1;
    lane_scales_per_row = Kc / order.chunk_codes() * 8;
  }
  // fp16 scales: the lane and int8 kernels read them as stored. The other kernels
  // read fp32, converted inside each thread one block of rows at a time into
  // a buffer that stays in cache: converting all N*G of them up front costs a
  // pass over memory per call (measured on Zen 4, 1 thread, 2-bit 14336 x 4096
  // with groups of 64: 6.0 -> about 2 ms, as with fp32 scales), and even
  // block by block the conversion stalls on memory that reading the fp16
  // values inside the kernel overlaps with the codes (2 threads: 0.90 -> 0.80 ms).
  const bool f16_scales = w.scale_dtype == TACQ_DTYPE_F16;
  const bool convert_scales = f16_scales && kernel.lane_bits == 0 && !kernel.int8_lanes;
  const int64_t block_rows = convert_scales ? scale_block_rows(G) : N;
  const int64_t row_bytes = Kp / 32 * bits * 4;
  // At least ~16 KiB of packed codes per thread: the fork costs about a
  // microsecond, and small rows cost more than their bytes (a 192-code row
  // ~22 ns at 2 bits, ~43 at 3 on Zen 4). Measured on the demo model's layers
  // (2 threads, interleaved processes): a layer's four GEMV shapes 73 -> 64 us
  // at 2 bits and 91 -> 75-82 us at 3 against 64 KiB, for nn.Linear's ~81.
  const int threads = plan_threads(N, max64(1, (16 << 10) / row_bytes), num_threads);

  const auto floats = [](int64_t n) { return static_cast<size_t>(n) * sizeof(float); };
  Scratch scratch;
  const size_t xs_at = scratch.add(floats(M * Kp)), xsum_at = scratch.add(floats(M * G));
  const size_t q_at = scratch.add(x.int8 ? static_cast<size_t>(M * Kp) : 0);
  const size_t d_at = scratch.add(x.int8 ? floats(M * (Kp / 32)) : 0);
  const size_t lanes_at = scratch.add(static_cast<size_t>(M * Kc * lane_bytes));
  const size_t lane_xsum_at = scratch.add(kernel.lane_bits != 0 ? floats(M * G) : 0);
  const size_t lane_scales_at = scratch.add(floats(M * lane_scales_per_row));
  const size_t scale_blocks_at = scratch.add(convert_scales ? floats(threads * block_rows * 2 * G) : 0);
  if (!scratch.acquire()) return fail(TACQ_ERROR_OUT_OF_MEMORY, "%s: out of memory for staging x", fn);
  float* xs = scratch.at<float>(xs_at);
  float* xsum = scratch.at<float>(xsum_at);
  const int64_t bad_row = stage_activations(x, Kp, shape.group_len, xs, xsum, scratch.at<int8_t>(q_at),
                                            scratch.at<float>(d_at), num_threads);
  if (bad_row >= 0)
    return fail(TACQ_ERROR_BAD_VALUE, "%s: x row %lld contains NaN or infinity (int8 activations need finite x)",
                fn, static_cast<long long>(bad_row));

  const float* lane_xsum = xsum;
  bool in_place = false;
  if (kernel.lane_bits != 0) {
    in_place = codes_in_place(static_cast<int>(bits), kernel.lane_bits, M, Kp, xs);
    float step_weights[8];  // the staged x's scale by k % 8 (a lane's 8 codes)
    for (int i = 0; i < 8; ++i) step_weights[i] = static_cast<float>(1 << cpu::InPlaceCodes::x_exponent(i));
    auto* lanes = scratch.at<char>(lanes_at);
    float* in_place_xsum = scratch.at<float>(lane_xsum_at);
    parallel_for(0, M, 1, num_threads, [&](int64_t b, int64_t e, int) {
      for (int64_t m = b; m < e; ++m) {
        kernel.stage_lanes(xs + m * Kp, Kp, static_cast<int>(bits), Kc, in_place, lanes + m * Kc * lane_bytes);
        if (in_place) group_sums(xs + m * Kp, K, shape.group_len, step_weights, in_place_xsum + m * G);
      }
    });
    if (in_place) lane_xsum = in_place_xsum;
  } else if (kernel.int8_lanes) {
    for (int64_t m = 0; m < M; ++m)
      cpu::stage_int8_lanes(scratch.at<int8_t>(q_at) + m * Kp, scratch.at<float>(d_at) + m * (Kp / 32), Kp,
                            static_cast<int>(bits), Kc, scratch.at<int8_t>(lanes_at) + m * Kc,
                            scratch.at<float>(lane_scales_at) + m * lane_scales_per_row);
  }
  const cpu::HalvesToFloatsFn convert = halves_kernel_for(isa);
  const auto* scale_f16 = static_cast<const uint16_t*>(w.scale);
  const auto* zero_f16 = static_cast<const uint16_t*>(w.zero);
  cpu::GemvProblem problem{reinterpret_cast<const uint32_t*>(w.packed), nullptr, nullptr, nullptr, nullptr,
                           xs, xsum, lane_xsum, scratch.at<void>(lanes_at), scratch.at<float>(lane_scales_at),
                           w.row_ptr, w.col_idx, w.values, M, N, K, Kp, Kc, shape.group_len,
                           static_cast<int>(bits), y, in_place};
  if (!f16_scales) {
    problem.scale = static_cast<const float*>(w.scale);
    problem.zero = static_cast<const float*>(w.zero);
  } else if (!convert_scales) {
    problem.scale_f16 = scale_f16;
    problem.zero_f16 = zero_f16;
  }
  std::atomic<bool> residual_ok{true};
  parallel_for(0, N, threads, [&](int64_t b, int64_t e, int tid) {
    if (!convert_scales) {
      if (!kernel.rows(problem, b, e)) residual_ok = false;
      return;
    }
    float* converted = scratch.at<float>(scale_blocks_at) + tid * block_rows * 2 * G;
    for (int64_t first = b; first < e; first += block_rows) {
      const int64_t rows = e - first < block_rows ? e - first : block_rows;
      convert(scale_f16 + first * G, converted, rows * G);
      convert(zero_f16 + first * G, converted + rows * G, rows * G);
      if (!kernel.rows(cpu::rows_from(problem, first, converted, converted + rows * G), 0, rows))
        residual_ok = false;
    }
  });
  // The kernels check residual columns as they read them; the full check
  // names the offending entry.
  if (!residual_ok) {
    TACQ_TRY(check_columns(fn, w));
    return fail(TACQ_ERROR_INTERNAL, "%s: a kernel rejected residual columns that pass the column check", fn);
  }
  return TACQ_OK;
}

}  // namespace tacq::host
