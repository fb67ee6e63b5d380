// AVX-512 lane kernel of tacq.mixed_gemv (layout and algebra in mixed_gemv.h),
// included inside namespace tacq::cpu::<isa> by mixed_gemv_avx512.cpp (fp32
// lanes, vfmadd) and mixed_gemv_avx512bf16.cpp (bf16 lanes, vdpbf16ps), each
// of which first defines `struct Lanes`:
//   Lanes::Elem, kLaneBits, kMantissaBits, kOneBits (1.0 in every lane),
//   shift<s>(v) (s > 0 left, s < 0 right, per lane), madd(acc, q, xv),
//   store_step(dst, v) (512/kLaneBits fp32 values, in v[0], v[1], ..., as Elem).
// No includes (the including file brings avx512_intrinsics.h, <algorithm>, <array>,
// <type_traits>, <utility>, <vector>).
//
// Data layout. A packed row is read one chunk at a time: 64 bytes (C = 512/bits
// codes, one vector) for 2 and 4 bits; for 3 bits 192 bytes (C = 512 codes,
// three vectors), deinterleaved with two permutes per vector into three units
// so that each lane holds 3 consecutive lane-sized pieces of the bit stream.
// Either way lane L holds codes [L*cpl, (L+1)*cpl) of the chunk (LaneOrder,
// mixed_gemv.h), and x is staged in that lane order.
//
// Mapping: a register tile of kR = 4 output rows (1 each for the last
// (row_end - row_begin) % 4 rows of the range a thread is given) by kM <= 4 activation rows, one
// accumulator each. Step i of a chunk moves code i of all lanes to mantissa
// bits [kMantissaBits - bits, kMantissaBits) with one immediate shift, and one
// vpternlogd masks it and ORs in the bits of 1.0, giving 1 + code/2^bits
// exactly: 2 integer instructions and one multiply-add per vector of weights,
// each decode shared by kM activation rows and each x load by kR rows. (A
// 3-bit code that straddles two units takes two shifts and an OR; 2 of the
// 32 codes of a lane for fp32 lanes, 2 of 16 for bf16 lanes. With one
// activation row, 2-bit codes in bf16 lanes are read in place, InPlaceCodes
// in mixed_gemv.h: one AND a step and x staged pre-scaled.) With
// acc = sum over a group of weight * staged x = lane_xsum + sum code*x/2^bits
// (lane_xsum = the staged x's sum, xsum unless they are pre-scaled),
//   sum code*x = 2^bits * (acc - lane_xsum),
// so a group adds scale*acc to y, y is multiplied by 2^bits (exactly) once
// per row, and the zero-point term sum_g scale*(2^bits*lane_xsum + zero*xsum)
// is subtracted, lane by lane, with the residual added the same way: one
// horizontal sum per output. fp32 accumulator lane p covers codes [p*C/16, (p+1)*C/16) of a
// chunk, so when groups are not whole chunks, a chunk is scaled by a per-lane
// vector of group scales (ChunkGroups). Scales and zeros are read as stored,
// fp32 or fp16.
// The CSR residual (16 entries per step, gathered; a tile's at once when it has at
// most 16) follows the dense part.

// Fully unrolls the loop that follows. The tile's register arrays (acc, y,
// units, next) stay in zmm registers only if every loop indexing them is
// unrolled; where such a loop's body is too big for GCC to unroll on its own
// (it calls lane_scales, load_chunk, the residual...), GCC leaves the whole
// array on the stack and loads and stores it every chunk. Marked on those
// loops (measured on Zen 4, 1 thread, L2-resident, K = 4096: 4-bit ~44 -> ~56
// G weights/s, 2-bit ~58 -> ~60; stack accesses in the batch-1 2-bit chunk
// loop 27 -> 0).
#define TACQ_UNROLL_TILE _Pragma("GCC unroll 16")

template <int kBits>
struct ChunkShape {
  static constexpr LaneOrder kOrder{kBits, Lanes::kLaneBits};
  static constexpr int kUnits = kOrder.units();                  // vectors per chunk
  static constexpr int kCodesPerLane = kOrder.codes_per_lane();  // steps per chunk
  static constexpr int kLanes = kOrder.lanes();                  // x elements per step
  static constexpr int kCodes = kOrder.chunk_codes();            // codes per chunk
  static constexpr int kWords = 16 * kUnits;                     // packed words per chunk
};

