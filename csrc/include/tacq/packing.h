// Bit layout of the packed code format (docs/format.md), shared by the CPU and
// CUDA kernels and by the host-side checks.
//
//   A row of K codes of `bits` bits is one little-endian bit stream: code i
//   occupies bits [bits*i, bits*i + bits). Word j (uint32, stored as int32)
//   holds stream bits [32j, 32j + 32). Rows are padded with code 0 to a
//   multiple of 32 codes, so every 32 codes take exactly `bits` words:
//
//     packed row length = ceil(K / 32) * bits words
//
//   bits = 2 and 4: a code never straddles a word (16 or 8 codes per word).
//   bits = 3: codes 10 and 21 of each 32-code block straddle words 0|1 and 1|2.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TACQ_HD __host__ __device__ __forceinline__
#else
// static: every translation unit keeps its own copy, so code compiled in an
// AVX-512 unit (kernels/cpu/*_avx512.cpp) is never shared with a portable one.
#define TACQ_HD static inline
#endif

namespace tacq {

constexpr int kCodesPerBlock = 32;  // codes per packing block; a block is `bits` words

TACQ_HD int64_t packed_words_per_row(int64_t K, int bits) {
  return (K + kCodesPerBlock - 1) / kCodesPerBlock * bits;
}

TACQ_HD uint32_t code_mask(int bits) { return (1u << bits) - 1u; }

// Code i of a row whose packed words start at `row`.
TACQ_HD uint32_t extract_code(const uint32_t* row, int64_t i, int bits) {
  const int64_t bit = i * bits;
  const int64_t word = bit >> 5;
  const int shift = static_cast<int>(bit & 31);
  uint32_t v = row[word] >> shift;
  if (shift + bits > 32) v |= row[word + 1] << (32 - shift);
  return v & code_mask(bits);
}

// Packs the 32 codes of one block (codes[0..31], each < 2^bits) into
// `bits` words out[0..bits-1].
TACQ_HD void pack_block(const uint8_t* codes, int bits, uint32_t* out) {
  uint64_t acc = 0;  // bit accumulator, at most 31 + 4 bits pending
  int filled = 0, w = 0;
  for (int i = 0; i < kCodesPerBlock; ++i) {
    acc |= static_cast<uint64_t>(codes[i]) << filled;
    filled += bits;
    if (filled >= 32) {
      out[w++] = static_cast<uint32_t>(acc);
      acc >>= 32;
      filled -= 32;
    }
  }
}

// Unpacks one block of `bits` words into 32 codes.
TACQ_HD void unpack_block(const uint32_t* words, int bits, uint8_t* codes) {
  for (int i = 0; i < kCodesPerBlock; ++i)
    codes[i] = static_cast<uint8_t>(extract_code(words, i, bits));
}

}  // namespace tacq
