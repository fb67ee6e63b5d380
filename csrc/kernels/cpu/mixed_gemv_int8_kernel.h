// tacq.mixed_gemv CPU kernel with int8 activations over 256-bit vectors (layout,
// algebra and the int8 rounding in mixed_gemv.h), for bits 2, 3 and 4.
// Included inside the anonymous namespace of mixed_gemv_int8_avx2.cpp
// (vpmaddubsw) and mixed_gemv_int8_avx512vnni.cpp (vpdpbusd), after
// <immintrin.h>, <array>, <cstring>, <utility>, mixed_gemv.h,
// mixed_gemv_avx2_common.h and the includer's `struct Int8Products`:
//   static __m256i step(__m256i acc, __m256i codes, __m256i x): acc += the
//     products of 32 unsigned codes and 32 int8 x, in the includer's lanes;
//   static __m256i int32_lanes(__m256i even, __m256i odd): the sum of two
//     accumulators as 8 int32 sums, lane r = byte lanes [4r, 4r + 4).
// No includes of its own.
//
// Data layout: x is read as int8 q in Int8Order (GemvProblem::x_lanes) with
// one fp32 block scale d per chunk and 32-bit accumulator lane
// (lane_scales). A packed row is read one chunk at a time: 32 bytes for 2 and
// 4 bits (one vector of 32 byte lanes); 96 bytes for 3 bits, loaded as three
// vectors whose 128-bit halves hold bytes [0, 48) and [48, 96) and
// deinterleaved with pshufb so that byte lane L of unit j is byte 3L + j.
//
// Step s of a chunk: one 16-bit shift and a byte mask leave code s of every
// lane (codes that straddle two 3-bit units: two shifts, two masks, an OR);
// Int8Products::step multiplies the 32 unsigned codes by 32 int8 x and adds
// them up over the chunk's steps. Per chunk, the int32 lane sums (accumulator
// lane r = codes [4r*cpl, 4(r+1)*cpl), one block) are converted, scaled by d
// per lane and added, times the weight scale, to the fp32 sum of the row.
//
// rows_bits<bits>(p, row_begin, row_end) is the kernel (GemvRowsFn).
//
// Mapping: one output row at a time (the caller splits rows across threads),
// activation rows in tiles of up to 4 sharing each decoded step. y = the fp32
// sum - sum_g scale*zero*xsum (xsum of the rounded x) + the CSR residual on the
// rounded x (GemvProblem::x).

constexpr int kTileRows = 4;

template <int kBits>
struct Int8Chunk {
  static constexpr Int8Order kOrder{kBits};
  static constexpr int kSteps = kOrder.codes_per_lane();
  static constexpr int kCodes = kOrder.chunk_codes();
  static constexpr int kBytes = kCodes * kBits / 8;  // 32 or 96
  static constexpr int kUnits = kBits == 3 ? 3 : 1;
};

// pshufb indices for unit j of a 3-bit chunk from the vector holding
// bytes [16v, 16v + 16) of each 48-byte half (0x80: zero).
constexpr std::array<uint8_t, 32> unit_index(int unit, int v) {
  std::array<uint8_t, 32> index{};
  for (int lane = 0; lane < 32; ++lane) {
    const int byte = 3 * (lane % 16) + unit - 16 * v;
    index[lane] = byte >= 0 && byte < 16 ? static_cast<uint8_t>(byte) : 0x80;
  }
  return index;
}

template <int kUnit>
inline __m256i gather_unit(__m256i a, __m256i b, __m256i c) {
  alignas(32) static constexpr std::array<uint8_t, 32> kA = unit_index(kUnit, 0), kB = unit_index(kUnit, 1),
                                                       kC = unit_index(kUnit, 2);
  const auto index = [](const std::array<uint8_t, 32>& i) {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(i.data()));
  };
  return _mm256_or_si256(_mm256_or_si256(_mm256_shuffle_epi8(a, index(kA)), _mm256_shuffle_epi8(b, index(kB))),
                         _mm256_shuffle_epi8(c, index(kC)));
}

