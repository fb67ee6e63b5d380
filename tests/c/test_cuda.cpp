// tacq_mixed_gemv_cuda against the naive reference (test_util.h), on device
// copies of random layers: every bits, fp32 and fp16 scales, x in fp32, fp16
// and bf16, 1 to 16 rows, on the default stream and on a stream of our own.
// Built only with CUDA; exits 77 (ctest: skipped) when no GPU is visible.
#include <cuda_runtime.h>

#include "test_util.h"

namespace {

std::mt19937 rng(20261203);

// A device copy of a host array; freed with the struct.
struct DeviceBuffer {
  void* ptr = nullptr;
  DeviceBuffer(const void* host, size_t bytes) {
    if (cudaMalloc(&ptr, bytes == 0 ? 1 : bytes) != cudaSuccess) std::abort();
    if (bytes != 0 && cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) std::abort();
  }
  explicit DeviceBuffer(size_t bytes) : DeviceBuffer(std::vector<uint8_t>(bytes).data(), bytes) {}
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

template <typename T>
DeviceBuffer to_device(const std::vector<T>& v) {
  return DeviceBuffer(v.data(), v.size() * sizeof(T));
}

// x rounded to the element type, as the bit patterns the kernel reads and
// the float values the reference uses.
void encode_x(const std::vector<float>& x, tacq_dtype dtype, std::vector<uint8_t>* bytes, std::vector<float>* used) {
  used->resize(x.size());
  const size_t width = dtype == TACQ_DTYPE_F32 ? 4 : 2;
  bytes->resize(x.size() * width);
  for (size_t i = 0; i < x.size(); ++i) {
    if (dtype == TACQ_DTYPE_F32) {
      (*used)[i] = x[i];
      std::memcpy(bytes->data() + 4 * i, &x[i], 4);
      continue;
    }
    const uint16_t h = dtype == TACQ_DTYPE_F16 ? ref_float_to_half(x[i]) : ref_float_to_bf16(x[i]);
    (*used)[i] = dtype == TACQ_DTYPE_F16 ? ref_half_to_float(h) : ref_bf16_to_float(h);
    std::memcpy(bytes->data() + 2 * i, &h, 2);
  }
}

double decode_y(const std::vector<uint8_t>& bytes, size_t i, tacq_dtype dtype) {
  if (dtype == TACQ_DTYPE_F32) {
    float f;
    std::memcpy(&f, bytes.data() + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, bytes.data() + 2 * i, 2);
  return dtype == TACQ_DTYPE_F16 ? ref_half_to_float(h) : ref_bf16_to_float(h);
}

void check_layer(const Layer& L, cudaStream_t stream) {
  const DeviceBuffer packed = to_device(L.packed), row_ptr = to_device(L.row_ptr), col_idx = to_device(L.col_idx),
                     values = to_device(L.values);
  const DeviceBuffer scale = L.f16_scales ? to_device(L.scale16) : to_device(L.scale32);
  const DeviceBuffer zero = L.f16_scales ? to_device(L.zero16) : to_device(L.zero32);
  tacq_weights w = L.view();
  w.packed = static_cast<const int32_t*>(packed.ptr);
  w.scale = scale.ptr;
  w.zero = zero.ptr;
  w.row_ptr = static_cast<const int32_t*>(row_ptr.ptr);
  w.col_idx = static_cast<const int32_t*>(col_idx.ptr);
  w.values = static_cast<const uint16_t*>(values.ptr);
  for (tacq_dtype dtype : {TACQ_DTYPE_F32, TACQ_DTYPE_F16, TACQ_DTYPE_BF16}) {
    // relative rounding of y in its own type, and of the fp32 accumulation
    const double y_rounding = dtype == TACQ_DTYPE_F32 ? 0.0 : dtype == TACQ_DTYPE_F16 ? 1.0 / 2048 : 1.0 / 256;
    for (int64_t M : {1, 5, 16}) {
      const std::vector<float> x = random_normal(rng, static_cast<size_t>(M * L.K));
      std::vector<float> used;
      std::vector<uint8_t> x_bytes, y_bytes(static_cast<size_t>(M * L.N) * (dtype == TACQ_DTYPE_F32 ? 4 : 2));
      encode_x(x, dtype, &x_bytes, &used);
      std::vector<double> ref, mag;
      ref_gemv(L, used, M, &ref, &mag);
      const DeviceBuffer x_dev = to_device(x_bytes);
      DeviceBuffer y_dev(y_bytes.size());
      CHECK_STATUS(tacq_mixed_gemv_cuda(&w, x_dev.ptr, dtype, M, y_dev.ptr, stream), TACQ_OK);
      CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
      CHECK(cudaMemcpy(y_bytes.data(), y_dev.ptr, y_bytes.size(), cudaMemcpyDeviceToHost) == cudaSuccess);
      bool ok = true;
      for (size_t i = 0; i < ref.size(); ++i)
        ok &= std::fabs(decode_y(y_bytes, i, dtype) - ref[i]) <= std::fabs(ref[i]) * y_rounding + 1e-4 * mag[i] + 1e-6;
      if (!ok)
        std::fprintf(stderr, "mismatch: N=%lld K=%lld bits=%d group_size=%lld f16 scales=%d x dtype=%d M=%lld\n",
                     static_cast<long long>(L.N), static_cast<long long>(L.K), L.bits,
                     static_cast<long long>(L.group_size), static_cast<int>(L.f16_scales), static_cast<int>(dtype),
                     static_cast<long long>(M));
      CHECK(ok);
    }
  }
}

}  // namespace

int main() {
  int devices = 0;
  if (!tacq_has_cuda() || cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("test_cuda: no CUDA device, skipped\n");
    return 77;
  }
  cudaStream_t own = nullptr;
  CHECK(cudaStreamCreateWithFlags(&own, cudaStreamNonBlocking) == cudaSuccess);
  struct Case { int64_t N, K, group_size; };
  const Case cases[] = {{1, 32, -1}, {7, 45, -1}, {33, 96, 32}, {130, 1056, 32}, {64, 4096, 128}};
  for (int bits = 2; bits <= 4; ++bits)
    for (const Case& c : cases)
      for (bool f16 : {false, true}) {
        const Layer L = random_layer(rng, c.N, c.K, bits, c.group_size, f16, 0.05);
        check_layer(L, f16 ? own : nullptr);
      }
  cudaStreamDestroy(own);
  return finish("test_cuda");
}
