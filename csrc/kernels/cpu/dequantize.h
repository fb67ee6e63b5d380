// Torch-free CPU kernel of tacq.dequantize: packed codes (tacq/packing.h
// layout) -> fp32 weights scale * (code - zero). Compiled once per ISA
// (dequantize_*.cpp); the caller picks one with tacq::cpu_isa().
#pragma once

#include <cstdint>

namespace tacq::cpu {

struct DequantizeProblem {
  const uint32_t* packed;  // [N, ceil(K/32)*bits]
  const float* scale;      // [N, G] (fp32; the glue converts fp16)
  const float* zero;       // [N, G]
  int64_t K;
  int64_t group_len;       // K for whole rows, else the group size
  int bits;
  float* out;              // [N, K]
};

// Rows [row_begin, row_end).
using DequantizeRowsFn = void (*)(const DequantizeProblem& p, int64_t row_begin, int64_t row_end);
namespace generic { void dequantize_rows(const DequantizeProblem&, int64_t, int64_t); }
namespace avx2 { void dequantize_rows(const DequantizeProblem&, int64_t, int64_t); }
namespace avx512 { void dequantize_rows(const DequantizeProblem&, int64_t, int64_t); }

}  // namespace tacq::cpu