// Lane L of unit kUnit <- lane-sized piece 3L + kUnit of a 3-bit chunk's
// vectors a, b, c. The two-source permute reads the low log2(2*lanes) bits of
// an index and the one-source permute the low log2(lanes) bits, so one index
// vector serves both: pieces of a or b first, then those of c over them.
template <int kUnit>
inline __m512i deinterleave_unit(__m512i a, __m512i b, __m512i c) {
  constexpr int kLanes = 512 / Lanes::kLaneBits;
  using Index = std::conditional_t<Lanes::kLaneBits == 32, int32_t, int16_t>;
  alignas(64) static constexpr std::array<Index, kLanes> kIndex = [] {
    std::array<Index, kLanes> index{};
    for (int lane = 0; lane < kLanes; ++lane) index[lane] = static_cast<Index>(3 * lane + kUnit);
    return index;
  }();
  constexpr uint64_t kFromC = [] {
    uint64_t mask = 0;
    for (int lane = 0; lane < kLanes; ++lane)
      if (3 * lane + kUnit >= 2 * kLanes) mask |= uint64_t{1} << lane;
    return mask;
  }();
  const __m512i index = _mm512_load_si512(kIndex.data());
  if constexpr (Lanes::kLaneBits == 32)
    return _mm512_mask_permutexvar_epi32(_mm512_permutex2var_epi32(a, index, b), static_cast<__mmask16>(kFromC),
                                         index, c);
  else
    return _mm512_mask_permutexvar_epi16(_mm512_permutex2var_epi16(a, index, b), static_cast<__mmask32>(kFromC),
                                         index, c);
}

// The kUnits vectors of chunk c of a row in lane order; the last chunk is
// loaded under a mask (tail_words = its packed words) and reads zeros past it.
template <int kBits>
inline void load_chunk(const uint32_t* row, int64_t c, bool last, int tail_words,
                       __m512i (&units)[ChunkShape<kBits>::kUnits]) {
  using Shape = ChunkShape<kBits>;
  __m512i raw[Shape::kUnits];
  for (int u = 0; u < Shape::kUnits; ++u) {
    const uint32_t* src = row + c * Shape::kWords + 16 * u;
    if (!last) {
      raw[u] = _mm512_loadu_si512(src);
    } else {
      const int live = std::clamp(tail_words - 16 * u, 0, 16);
      raw[u] = _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << live) - 1u), src);
    }
  }
  if constexpr (Shape::kUnits == 1) {
    units[0] = raw[0];
  } else {
    units[0] = deinterleave_unit<0>(raw[0], raw[1], raw[2]);
    units[1] = deinterleave_unit<1>(raw[0], raw[1], raw[2]);
    units[2] = deinterleave_unit<2>(raw[0], raw[1], raw[2]);
  }
}

// The weights of code `kStep` of every lane of a chunk, 1 + code/2^bits:
// shifted to the top of the mantissa, masked, with the bits of 1.0 ORed in.
template <int kBits, int kStep>
inline __m512i decode_step(const __m512i (&units)[ChunkShape<kBits>::kUnits]) {
  constexpr int kCodeBit = Lanes::kMantissaBits - kBits;
  constexpr int kBit = kStep * kBits, kUnit = kBit / Lanes::kLaneBits, kOffset = kBit % Lanes::kLaneBits;
  constexpr int32_t kLaneMask = ((1 << kBits) - 1) << kCodeBit;
  const __m512i mask = _mm512_set1_epi32(Lanes::kLaneBits == 32 ? kLaneMask : kLaneMask * 0x10001);
  __m512i shifted;
  if constexpr (kOffset + kBits <= Lanes::kLaneBits) {
    shifted = Lanes::template shift<kCodeBit - kOffset>(units[kUnit]);
  } else {  // low bits at the top of this unit, high bits at the bottom of the next
    shifted = _mm512_or_si512(Lanes::template shift<kCodeBit - kOffset>(units[kUnit]),
                              Lanes::template shift<kCodeBit + Lanes::kLaneBits - kOffset>(units[kUnit + 1]));
  }
  return _mm512_ternarylogic_epi32(shifted, mask, _mm512_set1_epi32(Lanes::kOneBits), 0xEA);  // (v & mask) | one
}

// 2-bit codes in bf16 lanes, read in place (InPlaceCodes, mixed_gemv.h): the
// lane shifted so that code kStep lies at mantissa bit b = code_bit(kStep),
// with bits 7-15 replaced by those of 1.0 (one shift and one vpternlogd,
// alike for the steps of one copy: the compiler keeps one of each), then one
// vpand keeps the exponent and the code: 1 + code*2^(b-7). 1 + 6/8 integer
// instructions a step, not 2.
template <int kStep>
inline __m512i decode_step_in_place(__m512i unit) {
  constexpr int kCodeBit = InPlaceCodes::code_bit(kStep);
  const __m512i shifted = Lanes::template shift<kCodeBit - 2 * kStep>(unit);
  constexpr uint32_t kHigh = 0xFF80u * 0x10001u, kKeep = (0xFF80u | (3u << kCodeBit)) * 0x10001u;
  const __m512i copy = _mm512_ternarylogic_epi32(shifted, _mm512_set1_epi32(static_cast<int32_t>(kHigh)),
                                                 _mm512_set1_epi32(Lanes::kOneBits), 0xB8);  // high ? one : shifted
  return _mm512_and_si512(copy, _mm512_set1_epi32(static_cast<int32_t>(kKeep)));
}