// The units of the chunk at `bytes` (kBytes readable bytes).
template <int kBits>
inline void load_units(const uint8_t* bytes, __m256i (&units)[Int8Chunk<kBits>::kUnits]) {
  if constexpr (kBits != 3) {
    units[0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes));
  } else {
    const auto halves = [bytes](int v) {
      return _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(bytes + 48 + 16 * v),
                                 reinterpret_cast<const __m128i*>(bytes + 16 * v));
    };
    const __m256i a = halves(0), b = halves(1), c = halves(2);
    units[0] = gather_unit<0>(a, b, c);
    units[1] = gather_unit<1>(a, b, c);
    units[2] = gather_unit<2>(a, b, c);
  }
}

// Code kStep of every byte lane, as unsigned bytes.
template <int kBits, int kStep>
inline __m256i decode_step(const __m256i (&units)[Int8Chunk<kBits>::kUnits]) {
  constexpr int kBit = kStep * kBits, kUnit = kBit / 8, kOffset = kBit % 8;
  const auto shifted_right = [](__m256i v) { return kOffset == 0 ? v : _mm256_srli_epi16(v, kOffset); };
  if constexpr (kOffset + kBits <= 8) {
    return _mm256_and_si256(shifted_right(units[kUnit]), _mm256_set1_epi8((1 << kBits) - 1));
  } else {  // low bits at the top of this unit's byte, high bits at the bottom of the next's
    constexpr int kLow = 8 - kOffset;
    const __m256i low = _mm256_and_si256(shifted_right(units[kUnit]), _mm256_set1_epi8((1 << kLow) - 1));
    const __m256i high = _mm256_and_si256(_mm256_slli_epi16(units[kUnit + 1], kLow),
                                          _mm256_set1_epi8(static_cast<char>(((1 << kBits) - 1) & ~((1 << kLow) - 1))));
    return _mm256_or_si256(low, high);
  }
}

// One row's weight scales or zero points as stored: fp32, or fp16 bit
// patterns (GemvProblem::scale_f16 / zero_f16) widened where they are read,
// which spares the caller a conversion pass (about a fifth of the kernel's
// time at groups of 64).
struct FloatValues {
  const float* v;
  float at(int64_t i) const { return v[i]; }
  __m256 load8(int64_t i) const { return _mm256_loadu_ps(v + i); }
};
struct HalfValues {
  const uint16_t* v;
  float at(int64_t i) const { return _cvtsh_ss(v[i]); }
  __m256 load8(int64_t i) const { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i))); }
};

// sum_g scale[g] * zero[g] * xsum[g] over g < G, 8 groups a step in two
// chains (in scalar, a row's groups of 64 cost about as much as its codes).
template <typename Values>
inline float scaled_zero_sum(Values scale, Values zero, const float* xsum, int64_t G) {
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  const auto term = [&](int64_t g, __m256 acc) {
    return _mm256_fmadd_ps(_mm256_mul_ps(scale.load8(g), zero.load8(g)), _mm256_loadu_ps(xsum + g), acc);
  };
  int64_t g = 0;
  for (; g + 16 <= G; g += 16) {
    even = term(g, even);
    odd = term(g + 8, odd);
  }
  if (g + 8 <= G) even = term(g, even), g += 8;
  float sum = horizontal_sum(_mm256_add_ps(even, odd));
  for (; g < G; ++g) sum += scale.at(g) * zero.at(g) * xsum[g];
  return sum;
}

// The weight scale of each accumulator lane of chunk c, in one of three
// modes fixed per call: every chunk lies in one group (whole rows included);
// a chunk holds whole groups (lane r is in group c*groups_per_chunk +
// group_of_lane[r]); otherwise one division per lane.
struct LaneScales {
  int64_t chunks_per_group = 0, groups_per_chunk = 0;
  __m256i group_of_lane;

