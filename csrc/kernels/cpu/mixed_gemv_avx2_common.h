// Pieces shared by the 256-bit mixed_gemv kernels (mixed_gemv_avx2.cpp,
// mixed_gemv_int8_avx2.cpp, mixed_gemv_int8_avx512vnni.cpp), included inside
// their anonymous namespace after <immintrin.h> and mixed_gemv.h. No includes
// of its own.

// Packed bytes prefetched ahead of the ones being read: one row's stream is
// too fast for the hardware prefetcher alone (measured on Zen 3, 1 thread,
// 2-bit, 4096 x 14336 from DRAM, int8 kernel: 25 -> 37 G weights/s).
constexpr int kPrefetchBytes = 4096;

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// add_residual_row (mixed_gemv.h) for all p.M activation rows, 8 entries at a
// time (the last < 8 in scalar): columns checked with vector compares first,
// then per activation row x gathered at the columns. Returns false, adding
// nothing, if a column is outside [0, K) or the columns are not increasing.
inline bool add_residual_row_avx2(const GemvProblem& p, int64_t n, float* out) {
  const int32_t begin = p.row_ptr[n], end = p.row_ptr[n + 1];
  const int32_t vector_end = begin + (end - begin) / 8 * 8;
  const __m256i K = _mm256_set1_epi32(static_cast<int32_t>(p.K));
  const __m256i rotate = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
  int32_t previous = -1;
  for (int32_t i = begin; i < vector_end; i += 8) {
    const __m256i cols = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.col_idx + i));
    // lane t: the column of entry i + t - 1
    const __m256i before = _mm256_blend_epi32(_mm256_permutevar8x32_epi32(cols, rotate), _mm256_set1_epi32(previous), 1);
    const __m256i ok = _mm256_and_si256(_mm256_cmpgt_epi32(cols, before), _mm256_cmpgt_epi32(K, cols));
    if (_mm256_movemask_ps(_mm256_castsi256_ps(ok)) != 0xFF) return false;
    previous = p.col_idx[i + 7];
  }
  for (int32_t i = vector_end; i < end; ++i) {
    if (p.col_idx[i] <= previous || p.col_idx[i] >= p.K) return false;
    previous = p.col_idx[i];
  }
  for (int64_t m = 0; m < p.M; ++m) {
    const float* x = p.x + m * p.Kp;
    __m256 acc = _mm256_setzero_ps();
    for (int32_t i = begin; i < vector_end; i += 8) {
      const __m256i cols = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.col_idx + i));
      const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p.values + i)));
      acc = _mm256_fmadd_ps(v, _mm256_i32gather_ps(x, cols, 4), acc);
    }
    float sum = horizontal_sum(acc);
    for (int32_t i = vector_end; i < end; ++i) sum += _cvtsh_ss(p.values[i]) * x[p.col_idx[i]];
    out[m] += sum;
  }
  return true;
}