// Which group scale each fp32 accumulator lane of a chunk takes: lane p
// covers codes [p*C/16, (p+1)*C/16) of the chunk, all in one group (groups are
// multiples of 32 codes), the groups of a chunk are consecutive, and a chunk
// of at most 512 codes spans at most 16 groups of 32.
struct alignas(64) ChunkGroups {
  int32_t offset[16];  // group of lane p minus `first`
  int64_t first;       // group of lane 0
  __mmask16 live;      // groups first .. first+15 that exist (< G)
};

// How the group scales of a call apply: one ChunkGroups per chunk, and
// accumulators are flushed (scaled into y) every `flush_every` chunks, when
// a group ends (every chunk unless groups are whole numbers of chunks).
struct GroupScaling {
  std::vector<ChunkGroups> chunks;
  int64_t flush_every;
};

// A row's scales and zeros as stored: fp32, or fp16 bit patterns (uint16_t),
// read and widened where they are used, so no converted copy is written.
inline __m512 load_floats(const float* src, __mmask16 live) { return _mm512_maskz_loadu_ps(live, src); }
inline __m512 load_floats(const uint16_t* src, __mmask16 live) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, src));
}
inline float load_float(const float* src) { return *src; }
inline float load_float(const uint16_t* src) { return _cvtsh_ss(*src); }

// The first min(n, 16) lanes.
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// The first 8 of those, where a chunk spans at most 8 groups (of 32 codes
// or more: chunks of at most 256 codes), in the low half: fp16 widened
// 8 at a time, half the work of 16.
inline __m512 load_floats8(const float* src, __mmask16 live) {
  return _mm512_castps256_ps512(_mm256_maskz_loadu_ps(static_cast<__mmask8>(live), src));
}
inline __m512 load_floats8(const uint16_t* src, __mmask16 live) {
  return _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_maskz_loadu_epi16(static_cast<__mmask8>(live), src)));
}

// Per-accumulator-lane scale of a chunk of kCodes codes from one row's
// scales: the chunk's groups loaded as one vector and permuted to the lanes.
template <int kCodes, typename Scale>
inline __m512 lane_scales(const ChunkGroups& chunk, const Scale* scale) {
  const __m512i lanes = _mm512_load_si512(chunk.offset);
  if constexpr (kCodes <= 8 * 32) return _mm512_permutexvar_ps(lanes, load_floats8(scale + chunk.first, chunk.live));
  else return _mm512_permutexvar_ps(lanes, load_floats(scale + chunk.first, chunk.live));
}

// sum_g scale[g] * (2^bits * lane_xsum[g] + zero[g] * xsum[g]) as 16 lane
// sums (16 groups per step).
template <bool kInPlace, typename Scale>
inline __m512 zero_point_lanes(const Scale* scale, const Scale* zero, const float* xsum, const float* lane_xsum,
                               int64_t G, float step) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; g += 16) {
    const __mmask16 live = first_lanes(G - g);
    if constexpr (kInPlace) {
      const __m512 ones = _mm512_mul_ps(_mm512_set1_ps(step), _mm512_maskz_loadu_ps(live, lane_xsum + g));
      const __m512 term = _mm512_fmadd_ps(load_floats(zero + g, live), _mm512_maskz_loadu_ps(live, xsum + g), ones);
      acc = _mm512_fmadd_ps(load_floats(scale + g, live), term, acc);
    } else {
      const __m512 sz = _mm512_mul_ps(load_floats(scale + g, live),
                                      _mm512_add_ps(_mm512_set1_ps(step), load_floats(zero + g, live)));
      acc = _mm512_fmadd_ps(sz, _mm512_maskz_loadu_ps(live, xsum + g), acc);
    }
  }
  return acc;
}

// add_residual_row (mixed_gemv.h) 16 entries at a time, into lane sums out[j]:
// columns checked with two vector compares, x gathered only at valid columns.
template <int kM>
inline bool add_residual_row_avx512(const GemvProblem& p, int64_t n, int64_t m0, __m512 (&out)[kM]) {
  const int32_t begin = p.row_ptr[n], end = p.row_ptr[n + 1];
  const __m512i K = _mm512_set1_epi32(static_cast<int32_t>(p.K));
  __m512i previous = _mm512_set1_epi32(-1);  // lane 15: the last column seen
  __m512 acc[kM];
  for (int j = 0; j < kM; ++j) acc[j] = _mm512_setzero_ps();
  for (int32_t i = begin; i < end; i += 16) {
    const __mmask16 live = first_lanes(end - i);
    const __m512i cols = _mm512_maskz_loadu_epi32(live, p.col_idx + i);
    const __m512i before = _mm512_alignr_epi32(cols, previous, 15);  // column of entry i-1 per lane
    const __mmask16 bad = _mm512_mask_cmple_epi32_mask(live, cols, before) |
                          _mm512_mask_cmpge_epi32_mask(live, cols, K);
    if (bad) return false;
    previous = cols;
    const __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, p.values + i));
    for (int j = 0; j < kM; ++j) {
      const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, cols, p.x + (m0 + j) * p.Kp, 4);
      acc[j] = _mm512_fmadd_ps(v, xv, acc[j]);
    }
  }
  for (int j = 0; j < kM; ++j) out[j] = _mm512_add_ps(out[j], acc[j]);
  return true;
}

