// CUDA kernel of tacq.saliency_accumulate: acc[N, K] += sum_b |grad_out[b]^T act[b]|.
//
// One kernel, no workspace. The contraction dimension is T (tokens): for one
// output tile, sample b contributes grad_out[b, :, n-tile]^T x act[b, :, k-tile].
//
//   acc [N, K] fp32            grad_out[b] [T, N]          act[b] [T, K]
//   ┌────┬────┬────┐           t ┌────┬────┐               t ┌────┬────┐
//   │    │tile│    │ 128 rows    │    │A_t │ 32 tokens       │B_t │    │
//   ├────┼────┼────┤  (n)        │    │    │ per stage       │    │    │
//   │    │    │    │             └────┴────┘                 └────┴────┘
//   └────┴────┴────┘ 128 columns (k)   128 n contiguous         128 k contiguous
//
// Block = 8 warps, one 128 x 128 tile of acc (tiles visited in groups of 8 tile
// rows so concurrently running blocks share grad_out / act slices in L2;
// blocks stride over tiles). It walks the flat sequence of (sample, token
// stage) pairs through a 4-stage cp.async pipeline; each stage holds
// A_t = grad_out[b, t0:t0+BK, n-tile] and B_t = act[b, t0:t0+BK, k-tile] in
// shared memory exactly as they lie in global memory (rows of 128 contiguous
// elements plus 16 bytes of padding, which makes the ldmatrix row reads below
// conflict-free: a 272-byte row stride puts the 8 rows of an 8x8 matrix on 8
// distinct 4-bank groups). Rows t >= T and columns >= N / K are zero-filled.
//
// Per stage, registers hold the sample's running T-reduction `part` (64 fp32
// per thread). When a sample's last stage is done, each thread folds
// total += |part| and clears part; after the last sample the block adds total
// into acc once (read-modify-write, bounds-checked).
//
// fp16 / bf16: mma.sync.m16n8k16 (fp32 accumulate). Warp w owns rows
// 64*(w/4) .. +64 and columns 32*(w%4) .. +32 of the tile = 4 x 4 mma tiles.
// The A operand (n x t) is the transpose of what shared memory holds (t rows,
// n contiguous), and the B operand (t x k, "col" layout) likewise, so both are
// fetched with ldmatrix.x4.trans: lane l supplies the address of row (l & 7)
// of 8x8 matrix l >> 3 (compute_stage says which matrix is which), and the
// transposed load hands every lane exactly the pair of elements the mma
// fragment layout wants.
// fp32: SIMT outer products (exact fp32 FMA); thread (ty, tx) = (tid / 16,
// tid % 16) owns rows {ty*4 + i, 64 + ty*4 + i} x columns {tx*4 + j, 64 + tx*4 + j}.
//
// Offsets into global memory are 64-bit; loads are 16-byte cp.async when both
// row strides (N, K) are multiples of 16 bytes and the bases are 16-byte aligned,
// element-wise otherwise (same pipeline, synchronous loads).
//
// Device code only, and the host arithmetic that sizes a launch (launch_grid,
// async_loads): saliency.cu launches it; tests/c/cuda_emulation_saliency.cpp
// runs it on the CPU, one std::thread per CUDA thread, without a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace tacq::cuda::saliency {

constexpr int kThreads = 256;    // 8 warps
constexpr int kTile = 128;       // tile rows (n) = tile columns (k)
constexpr int kStages = 4;       // cp.async pipeline depth
constexpr int64_t kGroupRows = 8;  // tile rows per rasterization group
constexpr int kChunkBytes = 16;  // one cp.async
constexpr int kAccPerThread = kTile * kTile / kThreads;  // 64

template <typename T>
struct Tiling {
  static constexpr int kBK = 64 / static_cast<int>(sizeof(T));  // tokens per stage: 32 (16-bit), 16 (fp32)
  static constexpr int kRowElems = kTile + kChunkBytes / static_cast<int>(sizeof(T));  // + 16 B pad
  static constexpr int kOperandElems = kBK * kRowElems;
  static constexpr int kStageElems = 2 * kOperandElems;  // A_t then B_t
  static constexpr int kSmemBytes = kStages * kStageElems * static_cast<int>(sizeof(T));
  static constexpr int kChunkElems = kChunkBytes / static_cast<int>(sizeof(T));
  static constexpr int kChunksPerRow = kTile / kChunkElems;
  static constexpr int kChunks = kBK * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "every thread copies the same number of chunks");
  static_assert((kRowElems * sizeof(T)) % kChunkBytes == 0, "rows must stay 16-byte aligned");
};

