// Body of the CPU dequantize kernel, included inside namespace
// tacq::cpu::<isa> by dequantize_{generic,avx2,avx512}.cpp (after
// "dequantize.h"; no includes here, no std templates, no shared inline code).
//
// Layout: a row is walked in blocks of 32 codes = `bits` words; group
// boundaries (multiples of 32 unless the group is the whole row) never split a
// block. Bits is a template parameter so every shift is a constant and the
// 32-code block loop vectorizes.

template <int kBits>
static void dequantize_rows_bits(const DequantizeProblem& p, int64_t row_begin, int64_t row_end) {
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  const int64_t words_per_row = (p.K + 31) / 32 * kBits;
  const int64_t G = p.K / p.group_len;
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint32_t* row = p.packed + n * words_per_row;
    float* out = p.out + n * p.K;
    for (int64_t k0 = 0; k0 < p.K; k0 += 32) {
      const int64_t g = k0 / p.group_len;
      const float s = p.scale[n * G + g], z = p.zero[n * G + g];
      const uint32_t* w = row + k0 / 32 * kBits;
      float block[32];
      for (int i = 0; i < 32; ++i) {
        const int bit = i * kBits, word = bit >> 5, shift = bit & 31;
        uint32_t v = w[word] >> shift;
        if (shift + kBits > 32) v |= w[word + 1] << (32 - shift);
        block[i] = s * (static_cast<float>(v & kMask) - z);
      }
      const int64_t len = p.K - k0 < 32 ? p.K - k0 : 32;
      for (int64_t i = 0; i < len; ++i) out[k0 + i] = block[i];
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
