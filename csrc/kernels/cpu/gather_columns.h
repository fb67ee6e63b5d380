// Torch-free CPU kernel of tacq.gather_columns: out[m, j] = y[m, index[j]].
// Layout: y [M, N_in] and out [M, N_out] row-major with elements of 2 or 4
// bytes (copied as bits, so any fp16 / bf16 / fp32 data); index int64
// [N_out], every entry already checked to be in [0, N_in). Works on the rows
// [row_begin, row_end) so the caller can split rows across threads.
#pragma once

#include <cstdint>

namespace tacq::cpu {

void gather_columns_rows(const void* y, int64_t n_in, const int64_t* index, int64_t n_out, int element_bytes,
                         void* out, int64_t row_begin, int64_t row_end);

// The first j with index[j] outside [0, n_in), or -1 if there is none.
int64_t first_index_out_of_range(const int64_t* index, int64_t n_out, int64_t n_in);

}  // namespace tacq::cpu
