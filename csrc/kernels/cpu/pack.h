// Torch-free CPU kernels for the packed code format (layout: tacq/packing.h).
// Each works on the row range [row_begin, row_end) so the caller can split
// rows across threads.
#pragma once

#include <cstdint>

namespace tacq::cpu {

// codes uint8 [N, K] (row-major, values < 2^bits) -> packed [N, ceil(K/32)*bits].
void pack_rows(const uint8_t* codes, int64_t K, int bits, uint32_t* packed, int64_t row_begin,
               int64_t row_end);

// packed [N, ceil(K/32)*bits] -> codes uint8 [N, K].
void unpack_rows(const uint32_t* packed, int64_t K, int bits, uint8_t* codes, int64_t row_begin,
                 int64_t row_end);

}  // namespace tacq::cpu
