// A quantized layer's six tensors in one uint8 buffer, the "stored layer" that
// QuantizedLinear keeps and tacq.mixed_gemv_stored reads: one tensor argument
// instead of six, because under torch.compile each tensor argument of a call
// costs a guard and a size check (about 1 us apiece, the time a small layer's
// GEMV takes). Sections in this order, each starting at a multiple of
// kStoredAlign bytes from the buffer's start, the buffer itself so aligned:
//   header  StoredHeader (below): the layer's sizes, so that
//           tacq.mixed_gemv_layer needs no other argument
//   packed  int32 [N, ceil(K/32)*bits]
//   scale   fp16  [N, G]
//   zero    fp16  [N, G]
//   row_ptr int32 [N + 1]
//   col_idx int32 [nnz]
//   values  fp16  [nnz]
// The buffer's size is the end of `values` rounded up to kStoredAlign and then
// to a multiple of N (N >= 1), so that it can be seen as [N, bytes / N], the
// shape that gives a compiled graph N without a Python int argument.
// Python reads the offsets through tacq_ext._C.stored_layout and the header
// through tacq_ext._C.stored_header, so this is the one place both are
// written down.
#pragma once

#include <cstdint>

namespace tacq {

constexpr int64_t kStoredAlign = 64;

// The header: eight little-endian int64 values. x_int8 is QuantizedLinear's
// runtime choice (0 or 1), kept here so that changing it needs no recompile.
struct StoredHeader {
  int64_t magic, N, K, bits, group_size, nnz, x_int8, reserved;
};
static_assert(sizeof(StoredHeader) == kStoredAlign, "the header is one aligned section");
constexpr int64_t kStoredMagic = 0x31304C5351434154;  // "TACQSL01" read as little-endian bytes

struct StoredLayout {  // byte offsets of the sections, and the buffer's size
  int64_t header, packed, scale, zero, row_ptr, col_idx, values, bytes;
};

inline StoredLayout stored_layout(int64_t N, int64_t K, int64_t bits, int64_t G, int64_t nnz) {
  auto aligned = [](int64_t bytes) { return (bytes + kStoredAlign - 1) / kStoredAlign * kStoredAlign; };
  StoredLayout s{};
  s.header = 0;
  s.packed = s.header + aligned(sizeof(StoredHeader));
  s.scale = s.packed + aligned(N * ((K + 31) / 32) * bits * 4);
  s.zero = s.scale + aligned(N * G * 2);
  s.row_ptr = s.zero + aligned(N * G * 2);
  s.col_idx = s.row_ptr + aligned((N + 1) * 4);
  s.values = s.col_idx + aligned(nnz * 4);
  s.bytes = s.values + aligned(nnz * 2);
  if (N > 0) s.bytes = (s.bytes + N - 1) / N * N;
  return s;
}

}  // namespace tacq