// The residual of a tile whose kR rows hold at most 16 entries together
// (small K: 0-2 per row), into lane sums out[r][j], in one step: one gather
// per activation row for the whole tile, where add_residual_row_avx512 takes
// a branch of unpredictable length and a gather per row (measured on Zen 4,
// 1 thread, one entry per row: the residual took 17-34 % of a 192-code
// layer's time, 5-14 % this way). Entry e belongs to row r of the tile when
// row_ptr[n0+r] <= e < row_ptr[n0+r+1]; columns are checked as there
// (strictly increasing after a row's first entry, all in [0, K)).
template <int kR, int kM>
inline bool add_residual_small_tile(const GemvProblem& p, int64_t n0, int64_t m0, __m512 (&out)[kR][kM]) {
  const int32_t begin = p.row_ptr[n0];
  const __mmask16 live = first_lanes(p.row_ptr[n0 + kR] - begin);
  const __m512i entry =
      _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(begin));
  __mmask16 in_row[kR], first_of_row = 0;
  for (int r = 0; r < kR; ++r) {
    const __m512i row_begin = _mm512_set1_epi32(p.row_ptr[n0 + r]);
    in_row[r] = _mm512_mask_cmplt_epi32_mask(_mm512_cmpge_epi32_mask(entry, row_begin), entry,
                                             _mm512_set1_epi32(p.row_ptr[n0 + r + 1]));
    first_of_row |= _mm512_cmpeq_epi32_mask(entry, row_begin);
  }
  const __m512i cols = _mm512_maskz_loadu_epi32(live, p.col_idx + begin);
  const __m512i before = _mm512_alignr_epi32(cols, cols, 15);  // column of the entry before (lane 0: a row's first)
  const __mmask16 bad = _mm512_mask_cmple_epi32_mask(live & ~first_of_row, cols, before) |
                        _mm512_mask_cmpge_epu32_mask(live, cols, _mm512_set1_epi32(static_cast<int32_t>(p.K)));
  if (bad) return false;  // negative columns compare as large above
  const __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(live, p.values + begin));
  for (int j = 0; j < kM; ++j) {
    const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, cols, p.x + (m0 + j) * p.Kp, 4);
    const __m512 products = _mm512_mul_ps(v, xv);
    for (int r = 0; r < kR; ++r) out[r][j] = _mm512_mask_add_ps(out[r][j], in_row[r], out[r][j], products);
  }
  return true;
}

// {sum of v0's lanes, ..., sum of v3's lanes}: four horizontal sums sharing
// their shuffles.
inline __m128 sum_lanes4(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  auto halves = [](__m512 v) { return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)); };
  const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(halves(v0), halves(v1)), _mm256_hadd_ps(halves(v2), halves(v3)));
  return _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
}