  template <int kBits>
  static LaneScales for_call(const GemvProblem& p) {
    constexpr int64_t kCodes = Int8Chunk<kBits>::kCodes;
    const int64_t G = p.K / p.group_len;
    LaneScales ls;
    ls.group_of_lane = _mm256_setzero_si256();
    if (G == 1) {
      ls.chunks_per_group = p.Kc / kCodes;
    } else if (p.group_len % kCodes == 0) {
      ls.chunks_per_group = p.group_len / kCodes;
    } else if (kCodes % p.group_len == 0) {
      ls.groups_per_chunk = kCodes / p.group_len;
      alignas(32) int32_t lane_group[8];
      for (int r = 0; r < 8; ++r) lane_group[r] = static_cast<int32_t>(r * (kCodes / 8) / p.group_len);
      ls.group_of_lane = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane_group));
    }
    return ls;
  }

  // Lane scales of chunk c in the second and third modes (the caller walks
  // the first mode's groups itself).
  template <int kBits, typename Values>
  __m256 of_chunk(Values scale, int64_t G, int64_t group_len, int64_t c) const {
    constexpr int64_t kCodes = Int8Chunk<kBits>::kCodes;
    if (groups_per_chunk > 0) {
      const int64_t g0 = c * groups_per_chunk;
      if (g0 + 8 <= G) return _mm256_permutevar8x32_ps(scale.load8(g0), group_of_lane);
      alignas(32) float s[8] = {0.f};  // near the row's end: only the groups it has
      for (int64_t g = g0; g < G && g < g0 + groups_per_chunk; ++g) s[g - g0] = scale.at(g);
      return _mm256_permutevar8x32_ps(_mm256_load_ps(s), group_of_lane);
    }
    alignas(32) float s[8];
    for (int r = 0; r < 8; ++r) {
      const int64_t g = (c * kCodes + r * (kCodes / 8)) / group_len;  // codes past K: the last group
      s[r] = scale.at(g < G ? g : G - 1);
    }
    return _mm256_load_ps(s);
  }
};

// dot[m] += the dense part of y[m0 + m, n] for m < kM; scale and zero: row n's.
template <int kBits, int kM, typename Values>
void dense_row_tile(const GemvProblem& p, const LaneScales& lane_scales, int64_t n, Values scale, Values zero,
                    int64_t m0, float* dot) {
  using Chunk = Int8Chunk<kBits>;
  const int64_t row_bytes = p.Kp / 32 * kBits * 4, G = p.K / p.group_len;
  const int64_t chunks = p.Kc / Chunk::kCodes;
  const auto* row = reinterpret_cast<const uint8_t*>(p.packed) + n * row_bytes;
  const int8_t* x[kM];
  const float* d[kM];
  for (int m = 0; m < kM; ++m) {
    x[m] = static_cast<const int8_t*>(p.x_lanes) + (m0 + m) * p.Kc;
    d[m] = p.lane_scales + (m0 + m) * chunks * 8;
  }
  __m256 sum[kM];
  for (int m = 0; m < kM; ++m) sum[m] = _mm256_setzero_ps();

  // sum[m] += chunk c's products, times d and weight_scale per lane.
  const auto add_chunk = [&](int64_t c, __m256 weight_scale) __attribute__((always_inline)) {
    _mm_prefetch(reinterpret_cast<const char*>(row + c * Chunk::kBytes + kPrefetchBytes), _MM_HINT_T0);
    __m256i units[Chunk::kUnits];
    if (c + 1 < chunks || (c + 1) * Chunk::kBytes <= row_bytes) {
      load_units<kBits>(row + c * Chunk::kBytes, units);
    } else {  // the row ends inside its last chunk: copy what is left, zeros after
      alignas(32) uint8_t tail[Chunk::kBytes] = {};
      std::memcpy(tail, row + c * Chunk::kBytes, row_bytes - c * Chunk::kBytes);
      load_units<kBits>(tail, units);
    }
    // Even and odd steps in separate chains: half the latency of one chain.
    __m256i acc[kM][2];
    for (int m = 0; m < kM; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_si256();
    const int64_t x_offset = c * Chunk::kCodes;
    [&]<int... kStep>(std::integer_sequence<int, kStep...>) __attribute__((always_inline)) {
      (
          [&]() __attribute__((always_inline)) {
            const __m256i q = decode_step<kBits, kStep>(units);
            for (int m = 0; m < kM; ++m) {
              const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(x[m] + x_offset + 32 * kStep));
              acc[m][kStep % 2] = Int8Products::step(acc[m][kStep % 2], q, xv);
            }
          }(),
          ...);
    }(std::make_integer_sequence<int, Chunk::kSteps>{});
    for (int m = 0; m < kM; ++m) {
      const __m256 exact = _mm256_cvtepi32_ps(Int8Products::int32_lanes(acc[m][0], acc[m][1]));
      const __m256 scaled = _mm256_mul_ps(exact, _mm256_load_ps(d[m] + c * 8));
      sum[m] = _mm256_fmadd_ps(scaled, weight_scale, sum[m]);
    }
  };
  // Groups of whole chunks (whole rows included): one broadcast scale per
  // group, no group bookkeeping per chunk (a countdown kept in memory
  // through the chunk loop: 2-bit rows of 14336 codes per row, 256 rows in
  // L2, 1 thread, 80 -> 67 us a call without it).
  if (lane_scales.chunks_per_group > 0) {
    for (int64_t g = 0, c = 0; c < chunks; ++g) {
      const __m256 weight_scale = _mm256_set1_ps(scale.at(g));
      const int64_t end = c + lane_scales.chunks_per_group < chunks ? c + lane_scales.chunks_per_group : chunks;
      for (; c < end; ++c) add_chunk(c, weight_scale);
    }
  } else {
    for (int64_t c = 0; c < chunks; ++c) add_chunk(c, lane_scales.of_chunk<kBits>(scale, G, p.group_len, c));
  }
  for (int m = 0; m < kM; ++m)
    dot[m] += horizontal_sum(sum[m]) - scaled_zero_sum(scale, zero, p.xsum + (m0 + m) * G, G);
}

