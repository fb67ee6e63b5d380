// Decoding packed codes 8 at a time ("a piece") with AVX2, shared by the AVX2
// mixed_gemv kernel and the 3-bit dequantize of the AVX2/AVX-512 builds.
// Included inside a namespace of a translation unit built with AVX2, after
// <immintrin.h>; no includes of its own.
//
// Layout: a block of 32 codes is `bits` words, and the 8*bits bits of codes
// [8j, 8j + 8) start at byte j*bits of the block. One 32-bit broadcast load
// puts them in every lane; a per-lane right shift by bits*lane and a mask
// leave code 8j + lane in lane `lane`. Pieces 0-2 read 4 bytes from their
// start, which stays inside the block; piece 3 reads the block's last 4 bytes
// and drops the 4 - bits bytes before the piece.
template <int kBits>
struct PieceDecoder {
  __m256i shifts = _mm256_setr_epi32(0, kBits, 2 * kBits, 3 * kBits, 4 * kBits, 5 * kBits, 6 * kBits, 7 * kBits);
  // piece 3's: its bits start 32 - 8*bits bits into the word it is read from
  __m256i last_shifts = _mm256_add_epi32(shifts, _mm256_set1_epi32(32 - 8 * kBits));
  __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);

  // Codes 8*kPiece .. 8*kPiece + 7 of the block starting at `block`, as floats.
  template <int kPiece>
  __m256 decode(const unsigned char* block) const {
    static_assert(kPiece >= 0 && kPiece < 4, "a block has 4 pieces");
    constexpr int kByte = kPiece < 3 ? kPiece * kBits : 4 * kBits - 4;
    const __m256i word = _mm256_castps_si256(_mm256_broadcast_ss(reinterpret_cast<const float*>(block + kByte)));
    const __m256i codes = _mm256_srlv_epi32(word, kPiece < 3 ? shifts : last_shifts);
    return _mm256_cvtepi32_ps(_mm256_and_si256(codes, mask));
  }
};
