// Threads of the host layer: OpenMP with an explicit thread count, splitting
// a range into one contiguous chunk per thread (the split at::parallel_for
// makes, so the torch ops keep their scheduling). Torch's CPU wheels use
// libgomp as well, so calls from the ATen glue share torch's OpenMP runtime.
#pragma once

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tacq::host {

// 0 -> every OpenMP thread; n > 0 -> n (the caller has rejected n < 0).
inline int resolve_threads(int requested) {
#if defined(_OPENMP)
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

// Threads to use for [0, range) with at least `grain` items per thread: 1
// inside an enclosing parallel region (no nesting) or for small ranges.
inline int plan_threads(int64_t range, int64_t grain, int requested) {
  if (range <= 0) return 1;
  if (grain < 1) grain = 1;
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
#endif
  const int64_t tasks = (range + grain - 1) / grain;
  const int64_t threads = resolve_threads(requested);
  return static_cast<int>(tasks < threads ? tasks : threads);
}

// f(begin, end, thread) over [begin, end) cut into `threads` chunks
// (threads from plan_threads); f must not throw.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int threads, const F& f) {
  if (begin >= end) return;
  if (threads <= 1) {
    f(begin, end, 0);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  {
    const int64_t team = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t chunk = (end - begin + team - 1) / team;
    const int64_t b = begin + tid * chunk;
    if (b < end) f(b, b + chunk < end ? b + chunk : end, static_cast<int>(tid));
  }
#else
  f(begin, end, 0);
#endif
}

// parallel_for with the thread count planned from `grain` and `requested`.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, int requested, const F& f) {
  parallel_for(begin, end, plan_threads(end - begin, grain, requested), f);
}

}  // namespace tacq::host