// ---- tile order ------------------------------------------------------------

struct TileCoord {
  int64_t m, n;  // tile row (over N), tile column (over K)
};

// Tile `pid` in groups of kGroupRows tile rows, column-major inside a group:
// the blocks running at once cover a near-square patch of acc.
__host__ __device__ constexpr TileCoord swizzled_tile(int64_t pid, int64_t tiles_m, int64_t tiles_n) {
  const int64_t per_group = kGroupRows * tiles_n;
  const int64_t first_m = pid / per_group * kGroupRows;
  const int64_t rows = tiles_m - first_m < kGroupRows ? tiles_m - first_m : kGroupRows;
  const int64_t in_group = pid % per_group;
  return TileCoord{first_m + in_group % rows, in_group / rows};
}

constexpr bool swizzle_is_bijection(int64_t tiles_m, int64_t tiles_n) {
  int hits[40 * 40] = {};
  for (int64_t pid = 0; pid < tiles_m * tiles_n; ++pid) {
    const TileCoord c = swizzled_tile(pid, tiles_m, tiles_n);
    if (c.m < 0 || c.m >= tiles_m || c.n < 0 || c.n >= tiles_n) return false;
    if (hits[c.m * tiles_n + c.n]++ != 0) return false;
  }
  return true;
}
static_assert(swizzle_is_bijection(1, 1) && swizzle_is_bijection(3, 5) &&
                  swizzle_is_bijection(8, 4) && swizzle_is_bijection(9, 7) &&
                  swizzle_is_bijection(17, 3) && swizzle_is_bijection(40, 40),
              "swizzled_tile must visit every tile exactly once");

// ---- PTX helpers -------------------------------------------------------------

// Inline PTX means nothing to a host compiler: the CPU emulation defines
// TACQ_CUDA_HOST_EMULATION and declares host versions of these five first.
#if defined(__CUDA_ARCH__) || !defined(TACQ_CUDA_HOST_EMULATION)

// 16-byte global -> shared copy that bypasses L1 (tiles are reused via L2 only);
// bytes past src_bytes (0..16) are zero-filled, so edges need no branch.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `kPending` of this thread's committed groups are in flight
// ("memory": shared-memory reads must not be hoisted above it).
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Four transposed 8x8 b16 matrices; lane l gives the row address of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// d += a (16x16, row) * b (16x8, col), fp32 accumulate.
template <typename T>
__device__ __forceinline__ void mma_16816(float* d, const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T, __half>, "mma_16816: fp16 or bf16 operands");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}
#endif

// ---- fetch -----------------------------------------------------------------

// Rows [t0, t0 + kBK) x columns [c0, c0 + 128) of one sample's row-major
// [T, W] matrix `src` into the shared tile `dst` [kBK][kRowElems]; entries
// outside [0, T) x [0, W) become zero. kAsync: W * sizeof(T) and src are
// 16-byte aligned, so a chunk lies wholly inside or wholly outside the matrix.
template <typename T, bool kAsync>
__device__ __forceinline__ void fetch_tile(T* dst, const T* src, int64_t T_, int64_t W, int64_t t0,
                                           int64_t c0, int tid) {
  using L = Tiling<T>;
#pragma unroll
  for (int j = 0; j < L::kChunks / kThreads; ++j) {
    const int c = tid + j * kThreads;
    const int r = c / L::kChunksPerRow, e0 = c % L::kChunksPerRow * L::kChunkElems;
    const int64_t t = t0 + r, col = c0 + e0;
    const int64_t left = t < T_ ? W - col : 0;
    const int valid = left <= 0 ? 0 : (left < L::kChunkElems ? static_cast<int>(left) : L::kChunkElems);
    T* to = dst + r * L::kRowElems + e0;
    const T* from = valid > 0 ? src + t * W + col : src;  // 64-bit offset; src when nothing is read
    if constexpr (kAsync) {
      cp_async_16(to, from, valid * static_cast<int>(sizeof(T)));
    } else {
#pragma unroll
      for (int e = 0; e < L::kChunkElems; ++e) to[e] = e < valid ? from[e] : T(0.f);
    }
  }
}

// ---- compute ---------------------------------------------------------------

