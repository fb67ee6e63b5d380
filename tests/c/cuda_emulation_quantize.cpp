// The CUDA quantize kernel (csrc/kernels/cuda/quantize_kernel.cuh) run on the
// CPU through cuda_host_shim.h, with CUB's BlockReduce replaced by
// emulated/cub/block/block_reduce.cuh, against a reference written here from
// the quantizer's definition (docs/method.md, python/tacq_ext/reference.py):
// per (row, group), kept weights take the mean of the free ones (fp64, clamped
// to their range), the range [lo, hi] contains 0 ([-1, 1] when empty), and of
// the 80 factors f_i = 1 - i/100 (scale = f (hi - lo) / maxq, zero =
// round(-f lo / scale)) the first with the least sum |(scale (q - zero) - v) /
// (hi - lo)|^2.4 wins; kept weights get the code `zero`. The errors are summed
// in fp64 here and in fp32 by the kernel, so its choice is accepted when its
// error is within 1e-5 of the least; scale, zero and every code must then be
// exactly the reference's for that factor. Covers 2, 3 and 4 bits; fp32, fp16
// and bf16 weights; 128- and 256-thread blocks; groups staged in shared memory
// and groups too long for it; keep masks, a group wholly kept and an all-zero
// group; fewer blocks than groups (shared state reused across groups).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_host_shim.h"
#include "emulation_values.h"
#include "quantize_kernel.cuh"

namespace tacq::cuda::quant {
// the kernel's `extern __shared__` memory: BlockShared, then the longest staged group
alignas(16) unsigned char quantize_smem[kBlockSharedBytes<256> + kMaxStagedLen * sizeof(float)];
}  // namespace tacq::cuda::quant

namespace {

namespace qk = tacq::cuda::quant;
using emulation::as_float;
using emulation::rounded;
using emulation::type_name;

int g_failures = 0, g_cases = 0;

// One factor's quantizer of a group, and its error in fp64.
struct Candidate {
  float scale, zero;
  double error;
};

// The reference's view of one group: v (kept weights filled), lo, hi.
struct GroupView {
  std::vector<float> v;
  float lo, hi;
};

GroupView group_view(const float* w, const bool* keep, int64_t len) {
  double sum = 0;
  int64_t free = 0;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < len; ++k)
    if (!keep[k]) {
      sum += w[k];
      ++free;
      lo = std::fmin(lo, w[k]);
      hi = std::fmax(hi, w[k]);
    }
  const float fill = free ? std::fmin(std::fmax(static_cast<float>(sum / free), lo), hi) : 0.f;
  GroupView g{std::vector<float>(w, w + len), 0.f, 0.f};
  for (int64_t k = 0; k < len; ++k) {
    if (keep[k]) g.v[k] = fill;
    g.lo = std::fmin(g.lo, g.v[k]);
    g.hi = std::fmax(g.hi, g.v[k]);
  }
  if (!(g.hi - g.lo >= 1.1754944e-38f)) g.lo = -1.f, g.hi = 1.f;
  return g;
}

Candidate candidate(const GroupView& g, int i, int bits) {
  const float maxq = static_cast<float>((1 << bits) - 1), span = g.hi - g.lo;
  const float f = static_cast<float>(1.0 - i / 100.0);
  Candidate c{(f * span) / maxq, 0.f, 0.0};
  c.zero = std::nearbyint((-f * g.lo) / c.scale);
  for (float x : g.v) {
    const float q = std::fmin(std::fmax(std::nearbyint(x / c.scale) + c.zero, 0.f), maxq);
    c.error += std::pow(std::fabs(static_cast<double>((c.scale * (q - c.zero) - x) / span)), 2.4);
  }
  return c;
}

struct Shape {
  int64_t N, K, len;  // len = group length (K: whole rows)
  int keep_every;     // 0: no mask; else every keep_every-th weight kept (1: all)
  bool zero_row;      // row 0 all zeros
  unsigned grid;      // blocks (fewer than groups: the grid-stride loop)
};

