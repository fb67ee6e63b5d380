// Host versions of the inline PTX that the CUDA kernels wrap (cp.async,
// ldmatrix, mma.sync), for their CPU emulation through cuda_host_shim.h.
// Include it after the shim and before a kernel header: it defines
// TACQ_CUDA_HOST_EMULATION, which makes the header leave out its asm wrappers
// and call these instead. Written from the PTX ISA's definitions of the
// instructions (not from any kernel), so a kernel that misuses one fails:
//   * cp.async is asynchronous: the destination reads as NaN bytes from the
//     moment the copy is issued until the issuing thread's cp.async.wait_group
//     retires its group; only then are the bytes copied and the zero fill
//     (past src-size) applied. A read before the wait, or a copy issued into
//     a buffer other threads still read, sees NaN.
//   * ldmatrix and mma.sync are warp collectives: every lane publishes its
//     operands (row addresses, fragments) in a per-warp slot, one barrier of
//     the warp's, and every lane computes its own result from all 32. Products
//     and sums in double, from the 16-bit operands.
// Alignment the ISA requires (16 bytes for cp.async and ldmatrix rows) is
// checked; a violation aborts.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <type_traits>
#include <vector>

#include "cuda_host_shim.h"

#define TACQ_CUDA_HOST_EMULATION

namespace cuda_host {

inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "PTX emulation: %s (thread %u of block %u)\n", what, threadIdx.x, blockIdx.x);
    std::abort();
  }
}

// Every lane of the warp passes `mine` and gets the 32 lanes' values, after
// one barrier of the warp's. Two slot sets, used in turn: a lane writes set s
// again only after the barrier of the next exchange, which every lane reaches
// after it has read set s. All lanes make the same sequence of exchanges.
template <typename V>
std::array<V, kWarpSize> warp_exchange(const V& mine) {
  constexpr int kMaxThreads = 1024;
  static V slots[2][kMaxThreads];
  static thread_local int set = 0;
  const int t = static_cast<int>(threadIdx.x), first = t - t % kWarpSize;
  slots[set][t] = mine;
  g_block->warp_sync[t / kWarpSize]->arrive_and_wait();
  std::array<V, kWarpSize> all;
  std::copy(slots[set] + first, slots[set] + first + kWarpSize, all.begin());
  set ^= 1;
  return all;
}

// ---- cp.async --------------------------------------------------------------

struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  int src_bytes;
};

// This thread's copies not yet performed: the open group (issued since the
// last commit_group) and the committed groups, oldest first.
struct AsyncCopies {
  std::vector<AsyncCopy> open;
  std::deque<std::vector<AsyncCopy>> committed;
};
inline thread_local AsyncCopies t_async;

// Drops the copies this thread left in flight and returns how many: called
// when a kernel returns (a kernel must wait for every copy it issued).
inline size_t cp_async_discard() {
  size_t pending = t_async.open.size();
  for (const auto& group : t_async.committed) pending += group.size();
  t_async = {};
  return pending;
}

}  // namespace cuda_host

// cp.async.cg.shared.global [dst], [src], 16, src_bytes
inline void cp_async_16(void* dst, const void* src, int src_bytes) {
  cuda_host::require(reinterpret_cast<uintptr_t>(dst) % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0,
                     "cp.async: 16-byte copy of an address not 16-byte aligned");
  cuda_host::require(src_bytes >= 0 && src_bytes <= 16, "cp.async: src-size outside [0, 16]");
  std::memset(dst, 0xFF, 16);  // undefined until the wait
  cuda_host::t_async.open.push_back({static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), src_bytes});
}

// cp.async.commit_group: the copies issued since the last one become a group.
inline void cp_async_commit() {
  cuda_host::t_async.committed.push_back(std::move(cuda_host::t_async.open));
  cuda_host::t_async.open.clear();
}

// cp.async.wait_group kPending: every committed group but the newest
// kPending completes.
template <int kPending>
void cp_async_wait() {
  auto& groups = cuda_host::t_async.committed;
  while (groups.size() > static_cast<size_t>(kPending)) {
    for (const cuda_host::AsyncCopy& c : groups.front()) {
      std::memcpy(c.dst, c.src, c.src_bytes);
      std::memset(c.dst + c.src_bytes, 0, 16 - c.src_bytes);
    }
    groups.pop_front();
  }
}

// ---- ldmatrix / mma.sync ---------------------------------------------------

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {r0..r3}, [row]: lanes 8i..8i+7
// give the addresses of rows 0..7 of 8x8 matrix i (eight b16 each). Without
// .trans lane l would receive row l/4, columns 2(l%4), 2(l%4)+1 of each
// matrix; .trans delivers the transpose: column l/4 of rows 2(l%4) (low half)
// and 2(l%4)+1 (high half).
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  cuda_host::require(reinterpret_cast<uintptr_t>(row) % 16 == 0, "ldmatrix: row address not 16-byte aligned");
  const auto rows = cuda_host::warp_exchange(static_cast<const unsigned char*>(row));
  const int lane = static_cast<int>(threadIdx.x) % cuda_host::kWarpSize;
  for (int i = 0; i < 4; ++i) {
    uint16_t low, high;
    std::memcpy(&low, rows[8 * i + 2 * (lane % 4)] + 2 * (lane / 4), 2);
    std::memcpy(&high, rows[8 * i + 2 * (lane % 4) + 1] + 2 * (lane / 4), 2);
    r[i] = low | uint32_t{high} << 16;
  }
}

namespace cuda_host {

struct MmaOperands {
  uint32_t a[4], b[2];
};

// Half `which` (0: bits 0..15) of a register holding two T.
template <typename T>
double b16_element(uint32_t reg, int which) {
  const auto bits = static_cast<unsigned short>(reg >> (16 * which));
  if constexpr (std::is_same_v<T, __half>) {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "mma: fp16 or bf16 operands");
    __nv_bfloat16_raw raw;
    raw.x = bits;
    return __bfloat162float(__nv_bfloat16(raw));
  }
}

}  // namespace cuda_host

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, d.
// Fragments, with g = lane / 4 and q = lane % 4 (element j of a register in
// its half j):
//   A (16 x 16): a0 = A[g][2q + j], a1 = A[g + 8][2q + j], a2 = A[g][2q + 8 + j],
//                a3 = A[g + 8][2q + 8 + j]
//   B (16 x 8):  b0 = B[2q + j][g], b1 = B[2q + 8 + j][g]
//   C, D (16 x 8 f32): d[i] = D[g + 8 (i / 2)][2q + i % 2]
template <typename T>
void mma_16816(float* d, const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const auto lanes = cuda_host::warp_exchange(cuda_host::MmaOperands{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}});
  // The lane and register holding A[row][k], B[k][col]: inverses of the above.
  const auto A = [&](int row, int k) {
    return cuda_host::b16_element<T>(lanes[row % 8 * 4 + k % 8 / 2].a[row / 8 + 2 * (k / 8)], k % 2);
  };
  const auto B = [&](int k, int col) {
    return cuda_host::b16_element<T>(lanes[col * 4 + k % 8 / 2].b[k / 8], k % 2);
  };
  const int lane = static_cast<int>(threadIdx.x) % cuda_host::kWarpSize, g = lane / 4, q = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * q + i % 2;
    double sum = d[i];
    for (int k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
    d[i] = static_cast<float>(sum);
  }
}
