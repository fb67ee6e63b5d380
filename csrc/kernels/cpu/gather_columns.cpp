// gather_columns on the CPU (layout: gather_columns.h). One output row at a
// time: its source row (at most a few tens of KiB) stays in L1 while the
// index streams through, so each element costs a load and a store, instead of
// the strided per-element walk of a generic gather along the last dimension.
#include "gather_columns.h"

namespace tacq::cpu {
namespace {

template <typename Bits>
void gather_rows(const Bits* y, int64_t n_in, const int64_t* index, int64_t n_out, Bits* out, int64_t row_begin,
                 int64_t row_end) {
  for (int64_t m = row_begin; m < row_end; ++m) {
    const Bits* src = y + m * n_in;
    Bits* dst = out + m * n_out;
    for (int64_t j = 0; j < n_out; ++j) dst[j] = src[index[j]];
  }
}

}  // namespace

void gather_columns_rows(const void* y, int64_t n_in, const int64_t* index, int64_t n_out, int element_bytes,
                         void* out, int64_t row_begin, int64_t row_end) {
  if (element_bytes == 2)
    gather_rows(static_cast<const uint16_t*>(y), n_in, index, n_out, static_cast<uint16_t*>(out), row_begin,
                row_end);
  else
    gather_rows(static_cast<const uint32_t*>(y), n_in, index, n_out, static_cast<uint32_t*>(out), row_begin,
                row_end);
}

int64_t first_index_out_of_range(const int64_t* index, int64_t n_out, int64_t n_in) {
  for (int64_t j = 0; j < n_out; ++j)
    if (index[j] < 0 || index[j] >= n_in) return j;
  return -1;
}

}  // namespace tacq::cpu