// Rows [row_begin, row_end); row n's scales and zeros from values_of_row(n).
template <int kBits, typename ValuesOfRow>
bool rows_with(const GemvProblem& p, int64_t row_begin, int64_t row_end, ValuesOfRow values_of_row) {
  const LaneScales lane_scales = LaneScales::for_call<kBits>(p);
  bool residual_ok = true;
  for (int64_t n = row_begin; n < row_end; ++n) {
    const auto [scale, zero] = values_of_row(n);
    float dot[kGemvMaxRows] = {0.f};
    for (int64_t m0 = 0; m0 < p.M; m0 += kTileRows) {
      switch (p.M - m0 < kTileRows ? p.M - m0 : kTileRows) {
        case 1: dense_row_tile<kBits, 1>(p, lane_scales, n, scale, zero, m0, dot + m0); break;
        case 2: dense_row_tile<kBits, 2>(p, lane_scales, n, scale, zero, m0, dot + m0); break;
        case 3: dense_row_tile<kBits, 3>(p, lane_scales, n, scale, zero, m0, dot + m0); break;
        default: dense_row_tile<kBits, 4>(p, lane_scales, n, scale, zero, m0, dot + m0); break;
      }
    }
    residual_ok &= add_residual_row_avx2(p, n, dot);
    for (int64_t m = 0; m < p.M; ++m) p.y[m * p.N + n] = dot[m];
  }
  return residual_ok;
}

// The kernel: scales and zeros read as stored (fp16 when p.scale_f16 is set).
template <int kBits>
bool rows_bits(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  const int64_t G = p.K / p.group_len;
  if (p.scale_f16 != nullptr)
    return rows_with<kBits>(p, row_begin, row_end, [&](int64_t n) {
      return std::pair{HalfValues{p.scale_f16 + n * G}, HalfValues{p.zero_f16 + n * G}};
    });
  return rows_with<kBits>(p, row_begin, row_end, [&](int64_t n) {
    return std::pair{FloatValues{p.scale + n * G}, FloatValues{p.zero + n * G}};
  });
}