// Tensor cores. Element i of `part` is fragment r = i % 4 of mma tile
// (mt, nt) = (i / 16, i / 4 % 4); see tile_position for its place in the tile.
template <typename T>
__device__ __forceinline__ void compute_stage(const T* a_tile, const T* b_tile, float (&part)[kAccPerThread],
                                              int tid) {
  using L = Tiling<T>;
  const int lane = tid % 32, warp = tid / 32;
  const int warp_m = warp / 4 * 64, warp_n = warp % 4 * 32;
  // ldmatrix.trans of rows t, columns m0..m0+7 gives lane l the elements
  // (m0 + l/4, t = 2(l%4) and 2(l%4)+1) = fragment register of A rows g = l/4.
  // A (16 x 16, n x t) x4 order: (n0, t0) = (0,0), (8,0), (0,8), (8,8) ->
  // matrix j at n offset (j & 1) * 8, t offset (j >> 1) * 8.
  const int a_t = (lane >> 4 & 1) * 8 + (lane & 7), a_n = (lane >> 3 & 1) * 8;
  // B (16 x 16, t x k) x4 order: (t0, k0) = (0,0), (8,0), (0,8), (8,8) ->
  // registers {0,1} = b fragment of k-block 0, {2,3} = of k-block 1.
  const int b_t = (lane >> 3 & 1) * 8 + (lane & 7), b_k = (lane >> 4 & 1) * 8;
#pragma unroll
  for (int ks = 0; ks < L::kBK; ks += 16) {
    uint32_t a[4][4], b[4][2];
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
      ldmatrix_x4_trans(a[mt], a_tile + (ks + a_t) * L::kRowElems + warp_m + mt * 16 + a_n);
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t r[4];
      ldmatrix_x4_trans(r, b_tile + (ks + b_t) * L::kRowElems + warp_n + np * 16 + b_k);
      b[2 * np][0] = r[0];
      b[2 * np][1] = r[1];
      b[2 * np + 1][0] = r[2];
      b[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) mma_16816<T>(part + (mt * 4 + nt) * 4, a[mt], b[nt]);
  }
}

// fp32 SIMT: rank-1 updates, 8 x 8 per thread per token.
template <>
__device__ __forceinline__ void compute_stage<float>(const float* a_tile, const float* b_tile,
                                                     float (&part)[kAccPerThread], int tid) {
  using L = Tiling<float>;
  const int ty = tid / 16 * 4, tx = tid % 16 * 4;
#pragma unroll
  for (int t = 0; t < L::kBK; ++t) {
    const float* a_row = a_tile + t * L::kRowElems;
    const float* b_row = b_tile + t * L::kRowElems;
    const float4 a0 = *reinterpret_cast<const float4*>(a_row + ty);
    const float4 a1 = *reinterpret_cast<const float4*>(a_row + 64 + ty);
    const float4 b0 = *reinterpret_cast<const float4*>(b_row + tx);
    const float4 b1 = *reinterpret_cast<const float4*>(b_row + 64 + tx);
    const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
    const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) part[i * 8 + j] = fmaf(a[i], b[j], part[i * 8 + j]);
  }
}

// (row, column) inside the 128 x 128 tile of accumulator element i of thread tid.
template <typename T>
__device__ __forceinline__ TileCoord tile_position(int i, int tid) {
  if constexpr (std::is_same_v<T, float>) {
    return TileCoord{i / 32 * 64 + tid / 16 * 4 + i / 8 % 4, i % 8 / 4 * 64 + tid % 16 * 4 + i % 4};
  } else {
    // m16n8 fp32 fragment: register r holds row lane/4 + 8*(r/2), column 2*(lane%4) + r%2.
    const int lane = tid % 32, warp = tid / 32, mt = i / 16, nt = i / 4 % 4, r = i % 4;
    return TileCoord{warp / 4 * 64 + mt * 16 + lane / 4 + r / 2 * 8,
                     warp % 4 * 32 + nt * 8 + lane % 4 * 2 + r % 2};
  }
}

// Position of the pipeline in the flat (sample, token stage) sequence.
struct Cursor {
  int64_t b = 0, t0 = 0;
  __device__ __forceinline__ void advance(int64_t T_, int bk) {
    t0 += bk;
    if (t0 >= T_) {
      t0 = 0;
      ++b;
    }
  }
};

// ---- kernel ----------------------------------------------------------------