// y[m0 .. m0+kM) of output rows kRows*n0 .. kRows*(n0+kR) of p: dense part
// + residual. The dense part reads `dense`, p itself (kRows = 1) or its
// paired view (kRows = 2, PairedView): rows n0 .. n0+kR of it, scale and
// zero [rows, G] as stored (p.scale and p.zero, or their fp16 forms), G of
// `dense`. kChains accumulators per output: steps alternate between them
// (lane_tiles). kInPlace: InPlaceCodes apply (x staged for them).
template <int kBits, int kR, int kM, int kChains, bool kInPlace, int kRows, typename Scale>
bool lane_tile(const GemvProblem& p, const GemvProblem& dense, const GroupScaling& gs, const Scale* scale,
               const Scale* zero, int64_t n0, int64_t m0) {
  using Shape = ChunkShape<kBits>;
  using Elem = typename Lanes::Elem;
  const int64_t row_words = dense.Kp / 32 * kBits, G = dense.K / dense.group_len;
  const int64_t chunks = (row_words + Shape::kWords - 1) / Shape::kWords;
  const uint32_t* rows[kR];
  for (int r = 0; r < kR; ++r) rows[r] = dense.packed + (n0 + r) * row_words;
  const Elem* x[kM];
  for (int j = 0; j < kM; ++j) x[j] = static_cast<const Elem*>(dense.x_lanes) + (m0 + j) * dense.Kc;
  const int tail_words = static_cast<int>(row_words - (chunks - 1) * Shape::kWords);

  __m512 y[kR][kM], acc[kR][kM][kChains];
  TACQ_UNROLL_TILE
  for (int r = 0; r < kR; ++r)
    for (int j = 0; j < kM; ++j) {
      y[r][j] = _mm512_setzero_ps();
      for (auto& a : acc[r][j]) a = _mm512_setzero_ps();
    }
  const ChunkGroups* chunk_groups = gs.chunks.data();
  const int64_t flush_every = gs.flush_every;
  auto flush = [&](int64_t c) {  // y += lane scales * acc; acc reset
    TACQ_UNROLL_TILE
    for (int r = 0; r < kR; ++r) {
      const __m512 s = lane_scales<Shape::kCodes>(chunk_groups[c], scale + (n0 + r) * G);
      TACQ_UNROLL_TILE
      for (int j = 0; j < kM; ++j) {
        __m512 sum = acc[r][j][0];
        for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[r][j][i]);
        y[r][j] = _mm512_fmadd_ps(s, sum, y[r][j]);
        for (auto& a : acc[r][j]) a = _mm512_setzero_ps();
      }
    }
  };
  // With one activation row, chunk c+1 is loaded (and for 3 bits
  // deinterleaved) before chunk c is multiplied, so that latency overlaps
  // chunk c's work; with more rows the extra registers spill accumulators
  // (measured: 10-15 % slower at batch 16).
  constexpr bool kLoadAhead = kM == 1;
  // The scales and zeros of the rows two tiles ahead, as for the codes below:
  // otherwise a tile's first and last flush wait on memory.
  for (const Scale* stored : {scale, zero}) {
    const char* ahead = reinterpret_cast<const char*>(stored + (n0 + 2 * kR) * G);
    for (int64_t byte = 0; byte < static_cast<int64_t>(kR * G * sizeof(Scale)); byte += 64)
      _mm_prefetch(ahead + byte, _MM_HINT_T1);
  }
  __m512i units[kR][Shape::kUnits], next[kR][Shape::kUnits];
  if constexpr (kLoadAhead)
    for (int r = 0; r < kR; ++r) load_chunk<kBits>(rows[r], 0, chunks == 1, tail_words, next[r]);
  auto multiply_chunk = [&](int64_t c) __attribute__((always_inline)) {  // acc += chunk c
    if constexpr (kLoadAhead) {
      for (int r = 0; r < kR; ++r)
        for (int u = 0; u < Shape::kUnits; ++u) units[r][u] = next[r][u];
      if (c + 1 < chunks) {
        TACQ_UNROLL_TILE
        for (int r = 0; r < kR; ++r) load_chunk<kBits>(rows[r], c + 1, c + 2 == chunks, tail_words, next[r]);
      }
    } else {
      TACQ_UNROLL_TILE
      for (int r = 0; r < kR; ++r) load_chunk<kBits>(rows[r], c, c + 1 == chunks, tail_words, units[r]);
    }
    // The same chunk of the rows two tiles ahead, into L2: the hardware
    // prefetcher alone leaves the 4 interleaved row streams of a tile
    // latency-bound (measured on Zen 4: two tiles ahead into L2 beat one tile
    // ahead into L1 by ~10-25 % at batch 1).
    for (int r = 0; r < kR; ++r)
      TACQ_UNROLL_TILE
      for (int u = 0; u < Shape::kUnits; ++u)
        _mm_prefetch(reinterpret_cast<const char*>(rows[r] + 2 * kR * row_words + c * Shape::kWords + 16 * u),
                     _MM_HINT_T1);
    const int64_t x_offset = c * Shape::kCodes;
    // All steps unrolled, accumulators in registers (hence always_inline).
    [&]<int... kStep>(std::integer_sequence<int, kStep...>) __attribute__((always_inline)) {
      (
          [&]() __attribute__((always_inline)) {
            __m512i xv[kM];
            for (int j = 0; j < kM; ++j) xv[j] = _mm512_load_si512(x[j] + x_offset + kStep * Shape::kLanes);
            for (int r = 0; r < kR; ++r) {
              __m512i q;
              if constexpr (kInPlace) q = decode_step_in_place<kStep>(units[r][0]);
              else q = decode_step<kBits, kStep>(units[r]);
              for (int j = 0; j < kM; ++j) {
                __m512& a = acc[r][j][kStep % kChains];
                a = Lanes::madd(a, q, xv[j]);
              }
            }
          }(),
          ...);
    }(std::make_integer_sequence<int, Shape::kCodesPerLane>{});
  };
  if (flush_every >= chunks) {  // one group per row: no flush in the loop, fewer live registers
    for (int64_t c = 0; c < chunks; ++c) multiply_chunk(c);
    flush(chunks - 1);
  } else {
    int64_t chunks_to_flush = flush_every;  // a countdown: no division per chunk
    for (int64_t c = 0; c < chunks; ++c) {
      multiply_chunk(c);
      if (--chunks_to_flush == 0 || c + 1 == chunks) {
        flush(c);
        chunks_to_flush = flush_every;
      }
    }
  }
  // sums[i][j]: the lane sums of output (m0 + j, kRows*n0 + i) of p. With
  // pairs, the first row of a pair owns the accumulator lanes of codes
  // [0, Kp) and the zero-point lanes of groups [0, G/2), the second the rest.
  constexpr int kOut = kR * kRows;
  const __mmask16 first_row_codes = first_lanes(p.Kp / (Shape::kCodes / 16)), first_row_groups = first_lanes(G / 2);
  __m512 sums[kOut][kM];
  TACQ_UNROLL_TILE
  for (int r = 0; r < kR; ++r) {
    const int64_t n = n0 + r;
    TACQ_UNROLL_TILE
    for (int j = 0; j < kM; ++j) {
      const __m512 scaled = _mm512_mul_ps(_mm512_set1_ps(static_cast<float>(1 << kBits)), y[r][j]);
      const __m512 zero_point = zero_point_lanes<kInPlace>(scale + n * G, zero + n * G, dense.xsum + (m0 + j) * G,
                                                            dense.lane_xsum + (m0 + j) * G, G,
                                                            static_cast<float>(1 << kBits));
      if constexpr (kRows == 1) {
        sums[r][j] = _mm512_sub_ps(scaled, zero_point);
      } else {
        sums[2 * r][j] = _mm512_sub_ps(_mm512_maskz_mov_ps(first_row_codes, scaled),
                                       _mm512_maskz_mov_ps(first_row_groups, zero_point));
        sums[2 * r + 1][j] = _mm512_sub_ps(_mm512_maskz_mov_ps(~first_row_codes, scaled),
                                           _mm512_maskz_mov_ps(~first_row_groups, zero_point));
      }
    }
  }
  // Few entries (small K): the whole tile in one step; none: no step, whose
  // masked loads would still touch the memory col_idx points at (an empty
  // residual's pointer: a microcode assist per tile, 2x a 192-code layer's
  // time). Many: row by row, 3-4 % faster at batch 1 with 14-50 per row.
  const int64_t first = kRows * n0;
  bool residual_ok = true;
  const int32_t tile_entries = p.row_ptr[first + kOut] - p.row_ptr[first];
  if (tile_entries > 16) {
    TACQ_UNROLL_TILE
    for (int i = 0; i < kOut; ++i) residual_ok &= add_residual_row_avx512<kM>(p, first + i, m0, sums[i]);
  } else if (tile_entries > 0) {
    residual_ok = add_residual_small_tile<kOut, kM>(p, first, m0, sums);
  }
  TACQ_UNROLL_TILE
  for (int j = 0; j < kM; ++j) {
    float* out = p.y + (m0 + j) * p.N + first;
    if constexpr (kOut % 4 == 0)
      for (int i = 0; i < kOut; i += 4)
        _mm_storeu_ps(out + i, sum_lanes4(sums[i][j], sums[i + 1][j], sums[i + 2][j], sums[i + 3][j]));
    else
      for (int i = 0; i < kOut; ++i) out[i] = _mm512_reduce_add_ps(sums[i][j]);
  }
  return residual_ok;
}

