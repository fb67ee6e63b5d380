// The fused CUDA mixed_gemv kernel (csrc/kernels/cuda/mixed_gemv_kernel.cuh)
// run on the CPU through cuda_host_shim.h, against a float64 reference
// written from docs/format.md: y[m, n] = sum_k x[m, k] (scale[n, g] (q[n, k] -
// zero[n, g]) + R[n, k]). No GPU and no CUDA compiler: CUDA's headers only.
// What it reaches that a host test can: the index arithmetic, the staged x
// tile and its barriers, K tiling (a small shared-memory budget forces
// several tiles), the grid-stride loop (fewer blocks than row tiles), the
// scalar fallbacks of misaligned x and packed rows, the code decoding (3-bit
// codes across words), groups, and the CSR walk (empty rows, a full row,
// garbage entries). Shared memory starts as NaN each block, so a read of an
// unstaged slot shows. What it cannot: timing, PTX (the LOP3 is plain C++
// here), and the memory model of a real GPU.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda_host_shim.h"
#include "emulation_values.h"
#include "mixed_gemv_kernel.cuh"

namespace tacq::cuda::fused_gemv {
alignas(16) uint4 smem[kSmemBudget / sizeof(uint4)];  // the kernel's `extern __shared__`
}

namespace {

using tacq::cuda::DType;
using tacq::cuda::GemvProblem;
using tacq::cuda::from_float;  // the kernels' conversions (float_types.cuh), host-callable here
using tacq::cuda::to_float;
namespace fg = tacq::cuda::fused_gemv;

int g_failures = 0, g_cases = 0;

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  else if constexpr (std::is_same_v<T, __half>) return DType::kFloat16;
  else return DType::kBFloat16;
}
template <typename T>
constexpr double half_ulp() {  // relative rounding of y to T
  if constexpr (std::is_same_v<T, float>) return 0x1p-24;
  else if constexpr (std::is_same_v<T, __half>) return 0x1p-11;
  else return 0x1p-8;
}

struct Shape {
  int64_t M, N, K, group_len;  // group_len = K: one group per row
  int optin_smem;              // the device's opt-in limit: small ones force several K tiles
  unsigned grid;               // blocks; fewer than the row tiles exercises the grid-stride loop
  bool misaligned;             // x and packed one element past 16-byte alignment
  bool garbage_csr;            // out-of-range columns, which the kernel must skip
};

