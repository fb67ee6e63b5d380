// Launcher of the fused CUDA mixed_gemv kernel (mixed_gemv_kernel.cuh: data
// layout, thread mapping, the kernel): the device's limits and the kernel's
// occupancy, queried once and cached; the K tiling and the grid, sized to what
// stays resident; and the dispatch over bits, x dtype, scale dtype and the
// row-count template MT.
#include "mixed_gemv.cuh"

#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>

#include "mixed_gemv_kernel.cuh"

namespace tacq::cuda {
namespace {

Result runtime_result(cudaError_t e) {
  return e == cudaSuccess ? Result{} : Result{Status::kLaunchFailed, static_cast<int64_t>(e)};
}

// The launch's queries are answered once and cached: their answers do not
// change in a process, and the occupancy query and the function attribute go
// through the driver every time, while a decode-sized GEMV takes a few
// microseconds on an H100 (what they cost per call is not measured: no GPU).

struct DeviceLimits {
  int optin = 0;  // shared memory a block may opt in to
  int sms = 0;
};

Result device_limits(int device, DeviceLimits* out) {
  static std::mutex mutex;
  static std::map<int, DeviceLimits> known;
  std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = known.find(device); it != known.end()) {
    *out = it->second;
    return {};
  }
  DeviceLimits d;
  if (Result r = runtime_result(cudaDeviceGetAttribute(&d.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
      r.status != Status::kOk)
    return r;
  if (Result r = runtime_result(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device));
      r.status != Status::kOk)
    return r;
  known.emplace(device, d);
  *out = d;
  return {};
}

// Resident blocks per SM of `kernel` with `smem` bytes of dynamic shared
// memory on `device`. The first query for a kernel on a device also lifts its
// dynamic shared-memory limit to `budget` (every launch's smem is within it)
// where that is over the 48 KiB default.
Result resident_blocks(const void* kernel, int device, size_t smem, int budget, int* per_sm) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, size_t>, int> known;
  static std::set<std::pair<const void*, int>> lifted;
  std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = known.find({kernel, device, smem}); it != known.end()) {
    *per_sm = it->second;
    return {};
  }
  if (budget > 48 * 1024 && !lifted.count({kernel, device})) {
    if (Result r = runtime_result(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, budget));
        r.status != Status::kOk)
      return r;
    lifted.insert({kernel, device});
  }
  int blocks = 0;
  if (Result r = runtime_result(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, fused_gemv::kThreads, smem));
      r.status != Status::kOk)
    return r;
  known.emplace(std::make_tuple(kernel, device, smem), blocks);
  *per_sm = blocks;
  return {};
}

template <int BITS, typename T, typename S, int MT>
Result run(const GemvProblem& pr, cudaStream_t stream) {
  if (pr.N == 0) return {};
  const auto kernel = fused_gemv::mixed_gemv_kernel<BITS, T, S, MT>;
  int device = 0, per_sm = 0;
  DeviceLimits limits;
  if (Result r = runtime_result(cudaGetDevice(&device)); r.status != Status::kOk) return r;
  if (Result r = device_limits(device, &limits); r.status != Status::kOk) return r;
  const fused_gemv::KTiling tiling = fused_gemv::k_tiling<BITS, T, MT>(pr.K, limits.optin);
  if (Result r = resident_blocks(reinterpret_cast<const void*>(kernel), device, tiling.smem, tiling.budget, &per_sm);
      r.status != Status::kOk)
    return r;
  const int64_t row_tiles = (pr.N + fused_gemv::kRowsPerTile - 1) / fused_gemv::kRowsPerTile;
  const int64_t resident = int64_t{per_sm > 0 ? per_sm : 1} * limits.sms;
  const unsigned grid = static_cast<unsigned>(row_tiles < resident ? row_tiles : resident);
  kernel<<<grid, fused_gemv::kThreads, tiling.smem, stream>>>(fused_gemv::make_params<BITS, T, S>(pr, tiling));
  return last_launch_result();
}

// ---- dispatch: bits x x dtype {fp16, bf16, fp32} x scale dtype {fp32, fp16} x MT {1,2,4,8,16}

template <int BITS, typename T, typename S>
Result dispatch_rows(const GemvProblem& pr, cudaStream_t s) {
  if (pr.M < 1 || pr.M > 16) return {Status::kBadRows, pr.M};
  if (pr.M == 1) return run<BITS, T, S, 1>(pr, s);
  if (pr.M == 2) return run<BITS, T, S, 2>(pr, s);
  if (pr.M <= 4) return run<BITS, T, S, 4>(pr, s);
  if (pr.M <= 8) return run<BITS, T, S, 8>(pr, s);
  return run<BITS, T, S, 16>(pr, s);
}

template <int BITS, typename T>
Result dispatch_scale(const GemvProblem& pr, cudaStream_t s) {
  switch (pr.scale_dtype) {
    case DType::kFloat32: return dispatch_rows<BITS, T, float>(pr, s);
    case DType::kFloat16: return dispatch_rows<BITS, T, __half>(pr, s);
    case DType::kBFloat16: break;  // scales are stored as fp32 or fp16 only
  }
  return {Status::kBadDType, static_cast<int64_t>(pr.scale_dtype)};
}

template <int BITS>
Result dispatch_x(const GemvProblem& pr, cudaStream_t s) {
  switch (pr.x_dtype) {
    case DType::kFloat16: return dispatch_scale<BITS, __half>(pr, s);
    case DType::kBFloat16: return dispatch_scale<BITS, __nv_bfloat16>(pr, s);
    case DType::kFloat32: return dispatch_scale<BITS, float>(pr, s);
  }
  return {Status::kBadDType, static_cast<int64_t>(pr.x_dtype)};
}

}  // namespace

Result launch_mixed_gemv(const GemvProblem& problem, cudaStream_t stream) {
  switch (problem.bits) {
    case 2: return dispatch_x<2>(problem, stream);
    case 3: return dispatch_x<3>(problem, stream);
    case 4: return dispatch_x<4>(problem, stream);
    default: return {Status::kBadBits, problem.bits};
  }
}

}  // namespace tacq::cuda