// The group scaling of p's rows (all alike): each chunk's groups, and the
// flush period.
template <int kBits>
GroupScaling group_scaling(const GemvProblem& p, int64_t chunks) {
  constexpr int64_t kCodes = ChunkShape<kBits>::kCodes, kLaneCodes = kCodes / 16;
  const int64_t G = p.K / p.group_len;
  GroupScaling gs{std::vector<ChunkGroups>(chunks), 1};
  if (G == 1) gs.flush_every = chunks;
  else if (p.group_len % kCodes == 0) gs.flush_every = p.group_len / kCodes;
  int64_t group = 0, codes_left = p.group_len;  // lanes in code order: group by counting, no division
  for (ChunkGroups& chunk : gs.chunks) {
    chunk.first = group;
    chunk.live = first_lanes(G - group);
    for (int lane = 0; lane < 16; ++lane) {
      chunk.offset[lane] = static_cast<int32_t>(group - chunk.first);
      if ((codes_left -= kLaneCodes) == 0 && group + 1 < G) {  // codes past K: the last group
        ++group;
        codes_left = p.group_len;
      }
    }
  }
  return gs;
}

// With one activation row and no flush before the row's end (one group per
// row), steps alternate between two accumulators per output: 4 chains of
// multiply-adds would leave the tile latency-bound. A flush ends the chains
// (the accumulators restart from zero), and then the second chain's add per
// flush costs more than it hides (measured on Zen 4, 1 thread, 2-bit g64,
// 2048 x 4096: 47.2 -> 49.1 G weights/s with one; whole rows 63 -> 59).
template <int kBits, int kR, bool kInPlace, int kRows, typename Scale>
bool one_row_tile(const GemvProblem& p, const GemvProblem& dense, const GroupScaling& gs, const Scale* scale,
                  const Scale* zero, int64_t n0, int64_t m0) {
  if (gs.flush_every >= static_cast<int64_t>(gs.chunks.size()))
    return lane_tile<kBits, kR, 1, 2, kInPlace, kRows>(p, dense, gs, scale, zero, n0, m0);
  return lane_tile<kBits, kR, 1, 1, kInPlace, kRows>(p, dense, gs, scale, zero, n0, m0);
}

