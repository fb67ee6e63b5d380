// The CUDA pack and unpack kernels (csrc/kernels/cuda/pack_kernel.cuh) run on
// the CPU through cuda_host_shim.h, against the bit layout of docs/format.md
// written out bit by bit here: code i of a row is bits [bits*i, bits*i + bits)
// of the row's little-endian stream of uint32 words, rows padded with zero
// codes to whole 32-code blocks. Covers 2, 3 and 4 bits; K below, at and past
// a block; one block for the whole grid (the grid-stride loop) and the
// launcher's grid; every packed word written, padding bits ignored by unpack,
// nothing written past the output.
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_host_shim.h"
#include "pack_kernel.cuh"

namespace {

namespace pk = tacq::cuda::packing;

int g_failures = 0, g_cases = 0;

int64_t words_per_row(int64_t K, int bits) { return (K + 31) / 32 * bits; }

// The stream of each row, bit by bit.
std::vector<uint32_t> reference_pack(const std::vector<uint8_t>& codes, int64_t N, int64_t K, int bits) {
  const int64_t words = words_per_row(K, bits);
  std::vector<uint32_t> packed(N * words, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < K; ++i)
      for (int b = 0; b < bits; ++b)
        if (codes[n * K + i] >> b & 1) {
          const int64_t bit = i * bits + b;
          packed[n * words + bit / 32] |= 1u << (bit % 32);
        }
  return packed;
}

void report(const char* what, int bits, int64_t N, int64_t K, unsigned grid, int64_t at) {
  ++g_failures;
  std::fprintf(stderr, "%s: bits %d N %ld K %ld grid %u: first wrong element %ld\n", what, bits,
               static_cast<long>(N), static_cast<long>(K), grid, static_cast<long>(at));
}

template <int BITS>
void run_case(int64_t N, int64_t K, unsigned grid, std::mt19937& rng) {
  std::uniform_int_distribution<int> code(0, (1 << BITS) - 1);
  std::vector<uint8_t> codes(N * K);
  for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
  const std::vector<uint32_t> want = reference_pack(codes, N, K, BITS);
  const int64_t words = static_cast<int64_t>(want.size());

  // pack: every word written (a sentinel where the kernel skipped one), none past the end
  constexpr uint32_t kSentinel = 0xDEADBEEFu;
  std::vector<uint32_t> packed(words + 8, kSentinel);
  auto& threads = cuda_host::block_runner<pk::kThreads>();
  cuda_host::run_grid(threads, grid, [&] { pk::pack_kernel<BITS>(codes.data(), N, K, packed.data()); });
  ++g_cases;
  for (int64_t i = 0; i < words + 8; ++i)
    if (packed[i] != (i < words ? want[i] : kSentinel)) {
      report("pack", BITS, N, K, grid, i);
      break;
    }

  // unpack: garbage in the padding bits of each row's last block is ignored
  std::vector<uint32_t> noisy = want;
  const int64_t row_words = words_per_row(K, BITS);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t bit = K * BITS; bit < row_words * 32; ++bit)
      if (rng() & 1) noisy[n * row_words + bit / 32] |= 1u << (bit % 32);
  constexpr uint8_t kByteSentinel = 0xA5;
  std::vector<uint8_t> got(N * K + 8, kByteSentinel);
  cuda_host::run_grid(threads, grid, [&] { pk::unpack_kernel<BITS>(noisy.data(), N, K, got.data()); });
  ++g_cases;
  for (int64_t i = 0; i < N * K + 8; ++i)
    if (got[i] != (i < N * K ? codes[i] : kByteSentinel)) {
      report("unpack", BITS, N, K, grid, i);
      break;
    }
}

template <int BITS>
void run_bits(std::mt19937& rng) {
  // {N, K}: K = 1, below / at / just past one block, 3-bit codes straddling words, long rows
  const int64_t shapes[][2] = {{1, 1}, {3, 31}, {2, 32}, {5, 33}, {7, 100}, {4, 1000}, {300, 64}};
  for (const auto& s : shapes) {
    const int64_t N = s[0], K = s[1], threads = N * ((K + 31) / 32);
    run_case<BITS>(N, K, 1, rng);  // one block strides over everything
    run_case<BITS>(N, K, static_cast<unsigned>((threads + pk::kThreads - 1) / pk::kThreads), rng);  // one thread each
  }
}

}  // namespace

int main() {
  std::mt19937 rng(20261207);
  run_bits<2>(rng);
  run_bits<3>(rng);
  run_bits<4>(rng);
  std::printf("cuda_emulation_pack: %d cases, %d failed\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}
