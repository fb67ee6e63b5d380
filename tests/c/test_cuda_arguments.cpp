// tacq_mixed_gemv_cuda's checks, which run before anything touches a device:
// bad arguments return their status codes and name the function, an empty
// layer returns TACQ_OK without a launch, and, where no GPU is visible, a valid
// call returns TACQ_ERROR_CUDA instead of crashing. Runs on every machine with
// a CUDA build of the library; the pointers are host pointers and are never
// dereferenced by those checks (test_cuda.cpp runs the kernel on a GPU).
#include <cuda_runtime.h>

#include <string>

#include "test_util.h"

namespace {

bool names_the_function() {
  return std::string(tacq_last_error()).find("tacq_mixed_gemv_cuda") != std::string::npos;
}

}  // namespace

int main() {
  std::mt19937 rng(20261206);
  CHECK(tacq_has_cuda() == 1);
  const Layer L = random_layer(rng, 8, 64, 3, 32, false, 0.05);
  const tacq_weights w = L.view();
  std::vector<float> x(16 * 64), y(16 * 8);

  CHECK_STATUS(tacq_mixed_gemv_cuda(nullptr, x.data(), TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_ERROR_NULL_POINTER);
  CHECK(names_the_function());
  for (int64_t M : {0, -1, TACQ_MIXED_GEMV_MAX_ROWS + 1})
    CHECK_STATUS(tacq_mixed_gemv_cuda(&w, x.data(), TACQ_DTYPE_F32, M, y.data(), nullptr), TACQ_ERROR_BAD_SIZE);
  for (int32_t dtype : {int32_t{TACQ_DTYPE_F64}, int32_t{9}})  // unsupported; no tacq_dtype at all
    CHECK_STATUS(tacq_mixed_gemv_cuda(&w, x.data(), dtype, 1, y.data(), nullptr), TACQ_ERROR_BAD_DTYPE);
  CHECK_STATUS(tacq_mixed_gemv_cuda(&w, nullptr, TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_cuda(&w, x.data(), TACQ_DTYPE_F32, 1, nullptr, nullptr), TACQ_ERROR_NULL_POINTER);
  CHECK(names_the_function());

  tacq_weights bad = w;
  bad.bits = 5;
  CHECK_STATUS(tacq_mixed_gemv_cuda(&bad, x.data(), TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_ERROR_BAD_BITS);
  bad = w;
  bad.packed = nullptr;
  CHECK_STATUS(tacq_mixed_gemv_cuda(&bad, x.data(), TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_ERROR_NULL_POINTER);
  bad = w;
  bad.scale_dtype = TACQ_DTYPE_F64;
  CHECK_STATUS(tacq_mixed_gemv_cuda(&bad, x.data(), TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_ERROR_BAD_DTYPE);

  const Layer empty = random_layer(rng, 0, 64, 2, -1, false, 0.0);
  const tacq_weights none = empty.view();
  CHECK_STATUS(tacq_mixed_gemv_cuda(&none, x.data(), TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_OK);

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    CHECK_STATUS(tacq_mixed_gemv_cuda(&w, x.data(), TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_ERROR_CUDA);
    CHECK(names_the_function());
  }
  return finish("test_cuda_arguments");
}