// Every activation row of dense rows n0 .. n0+kR (lane_tile).
template <int kBits, int kR, int kRows, typename Scale>
bool lane_tiles(const GemvProblem& p, const GemvProblem& dense, const GroupScaling& gs, const Scale* scale,
                const Scale* zero, int64_t n0) {
  constexpr bool kInPlace = InPlaceCodes::applies(kBits, Lanes::kLaneBits, 1);
  if (kInPlace && p.in_place_codes) return one_row_tile<kBits, kR, kInPlace, kRows>(p, dense, gs, scale, zero, n0, 0);
  bool ok = true;
  int64_t m0 = 0;
  for (; m0 + 4 <= p.M; m0 += 4) ok &= lane_tile<kBits, kR, 4, 1, false, kRows>(p, dense, gs, scale, zero, n0, m0);
  switch (p.M - m0) {
    case 3: ok &= lane_tile<kBits, kR, 3, 1, false, kRows>(p, dense, gs, scale, zero, n0, m0); break;
    case 2: ok &= lane_tile<kBits, kR, 2, 1, false, kRows>(p, dense, gs, scale, zero, n0, m0); break;
    case 1: ok &= one_row_tile<kBits, kR, false, kRows>(p, dense, gs, scale, zero, n0, m0); break;
    default: break;  // M was a multiple of 4
  }
  return ok;
}

// stage_lanes (mixed_gemv.h) for one bit width: step i of a chunk gathers
// element i of every lane's run of codes, 16 lanes per gather.
template <int kBits>
void stage_lanes_bits(const float* xs, int64_t Kp, int64_t Kc, bool in_place, typename Lanes::Elem* lanes) {
  using Shape = ChunkShape<kBits>;
  constexpr int kGathers = Shape::kLanes / 16;  // 16-lane gathers per step
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __m512i run_start[kGathers];  // first code of lanes 16h .. 16h+15 within a chunk
  for (int h = 0; h < kGathers; ++h)
    run_start[h] = _mm512_mullo_epi32(_mm512_add_epi32(iota, _mm512_set1_epi32(16 * h)),
                                      _mm512_set1_epi32(Shape::kCodesPerLane));
  for (int64_t c0 = 0; c0 < Kc; c0 += Shape::kCodes) {
    const __m512i left = _mm512_set1_epi32(static_cast<int32_t>(std::min<int64_t>(Kp - c0, Shape::kCodes)));
    for (int i = 0; i < Shape::kCodesPerLane; ++i) {
      const __m512 step_scale = _mm512_set1_ps(in_place ? static_cast<float>(1 << InPlaceCodes::x_exponent(i)) : 1.f);
      __m512 v[kGathers];
      for (int h = 0; h < kGathers; ++h) {
        const __m512i index = _mm512_add_epi32(run_start[h], _mm512_set1_epi32(i));
        const __mmask16 live = _mm512_cmplt_epi32_mask(index, left);  // zero past Kp
        v[h] = _mm512_mul_ps(step_scale, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, index, xs + c0, 4));
      }
      Lanes::store_step(lanes + c0 + i * Shape::kLanes, v);
    }
  }
}


// Two rows per chunk. Where a padded row holds at most half a chunk's codes
// (2*Kp <= C: K <= 256 at 3 bits, 128 at 2, 64 at 4), a chunk of one row
// leaves half its lanes or more without codes (a 192-code 3-bit row fills 6
// of 16), and the steps cost as much as a full chunk's. Packed rows lie back
// to back, so a chunk loaded from row 2v holds rows 2v and 2v+1, codes
// [0, Kp) and [Kp, 2Kp): the rows from `first` on are run as the rows of a
// view with K = Kp' = 2Kp, 2G groups (of Kp codes for whole rows), x staged
// twice over (lane L + Kp/cpl takes lane L's x, cpl = codes per lane) and its
// group sums twice over, in the buffers below; lane_tile then splits each
// output's lane sums between the two rows.
template <int kBits>
struct PairedView {
  using Elem = typename Lanes::Elem;
  static constexpr int kCodes = ChunkShape<kBits>::kCodes;
  alignas(64) Elem x_lanes[kGemvMaxRows * kCodes];
  float xsum[kGemvMaxRows * 16], lane_xsum[kGemvMaxRows * 16];  // 2G <= 2Kp/32 <= 16 groups
  GemvProblem rows;  // p from row `first` on (its scale and zero are not read: lane_tile takes them)
  GemvProblem view;  // rows as pairs

  static bool applies(const GemvProblem& p) { return 2 * p.Kp <= kCodes; }