template <typename T, bool kAsync>
__global__ void __launch_bounds__(kThreads, 1)
    saliency_kernel(const T* __restrict__ grad_out,  // [B, T, N]
                    const T* __restrict__ act,       // [B, T, K]
                    float* __restrict__ acc,         // [N, K], += sum_b |grad_out[b]^T act[b]|
                    int64_t B, int64_t T_, int64_t N, int64_t K) {
  using L = Tiling<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const smem = reinterpret_cast<T*>(smem_raw);  // [kStages][A_t, B_t]
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t tiles_m = (N + kTile - 1) / kTile, tiles_n = (K + kTile - 1) / kTile;
  const int64_t t_stages = (T_ + L::kBK - 1) / L::kBK, steps = B * t_stages;

  for (int64_t pid = blockIdx.x; pid < tiles_m * tiles_n; pid += gridDim.x) {
    const TileCoord tile = swizzled_tile(pid, tiles_m, tiles_n);
    const int64_t n0 = tile.m * kTile, k0 = tile.n * kTile;

    Cursor fetch_at;
    auto fetch_stage = [&](int64_t step) {
      T* stage = smem + step % kStages * L::kStageElems;
      fetch_tile<T, kAsync>(stage, grad_out + fetch_at.b * T_ * N, T_, N, fetch_at.t0, n0, tid);
      fetch_tile<T, kAsync>(stage + L::kOperandElems, act + fetch_at.b * T_ * K, T_, K, fetch_at.t0,
                            k0, tid);
      fetch_at.advance(T_, L::kBK);
    };

    // 1. Prologue: the first kStages - 1 stages in flight (one commit group each).
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < steps) fetch_stage(s);
      cp_async_commit();
    }

    float part[kAccPerThread], total[kAccPerThread];
#pragma unroll
    for (int i = 0; i < kAccPerThread; ++i) part[i] = total[i] = 0.f;

    int64_t t_stage = 0;  // stage index within the current sample
    for (int64_t step = 0; step < steps; ++step) {
      // 2. Wait for stage `step` (groups complete in order), then make every
      //    thread's copies visible; this barrier also retires stage step - 1,
      //    whose buffer the next fetch reuses.
      cp_async_wait<kStages - 2>();
      __syncthreads();
      if (step + kStages - 1 < steps) fetch_stage(step + kStages - 1);
      cp_async_commit();

      // 3. This sample's partial product over the stage's tokens.
      const T* stage = smem + step % kStages * L::kStageElems;
      compute_stage<T>(stage, stage + L::kOperandElems, part, tid);

      // 4. Sample complete: fold its absolute value into the tile total.
      if (++t_stage == t_stages) {
        t_stage = 0;
#pragma unroll
        for (int i = 0; i < kAccPerThread; ++i) {
          total[i] += fabsf(part[i]);
          part[i] = 0.f;
        }
      }
    }

    // 5. One read-modify-write of acc per tile element.
#pragma unroll
    for (int i = 0; i < kAccPerThread; ++i) {
      const TileCoord p = tile_position<T>(i, tid);
      const int64_t n = n0 + p.m, k = k0 + p.n;
      if (n < N && k < K) acc[n * K + k] += total[i];
    }
    __syncthreads();  // the next tile's prologue overwrites stages still being read
  }
}

// ---- launch sizing -----------------------------------------------------------

// Blocks of a launch: one per tile, at most 2^30 (the blocks stride over the rest).
inline unsigned launch_grid(int64_t N, int64_t K) {
  const int64_t tiles = ((N + kTile - 1) / kTile) * ((K + kTile - 1) / kTile);
  return static_cast<unsigned>(tiles < (int64_t{1} << 30) ? tiles : int64_t{1} << 30);
}

// Whether saliency_kernel<T, true> (16-byte cp.async) may run: both bases
// 16-byte aligned and both row strides (N, K elements) whole 16-byte chunks.
template <typename T>
inline bool async_loads(const T* grad_out, const T* act, int64_t N, int64_t K) {
  constexpr int64_t chunk = Tiling<T>::kChunkElems;
  return reinterpret_cast<uintptr_t>(grad_out) % kChunkBytes == 0 &&
         reinterpret_cast<uintptr_t>(act) % kChunkBytes == 0 && N % chunk == 0 && K % chunk == 0;
}

}  // namespace tacq::cuda::saliency
