// Torch-free CPU kernel of tacq.quantize: uniform asymmetric quantization
// with the 80-step clipping search (docs/method.md, conventions in
// python/tacq_ext/reference.py). Compiled once per ISA (quantize_*.cpp).
#pragma once

#include <cstdint>

namespace tacq::cpu {

struct QuantizeProblem {
  const float* w;        // [N, K] row-major
  const bool* keep;      // [N, K] row-major, or nullptr (nothing kept)
  int64_t K;             // row length
  int64_t group_len;     // K for whole rows, else the group size (divides K)
  int bits;              // 2, 3 or 4
  uint8_t* codes;        // [N, K] out
  float* scale;          // [N, K/group_len] out
  float* zero;           // [N, K/group_len] out
};

// Quantizes groups [begin, end) of the flattened (row, group) index n*G + g,
// using scratch[0 .. group_len). One variant per ISA, chosen by the caller
// with tacq::cpu_isa().
using QuantizeGroupsFn = void (*)(const QuantizeProblem& p, int64_t begin, int64_t end,
                                  float* scratch);
namespace generic { void quantize_groups(const QuantizeProblem&, int64_t, int64_t, float*); }
namespace avx2 { void quantize_groups(const QuantizeProblem&, int64_t, int64_t, float*); }
namespace avx512 { void quantize_groups(const QuantizeProblem&, int64_t, int64_t, float*); }

}  // namespace tacq::cpu