template <int BITS, typename T, typename S, int MT>
void run_case(const Shape& c, std::mt19937& rng) {
  const int64_t M = c.M, N = c.N, K = c.K, G = K / c.group_len;
  const int64_t words = tacq::packed_words_per_row(K, BITS);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::uniform_int_distribution<int> code(0, (1 << BITS) - 1);

  // x [M, K] in T (with one element in front when misaligned)
  std::vector<T> x_store(M * K + 8);
  T* x = x_store.data() + (c.misaligned ? 1 : 0);
  for (int64_t i = 0; i < M * K; ++i) x[i] = from_float<T>(uniform(rng));

  // codes, packed row by row (zero-padded to whole 32-code blocks)
  std::vector<uint8_t> q(N * K);
  for (auto& v : q) v = static_cast<uint8_t>(code(rng));
  std::vector<uint32_t> packed_store(N * words + 4);
  uint32_t* packed = packed_store.data() + (c.misaligned ? 1 : 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b * 32 < K; ++b) {
      uint8_t block[32] = {};
      for (int i = 0; i < 32 && b * 32 + i < K; ++i) block[i] = q[n * K + b * 32 + i];
      tacq::pack_block(block, BITS, packed + n * words + b * BITS);
    }

  std::vector<S> scale(N * G), zero(N * G);
  for (auto& v : scale) v = from_float<S>(0.01f + 0.05f * (uniform(rng) + 1.f));
  for (auto& v : zero) v = from_float<S>(static_cast<float>(code(rng)) + 0.25f * uniform(rng));

  // CSR residual: row n has n % 4 entries, one row every column, and with
  // garbage_csr a few columns outside [0, K) that must add nothing
  std::vector<int32_t> row_ptr{0}, col_idx;
  std::vector<__half> values;
  std::uniform_int_distribution<int64_t> column(0, K - 1);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t entries = n == 1 ? K : n % 4;
    for (int64_t e = 0; e < entries; ++e) {
      col_idx.push_back(static_cast<int32_t>(n == 1 ? e : column(rng)));
      values.push_back(__float2half_rn(uniform(rng)));
    }
    if (c.garbage_csr && n % 3 == 0) {
      col_idx.push_back(n % 2 ? -7 : static_cast<int32_t>(K + 5));
      values.push_back(__float2half_rn(100.f));
    }
    row_ptr.push_back(static_cast<int32_t>(col_idx.size()));
  }

  std::vector<T> y(M * N, from_float<T>(NAN));
  GemvProblem pr{};
  pr.x = x;
  pr.x_dtype = dtype_of<T>();
  pr.M = M;
  pr.N = N;
  pr.K = K;
  pr.packed = packed;
  pr.bits = BITS;
  pr.scale = scale.data();
  pr.zero = zero.data();
  pr.scale_dtype = dtype_of<S>();
  pr.G = G;
  pr.group_len = c.group_len;
  pr.row_ptr = row_ptr.data();
  pr.col_idx = col_idx.data();
  pr.values = values.data();
  pr.nnz = static_cast<int64_t>(col_idx.size());
  pr.y = y.data();

  const fg::KTiling tiling = fg::k_tiling<BITS, T, MT>(K, c.optin_smem);
  const fg::Params<T, S> params = fg::make_params<BITS, T, S>(pr, tiling);
  cuda_host::run_grid(
      cuda_host::block_runner<fg::kThreads>(), c.grid, [&] { fg::mixed_gemv_kernel<BITS, T, S, MT>(params); },
      [] { std::memset(fg::smem, 0xFF, sizeof fg::smem); });  // NaN in every float slot

  ++g_cases;
  int wrong = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double want = 0, bound = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t g = k / c.group_len;
        const double w = double(to_float(scale[n * G + g])) * (q[n * K + k] - double(to_float(zero[n * G + g])));
        want += double(to_float(x[m * K + k])) * w;
        bound += std::fabs(double(to_float(x[m * K + k])) * w);
      }
      for (int32_t e = row_ptr[n]; e < row_ptr[n + 1]; ++e) {
        if (col_idx[e] < 0 || col_idx[e] >= K) continue;
        const double term = double(to_float(x[m * K + col_idx[e]])) * double(__half2float(values[e]));
        want += term;
        bound += std::fabs(term);
      }
      const double got = to_float(y[m * N + n]);
      const double tol = 2 * half_ulp<T>() * std::fabs(want) + 1e-5 * bound + 1e-6;
      if (!(std::fabs(got - want) <= tol) && wrong++ < 3)
        std::fprintf(stderr, "bits %d x %s scale %s MT %d, M %ld N %ld K %ld group %ld tiles %d grid %u%s%s: "
                     "y[%ld, %ld] = %.7g, want %.7g (tolerance %.3g)\n",
                     BITS, emulation::type_name<T>(), emulation::type_name<S>(), MT, static_cast<long>(M), static_cast<long>(N),
                     static_cast<long>(K), static_cast<long>(c.group_len), tiling.num_ktiles, c.grid,
                     c.misaligned ? " misaligned" : "", c.garbage_csr ? " garbage CSR" : "", static_cast<long>(m),
                     static_cast<long>(n), got, want, tol);
    }
  if (wrong) ++g_failures;
}

template <int BITS, typename T, typename S>
void run_rows(const Shape& c, std::mt19937& rng) {  // the launcher's choice of MT for M rows
  if (c.M == 1) run_case<BITS, T, S, 1>(c, rng);
  else if (c.M == 2) run_case<BITS, T, S, 2>(c, rng);
  else if (c.M <= 4) run_case<BITS, T, S, 4>(c, rng);
  else if (c.M <= 8) run_case<BITS, T, S, 8>(c, rng);
  else run_case<BITS, T, S, 16>(c, rng);
}

template <int BITS>
void run_bits(const std::vector<Shape>& shapes, std::mt19937& rng) {
  for (const Shape& c : shapes) {
    run_rows<BITS, __half, float>(c, rng);
    run_rows<BITS, __nv_bfloat16, __half>(c, rng);
    run_rows<BITS, float, float>(c, rng);
    run_rows<BITS, float, __half>(c, rng);
  }
}

}  // namespace

int main() {
  // {M, N, K, group_len, optin_smem, grid, misaligned, garbage_csr}
  const std::vector<Shape> shapes = {
      {1, 37, 1000, 1000, 227 * 1024, 3, false, false},  // per row, K not a multiple of 32, 3 row tiles
      {2, 17, 256, 64, 227 * 1024, 1, false, true},      // groups of 64, one block for 2 row tiles
      {3, 5, 33, 33, 227 * 1024, 1, true, false},        // K just past a block, misaligned (scalar loads)
      {5, 33, 960, 96, 227 * 1024, 2, false, false},     // groups of 96 (not a power of two: division)
      {16, 16, 3000, 3000, 9 * 1024, 1, false, true},    // 16 rows, several K tiles of a small budget
      {9, 20, 4096, 128, 40 * 1024, 2, true, false},     // groups of 128, several K tiles, misaligned
      {1, 3, 1, 1, 227 * 1024, 1, false, false},         // K = 1
  };
  std::mt19937 rng(20261206);
  run_bits<2>(shapes, rng);
  run_bits<3>(shapes, rng);
  run_bits<4>(shapes, rng);
  std::printf("cuda_emulation_mixed_gemv: %d cases, %d failed\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}
