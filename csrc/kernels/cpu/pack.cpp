// pack / unpack on the CPU. Layout: tacq/packing.h. One row at a time; a row
// is walked in 32-code blocks, the last block zero-padded to 32 codes.
#include "pack.h"

#include <algorithm>
#include <cstring>

#include "tacq/packing.h"

namespace tacq::cpu {

void pack_rows(const uint8_t* codes, int64_t K, int bits, uint32_t* packed, int64_t row_begin,
               int64_t row_end) {
  const int64_t words = packed_words_per_row(K, bits);
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint8_t* row = codes + n * K;
    uint32_t* out = packed + n * words;
    for (int64_t k0 = 0; k0 < K; k0 += kCodesPerBlock) {
      uint8_t block[kCodesPerBlock] = {0};
      std::memcpy(block, row + k0, static_cast<size_t>(std::min<int64_t>(kCodesPerBlock, K - k0)));
      pack_block(block, bits, out + k0 / kCodesPerBlock * bits);
    }
  }
}

void unpack_rows(const uint32_t* packed, int64_t K, int bits, uint8_t* codes, int64_t row_begin,
                 int64_t row_end) {
  const int64_t words = packed_words_per_row(K, bits);
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint32_t* in = packed + n * words;
    uint8_t* row = codes + n * K;
    for (int64_t k0 = 0; k0 < K; k0 += kCodesPerBlock) {
      uint8_t block[kCodesPerBlock];
      unpack_block(in + k0 / kCodesPerBlock * bits, bits, block);
      std::memcpy(row + k0, block, static_cast<size_t>(std::min<int64_t>(kCodesPerBlock, K - k0)));
    }
  }
}

}  // namespace tacq::cpu
