// A quantized layer's six tensors in one uint8 buffer, the "stored layer" that
// QuantizedLinear keeps and tacq.mixed_gemv_stored reads: one tensor argument
// instead of six, because under torch.compile each tensor argument of a call
// costs a guard and a size check (about 1 us apiece, the time a small layer's
// GEMV takes). Sections in this order, each starting at a multiple of
// kStoredAlign bytes from the buffer's start, the buffer itself so aligned:
//   packed  int32 [N, ceil(K/32)*bits]
//   scale   fp16  [N, G]
//   zero    fp16  [N, G]
//   row_ptr int32 [N + 1]
//   col_idx int32 [nnz]
//   values  fp16  [nnz]
// Python reads the offsets through tacq_ext._C.stored_layout, so this is the
// one place the layout is written down.
#pragma once

#include <cstdint>

namespace tacq {

constexpr int64_t kStoredAlign = 64;

struct StoredLayout {  // byte offsets of the sections, and the buffer's size
  int64_t packed, scale, zero, row_ptr, col_idx, values, bytes;
};

inline StoredLayout stored_layout(int64_t N, int64_t K, int64_t bits, int64_t G, int64_t nnz) {
  auto aligned = [](int64_t bytes) { return (bytes + kStoredAlign - 1) / kStoredAlign * kStoredAlign; };
  StoredLayout s{};
  s.packed = 0;
  s.scale = s.packed + aligned(N * ((K + 31) / 32) * bits * 4);
  s.zero = s.scale + aligned(N * G * 2);
  s.row_ptr = s.zero + aligned(N * G * 2);
  s.col_idx = s.row_ptr + aligned((N + 1) * 4);
  s.values = s.col_idx + aligned(nnz * 4);
  s.bytes = s.values + aligned(nnz * 2);
  return s;
}

}  // namespace tacq
