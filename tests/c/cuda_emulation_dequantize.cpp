// The CUDA dequantize kernel (csrc/kernels/cuda/dequantize_kernel.cuh) run on
// the CPU through cuda_host_shim.h, against the format's definition
// out[n, k] = scale[n, g] * (code[n, k] - zero[n, g]), g = k / group_len, in fp32
// and rounded to the output type by CUDA's own conversions: bitwise equal.
// Covers 2, 3 and 4 bits; fp32 and fp16 scales; fp32, fp16 and bf16 outputs;
// whole rows and groups of 32, 64 and 96; K not a multiple of 32; the 16-byte
// stores and the element stores (a misaligned output); one block for the whole
// grid; nothing written past the output.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_host_shim.h"
#include "dequantize_kernel.cuh"
#include "emulation_values.h"

namespace {

namespace dq = tacq::cuda::dequant;
using emulation::as_float;
using emulation::rounded;
using emulation::type_name;

int g_failures = 0, g_cases = 0;

struct Shape {
  int64_t N, K, group_len;  // group_len = K: one group per row
  bool misaligned;          // out one element past 16-byte alignment: element stores
  unsigned grid;            // 0: one thread per 32-code block, as the launcher
};

template <int BITS, typename S, typename O>
void run_case(const Shape& c, std::mt19937& rng) {
  const int64_t N = c.N, K = c.K, G = K / c.group_len, row_words = (K + 31) / 32 * BITS;
  std::uniform_int_distribution<int> code(0, (1 << BITS) - 1);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::vector<uint8_t> q(N * K);
  for (auto& v : q) v = static_cast<uint8_t>(code(rng));
  std::vector<uint32_t> packed(N * row_words, 0);  // the format's bit stream, written bit by bit
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int b = 0; b < BITS; ++b)
        if (q[n * K + k] >> b & 1) packed[n * row_words + (k * BITS + b) / 32] |= 1u << ((k * BITS + b) % 32);
  std::vector<S> scale(N * G), zero(N * G);
  for (auto& v : scale) v = rounded<S>(0.02f * (uniform(rng) + 1.5f));
  for (auto& v : zero) v = rounded<S>(static_cast<float>(code(rng)) + 0.3f * uniform(rng));

  // out in 16-byte-aligned storage, with a sentinel (all-ones bytes) in a whole
  // block of 32 elements past it, where a block stored whole past K would land
  std::vector<uint4> storage((N * K + 64) * sizeof(O) / sizeof(uint4));
  std::memset(storage.data(), 0xFF, storage.size() * sizeof(uint4));
  O* out = reinterpret_cast<O*>(storage.data()) + (c.misaligned ? 1 : 0);
  const bool vector_store = dq::vector_stores(out, K);  // the launcher's choice
  const int64_t threads = N * ((K + 31) / 32);
  const unsigned grid = c.grid ? c.grid : static_cast<unsigned>((threads + dq::kThreads - 1) / dq::kThreads);
  cuda_host::run_grid(cuda_host::block_runner<dq::kThreads>(), grid, [&] {
    dq::dequantize_kernel<BITS, S, O>(packed.data(), scale.data(), zero.data(), N, K, G, c.group_len,
                                      vector_store, out);
  });

  ++g_cases;
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(storage.data());
  const int64_t first = (c.misaligned ? 1 : 0) * sizeof(O), last = first + N * K * sizeof(O);
  for (int64_t i = 0; i < static_cast<int64_t>(storage.size() * sizeof(uint4)); ++i)
    if ((i < first || i >= last) && bytes[i] != 0xFF) {
      ++g_failures;
      std::fprintf(stderr, "bits %d scale %s out %s N %ld K %ld: byte %ld outside out written\n", BITS,
                   type_name<S>(), type_name<O>(), static_cast<long>(N), static_cast<long>(K), static_cast<long>(i - first));
      return;
    }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t g = n * G + k / c.group_len;
      const O want = rounded<O>(as_float(scale[g]) * (static_cast<float>(q[n * K + k]) - as_float(zero[g])));
      if (std::memcmp(&want, out + n * K + k, sizeof(O)) != 0) {
        ++g_failures;
        std::fprintf(stderr, "bits %d scale %s out %s N %ld K %ld group %ld grid %u%s: out[%ld, %ld] = %g, want %g\n",
                     BITS, type_name<S>(), type_name<O>(), static_cast<long>(N), static_cast<long>(K),
                     static_cast<long>(c.group_len), grid, vector_store ? "" : " element stores",
                     static_cast<long>(n), static_cast<long>(k), as_float(out[n * K + k]), as_float(want));
        return;
      }
    }
}

template <int BITS, typename S>
void run_outputs(const Shape& c, std::mt19937& rng) {
  run_case<BITS, S, float>(c, rng);
  run_case<BITS, S, __half>(c, rng);
  run_case<BITS, S, __nv_bfloat16>(c, rng);
}

template <int BITS>
void run_bits(const std::vector<Shape>& shapes, std::mt19937& rng) {
  for (const Shape& c : shapes) {
    run_outputs<BITS, float>(c, rng);
    run_outputs<BITS, __half>(c, rng);
  }
}

}  // namespace

int main() {
  // {N, K, group_len, misaligned, grid}
  const std::vector<Shape> shapes = {
      {3, 100, 100, false, 0},  // per row, K not a multiple of 32 (element stores for the last block)
      {4, 256, 64, false, 0},   // groups of 64, 16-byte stores
      {2, 192, 96, true, 0},    // groups of 96, misaligned out: element stores throughout
      {5, 96, 32, false, 1},    // groups of 32, one block strides over all
      {1, 1, 1, false, 0},      // K = 1
      {70, 128, 128, false, 1}, // 280 blocks of 32 codes for one block of 256 threads
  };
  std::mt19937 rng(20261208);
  run_bits<2>(shapes, rng);
  run_bits<3>(shapes, rng);
  run_bits<4>(shapes, rng);
  std::printf("cuda_emulation_dequantize: %d cases, %d failed\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}
