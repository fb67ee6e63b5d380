// Body of the CPU dequantize kernel, included inside namespace
// tacq::cpu::<isa> by dequantize_{generic,avx2,avx512}.cpp (after
// "dequantize.h"; no std templates, no shared inline code; the AVX2 builds
// include piece_decoder_avx2.h into their own namespace).
//
// Layout: a row is walked in blocks of 32 codes = `bits` words; group
// boundaries (multiples of 32 unless the group is the whole row) never split a
// block. Bits is a template parameter so every shift is a constant and the
// 32-code block loop can vectorize (GCC did for 2 bits, not for 4), except for
// 3 bits, whose codes 10 and 21 straddle words. Builds with AVX2 (the avx2 and
// avx512 ones; the including file brings <immintrin.h>) decode every width 8
// codes per vector instead: 3 bits with PieceDecoder, 2 and 4 bits with a
// per-lane shift of the word.

#if defined(__AVX2__)
#include "piece_decoder_avx2.h"

static inline void dequantize_3bit_block(const uint32_t* words, float s, float z, float* block) {
  const PieceDecoder<3> decoder;
  const auto* bytes = reinterpret_cast<const unsigned char*>(words);
  const __m256 q[4] = {decoder.decode<0>(bytes), decoder.decode<1>(bytes), decoder.decode<2>(bytes),
                       decoder.decode<3>(bytes)};
  for (int piece = 0; piece < 4; ++piece)
    _mm256_storeu_ps(block + 8 * piece, _mm256_mul_ps(_mm256_set1_ps(s), _mm256_sub_ps(q[piece], _mm256_set1_ps(z))));
}

// 2 or 4 bits (codes never straddle words): 8 codes per vector, each lane
// shifting its copy of the word by its own amount.
template <int kBits>
static inline void dequantize_whole_word_block(const uint32_t* words, float s, float z, float* block) {
  constexpr int kPerWord = 32 / kBits;
  const __m256i lane_shift = _mm256_setr_epi32(0, kBits, 2 * kBits, 3 * kBits, 4 * kBits, 5 * kBits, 6 * kBits,
                                               7 * kBits);
  const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
  for (int piece = 0; piece < 4; ++piece) {
    const int first = 8 * piece;
    const __m256i word = _mm256_set1_epi32(static_cast<int>(words[first / kPerWord]));
    const __m256i shift = _mm256_add_epi32(lane_shift, _mm256_set1_epi32(first % kPerWord * kBits));
    const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(word, shift), mask));
    _mm256_storeu_ps(block + first, _mm256_mul_ps(_mm256_set1_ps(s), _mm256_sub_ps(q, _mm256_set1_ps(z))));
  }
}
#endif

// The 32 codes of one block, dequantized with scale s and zero z, into out.
template <int kBits>
static inline void dequantize_block(const uint32_t* w, float s, float z, float* out) {
#if defined(__AVX2__)
  if constexpr (kBits == 3)
    dequantize_3bit_block(w, s, z, out);
  else
    dequantize_whole_word_block<kBits>(w, s, z, out);
  return;
#endif
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  for (int i = 0; i < 32; ++i) {
    const int bit = i * kBits, word = bit >> 5, shift = bit & 31;
    uint32_t v = w[word] >> shift;
    if (shift + kBits > 32) v |= w[word + 1] << (32 - shift);
    out[i] = s * (static_cast<float>(v & kMask) - z);
  }
}

template <int kBits>
static void dequantize_rows_bits(const DequantizeProblem& p, int64_t row_begin, int64_t row_end) {
  const int64_t words_per_row = (p.K + 31) / 32 * kBits;
  const int64_t G = p.K / p.group_len;
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint32_t* row = p.packed + n * words_per_row;
    float* out = p.out + n * p.K;
    for (int64_t g = 0; g < G; ++g) {
      const float s = p.scale[n * G + g], z = p.zero[n * G + g];
      const int64_t group_end = (g + 1) * p.group_len;
      int64_t k0 = g * p.group_len;
      for (; k0 + 32 <= group_end; k0 += 32) dequantize_block<kBits>(row + k0 / 32 * kBits, s, z, out + k0);
      if (k0 < group_end) {  // the row's last, partial block (a whole-row group only)
        float block[32];
        dequantize_block<kBits>(row + k0 / 32 * kBits, s, z, block);
        for (int64_t i = 0; k0 + i < group_end; ++i) out[k0 + i] = block[i];
      }
    }
  }
}

void dequantize_rows(const DequantizeProblem& p, int64_t row_begin, int64_t row_end) {
  switch (p.bits) {
    case 2: return dequantize_rows_bits<2>(p, row_begin, row_end);
    case 3: return dequantize_rows_bits<3>(p, row_begin, row_end);
    case 4: return dequantize_rows_bits<4>(p, row_begin, row_end);
  }
  // bits is validated by the caller (tacq::check_bits); nothing to do otherwise.
}
