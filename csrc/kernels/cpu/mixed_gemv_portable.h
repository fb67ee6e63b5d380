// Portable body of the CPU mixed_gemv kernel (layout and algebra in
// mixed_gemv.h), included inside namespace tacq::cpu::<isa> by
// mixed_gemv_generic.cpp, whose flags let the
// compiler vectorize the 32-wide block loops. No includes, no std templates.
//
// Mapping: one output row at a time (the caller splits rows across threads);
// a row's codes are decoded 32 at a time (one block = `bits` words) into
// floats, multiplied into 32-lane partial sums per activation row, which are
// reduced once per group.

template <int kBits>
static bool gemv_rows_bits(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  const int64_t blocks = p.Kp / 32, words_per_row = blocks * kBits;
  const int64_t G = p.K / p.group_len;
  const int64_t blocks_per_group = p.group_len == p.K ? blocks : p.group_len / 32;
  bool residual_ok = true;
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint32_t* row = p.packed + n * words_per_row;
    float dot[kGemvMaxRows] = {0.f};
    for (int64_t g = 0; g < G; ++g) {
      float lanes[kGemvMaxRows][32] = {{0.f}};
      const int64_t blk_end = g + 1 == G ? blocks : (g + 1) * blocks_per_group;
      for (int64_t blk = g * blocks_per_group; blk < blk_end; ++blk) {
        const uint32_t* w = row + blk * kBits;
        float q[32];
        for (int i = 0; i < 32; ++i) {
          const int bit = i * kBits, word = bit >> 5, shift = bit & 31;
          uint32_t v = w[word] >> shift;
          if (shift + kBits > 32) v |= w[word + 1] << (32 - shift);
          q[i] = static_cast<float>(v & kMask);
        }
        for (int64_t m = 0; m < p.M; ++m) {
          const float* xm = p.x + m * p.Kp + blk * 32;
          for (int i = 0; i < 32; ++i) lanes[m][i] += q[i] * xm[i];
        }
      }
      const float s = p.scale[n * G + g], z = p.zero[n * G + g];
      for (int64_t m = 0; m < p.M; ++m) {
        float sum = 0.f;
        for (int i = 0; i < 32; ++i) sum += lanes[m][i];
        dot[m] += s * (sum - z * p.xsum[m * G + g]);
      }
    }
    residual_ok &= add_residual_row(p, n, 0, p.M, dot, half_bits_to_float);
    for (int64_t m = 0; m < p.M; ++m) p.y[m * p.N + n] = dot[m];
  }
  return residual_ok;
}

bool mixed_gemv_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  return dispatch_bits(p.bits, [&](auto bits) { return gemv_rows_bits<bits()>(p, row_begin, row_end); });
}