template <typename T, int kBits, int kThreads>
void run_case(const Shape& c, std::mt19937& rng) {
  const int64_t N = c.N, K = c.K, len = c.len, G = K / len;
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::vector<T> w(N * K);
  std::vector<float> wf(N * K);  // w as the kernel reads it
  for (int64_t i = 0; i < N * K; ++i) {
    w[i] = rounded<T>(c.zero_row && i < K ? 0.f : normal(rng) + (i % 97 == 5 ? 0.3f : 0.f));  // some outliers
    wf[i] = as_float(w[i]);
  }
  std::vector<uint8_t> keep_bytes(N * K, 0);  // bool storage
  for (int64_t i = 0; c.keep_every && i < N * K; ++i) keep_bytes[i] = (i * 7919 % c.keep_every) == 0;
  const bool* keep = c.keep_every ? reinterpret_cast<const bool*>(keep_bytes.data()) : nullptr;

  std::vector<uint8_t> codes(N * K, 0xEE);
  std::vector<float> scale(N * G, NAN), zero(N * G, NAN);
  const bool staged = len <= qk::kMaxStagedLen;
  const size_t smem = qk::dynamic_smem_bytes<kThreads>(len);
  cuda_host::run_grid(
      cuda_host::block_runner<kThreads>(), c.grid,
      [&] {
        qk::quantize_kernel<T, kBits, kThreads>(w.data(), keep, N * G, K, len, staged, codes.data(), scale.data(),
                                                zero.data());
      },
      [&] { std::memset(qk::quantize_smem, 0xFF, smem); });  // NaN in every float slot the block may use

  ++g_cases;
  for (int64_t idx = 0; idx < N * G; ++idx) {
    const int64_t offset = idx / G * K + idx % G * len;
    std::vector<uint8_t> kept(len);
    for (int64_t k = 0; k < len; ++k) kept[k] = keep ? keep[offset + k] : 0;
    const GroupView g = group_view(wf.data() + offset, reinterpret_cast<const bool*>(kept.data()), len);
    double least = INFINITY;
    std::vector<Candidate> all;
    for (int i = 0; i < tacq::kShrinkSteps; ++i) {
      all.push_back(candidate(g, i, kBits));
      least = std::fmin(least, all.back().error);
    }
    int chosen = -1;  // the kernel's factor: the one whose scale and zero it wrote
    for (int i = 0; i < tacq::kShrinkSteps && chosen < 0; ++i)
      if (all[i].scale == scale[idx] && all[i].zero == zero[idx]) chosen = i;
    const char* wrong = nullptr;
    if (chosen < 0) wrong = "scale and zero of no factor";
    else if (!(all[chosen].error <= least * (1 + 1e-5) + 1e-12)) wrong = "a factor with more than the least error";
    for (int64_t k = 0; !wrong && k < len; ++k) {
      const Candidate& q = all[chosen];
      const float maxq = static_cast<float>((1 << kBits) - 1);
      const float want = kept[k] ? q.zero : std::fmin(std::fmax(std::nearbyint(g.v[k] / q.scale) + q.zero, 0.f), maxq);
      if (codes[offset + k] != static_cast<uint8_t>(want)) wrong = "a wrong code";
    }
    if (wrong) {
      ++g_failures;
      std::fprintf(stderr, "w %s bits %d threads %d N %ld K %ld group %ld keep 1/%d grid %u: group %ld: %s "
                   "(scale %g zero %g)\n", type_name<T>(), kBits, kThreads, static_cast<long>(N), static_cast<long>(K),
                   static_cast<long>(len), c.keep_every, c.grid, static_cast<long>(idx), wrong, scale[idx], zero[idx]);
      return;
    }
  }
}

template <typename T, int kBits>
void run_shape(const Shape& c, std::mt19937& rng) {  // the launcher's block size for the group length
  if (c.len <= qk::kSmallGroup) run_case<T, kBits, 128>(c, rng);
  else run_case<T, kBits, 256>(c, rng);
}

template <int kBits>
void run_bits(const std::vector<Shape>& shapes, std::mt19937& rng) {
  for (const Shape& c : shapes) {
    run_shape<float, kBits>(c, rng);
    run_shape<__half, kBits>(c, rng);
    run_shape<__nv_bfloat16, kBits>(c, rng);
  }
}

}  // namespace

int main() {
  // {N, K, len, keep_every, zero_row, grid}
  const std::vector<Shape> shapes = {
      {3, 200, 200, 0, false, 3},     // whole rows shorter than a block, no mask
      {4, 256, 64, 5, true, 3},       // groups of 64, a mask, an all-zero group, fewer blocks than groups
      {2, 96, 32, 1, false, 2},       // every weight kept: fill 0, range [-1, 1]
      {1, 1500, 1500, 37, false, 1},  // 256-thread block, elements past the block size
      {1, 8300, 8300, 11, false, 1},  // longer than kMaxStagedLen: read from global memory each pass
      {2, 1, 1, 0, false, 1},         // K = 1
  };
  std::mt19937 rng(20261209);
  run_bits<2>(shapes, rng);
  run_bits<3>(shapes, rng);
  run_bits<4>(shapes, rng);
  std::printf("cuda_emulation_quantize: %d cases, %d failed\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}