  PairedView(const GemvProblem& p, int64_t first) : rows(rows_from(p, first, nullptr, nullptr)), view(rows) {
    const int64_t G = p.K / p.group_len, half = p.Kp / ChunkShape<kBits>::kCodesPerLane;  // lanes of a row
    constexpr int kLanes = ChunkShape<kBits>::kLanes;
    // The lane of a step of x that each lane takes, worked out once: a
    // division per element cost ~0.6 us a call (Zen 4, batch 1, 3 bits,
    // 2 threads, alternating builds: 192 x 192 4.9-5.3 -> 4.4-4.5 us, 64 x 192
    // 3.8-4.0 -> 3.2-3.4).
    std::array<int, kLanes> source{};
    for (int lane = 0; lane < kLanes; ++lane) source[lane] = lane < 2 * half ? lane % static_cast<int>(half) : lane;
    for (int64_t m = 0; m < p.M; ++m) {
      const Elem* src = static_cast<const Elem*>(p.x_lanes) + m * p.Kc;  // one chunk: p.Kc = kCodes
      Elem* dst = x_lanes + m * kCodes;
      for (int64_t i = 0; i < kCodes; i += kLanes)
        for (int lane = 0; lane < kLanes; ++lane) dst[i + lane] = src[i + source[lane]];
      for (int64_t g = 0; g < 2 * G; ++g) {
        xsum[m * 2 * G + g] = p.xsum[m * G + g % G];
        lane_xsum[m * 2 * G + g] = p.lane_xsum[m * G + g % G];
      }
    }
    view.K = view.Kp = 2 * p.Kp;
    view.Kc = kCodes;
    view.group_len = G == 1 ? p.Kp : p.group_len;
    view.x_lanes = x_lanes;
    view.xsum = xsum;
    view.lane_xsum = lane_xsum;
  }
};

// Output rows [row_begin, row_begin + 2*pairs) as pairs (PairedView).
template <int kBits, typename Scale>
bool paired_rows(const GemvProblem& p, const Scale* scale, const Scale* zero, int64_t row_begin, int64_t pairs) {
  const PairedView<kBits> paired(p, row_begin);
  const GemvProblem &rows = paired.rows, &view = paired.view;
  const GroupScaling gs = group_scaling<kBits>(view, 1);
  const int64_t offset = row_begin * (p.K / p.group_len);  // the first pair's scales
  const Scale *pair_scale = scale + offset, *pair_zero = zero + offset;
  bool ok = true;
  int64_t v = 0;
  for (; v + 4 <= pairs; v += 4) ok &= lane_tiles<kBits, 4, 2>(rows, view, gs, pair_scale, pair_zero, v);
  for (; v < pairs; ++v) ok &= lane_tiles<kBits, 1, 2>(rows, view, gs, pair_scale, pair_zero, v);
  return ok;
}

template <int kBits, typename Scale>
bool lane_rows_scaled(const GemvProblem& p, const Scale* scale, const Scale* zero, int64_t row_begin,
                      int64_t row_end) {
  bool ok = true;
  int64_t n = row_begin;
  if (PairedView<kBits>::applies(p) && row_end - row_begin >= 2) {
    const int64_t pairs = (row_end - row_begin) / 2;
    ok = paired_rows<kBits>(p, scale, zero, row_begin, pairs);
    n += 2 * pairs;
    if (n == row_end) return ok;
  }
  const int64_t chunks = (p.Kp / 32 * kBits + ChunkShape<kBits>::kWords - 1) / ChunkShape<kBits>::kWords;
  const GroupScaling gs = group_scaling<kBits>(p, chunks);
  for (; n + 4 <= row_end; n += 4) ok &= lane_tiles<kBits, 4, 1>(p, p, gs, scale, zero, n);
  for (; n < row_end; ++n) ok &= lane_tiles<kBits, 1, 1>(p, p, gs, scale, zero, n);
  return ok;
}

template <int kBits>
bool lane_rows_bits(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  if (p.scale_f16 != nullptr) return lane_rows_scaled<kBits>(p, p.scale_f16, p.zero_f16, row_begin, row_end);
  return lane_rows_scaled<kBits>(p, p.scale, p.zero, row_begin, row_end);
}

// The including file's exported mixed_gemv_rows and stage_lanes (mixed_gemv.h)
// call these; bits is validated by the caller (tacq::check_bits).
bool lane_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  switch (p.bits) {
    case 2: return lane_rows_bits<2>(p, row_begin, row_end);
    case 3: return lane_rows_bits<3>(p, row_begin, row_end);
    case 4: return lane_rows_bits<4>(p, row_begin, row_end);
  }
  return true;
}

void stage_x_lanes(const float* xs, int64_t Kp, int bits, int64_t Kc, bool in_place, void* lanes) {
  auto* out = static_cast<typename Lanes::Elem*>(lanes);
  switch (bits) {
    case 2: return stage_lanes_bits<2>(xs, Kp, Kc, in_place, out);
    case 3: return stage_lanes_bits<3>(xs, Kp, Kc, in_place, out);
    case 4: return stage_lanes_bits<4>(xs, Kp, Kc, in_place, out);
  }
}
