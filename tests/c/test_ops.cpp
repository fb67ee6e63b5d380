// ctest: the C API ops (tacq/tacq.h) against naive references (test_util.h),
// and every bad argument returning its status. Run once per CPU ISA path
// (TACQ_CPU_ISA, set by CMakeLists.txt).
#include <algorithm>
#include <limits>
#include <string>
#include <thread>

#include "test_util.h"

extern "C" int tacq_c99_header_check(void);  // c99_header.c

namespace {

std::mt19937 rng(1234);

void test_library_facts() {
  CHECK(tacq_version() == TACQ_VERSION);
  CHECK(TACQ_VERSION == TACQ_VERSION_MAJOR * 10000 + TACQ_VERSION_MINOR * 100 + TACQ_VERSION_PATCH);
  const std::string isa = tacq_cpu_isa();
  CHECK(isa == "generic" || isa == "avx2" || isa == "avx512");
  std::vector<std::string> seen;
  for (int s = TACQ_OK; s <= TACQ_ERROR_INTERNAL; ++s) {
    const char* text = tacq_status_string(static_cast<tacq_status>(s));
    CHECK(text != nullptr && text[0] != '\0' && std::string(text) != "unknown status");
    CHECK(std::find(seen.begin(), seen.end(), text) == seen.end());
    seen.push_back(text);
  }
  CHECK(tacq_c99_header_check() == 0);
}

void test_pack_unpack() {
  for (int bits = 2; bits <= 4; ++bits) {
    for (int64_t K : {1, 31, 32, 33, 64, 100, 257}) {
      for (int threads : {0, 1, 3}) {
        const int64_t N = 5;
        std::vector<uint8_t> codes(static_cast<size_t>(N * K));
        std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
        for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
        std::vector<int32_t> packed(static_cast<size_t>(N * ref_words_per_row(K, bits)), -1);
        CHECK_STATUS(tacq_pack(codes.data(), N, K, bits, packed.data(), threads), TACQ_OK);
        CHECK(packed == ref_pack(codes, N, K, bits));
        std::vector<uint8_t> back(codes.size(), 0xEE);
        CHECK_STATUS(tacq_unpack(packed.data(), N, K, bits, back.data(), threads), TACQ_OK);
        CHECK(back == codes);
      }
    }
  }
  // The documented example of the layout: 3-bit code 10 straddles words 0 and 1.
  std::vector<uint8_t> codes(32, 0);
  codes[10] = 7;
  std::vector<int32_t> packed(3);
  CHECK_STATUS(tacq_pack(codes.data(), 1, 32, 3, packed.data(), 1), TACQ_OK);
  CHECK(static_cast<uint32_t>(packed[0]) == 0xC0000000u && packed[1] == 1 && packed[2] == 0);
  // Empty matrices are fine, even with NULL.
  CHECK_STATUS(tacq_pack(nullptr, 0, 7, 2, nullptr, 0), TACQ_OK);
  CHECK_STATUS(tacq_unpack(nullptr, 0, 7, 2, nullptr, 0), TACQ_OK);
}

void test_pack_bad_arguments() {
  std::vector<uint8_t> codes(64, 1);
  std::vector<int32_t> packed(8);
  CHECK_STATUS(tacq_pack(nullptr, 2, 32, 2, packed.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_pack(codes.data(), 2, 32, 2, nullptr, 0), TACQ_ERROR_NULL_POINTER);
  for (int bits : {-1, 0, 1, 5, 8, 32})
    CHECK_STATUS(tacq_pack(codes.data(), 2, 32, bits, packed.data(), 0), TACQ_ERROR_BAD_BITS);
  CHECK_STATUS(tacq_pack(codes.data(), 2, 0, 2, packed.data(), 0), TACQ_ERROR_BAD_SIZE);
  CHECK_STATUS(tacq_pack(codes.data(), -1, 32, 2, packed.data(), 0), TACQ_ERROR_BAD_SIZE);
  CHECK_STATUS(tacq_pack(codes.data(), INT64_MAX / 4, 32, 2, packed.data(), 0), TACQ_ERROR_BAD_SIZE);
  CHECK_STATUS(tacq_pack(codes.data(), 1, INT64_MAX, 2, packed.data(), 0), TACQ_ERROR_BAD_SIZE);
  CHECK_STATUS(tacq_pack(codes.data(), 2, 32, 2, packed.data(), -1), TACQ_ERROR_BAD_ARGUMENT);
  codes[40] = 4;  // >= 2^2
  CHECK_STATUS(tacq_pack(codes.data(), 2, 32, 2, packed.data(), 0), TACQ_ERROR_BAD_VALUE);
  CHECK(std::string(tacq_last_error()).find("index 40") != std::string::npos);
  CHECK_STATUS(tacq_pack(codes.data(), 2, 32, 3, packed.data(), 0), TACQ_OK);
  CHECK(std::string(tacq_last_error()).empty());
  std::vector<uint8_t> out(64);
  CHECK_STATUS(tacq_unpack(nullptr, 2, 32, 3, out.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_unpack(packed.data(), 2, 32, 3, nullptr, 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_unpack(packed.data(), 2, 32, 1, out.data(), 0), TACQ_ERROR_BAD_BITS);
  CHECK_STATUS(tacq_unpack(packed.data(), 2, -5, 3, out.data(), 0), TACQ_ERROR_BAD_SIZE);
  CHECK_STATUS(tacq_unpack(packed.data(), 2, 32, 3, out.data(), -2), TACQ_ERROR_BAD_ARGUMENT);
}

void test_dequantize() {
  for (int bits = 2; bits <= 4; ++bits) {
    for (auto [K, gs] : std::vector<std::pair<int64_t, int64_t>>{{45, -1}, {64, 32}, {96, 96}, {256, 64}}) {
      for (bool f16 : {false, true}) {
        const Layer L = random_layer(rng, 7, K, bits, gs, f16, 0.0);
        const tacq_weights w = L.view();
        std::vector<float> out(static_cast<size_t>(L.N * K));
        CHECK_STATUS(tacq_dequantize_f32(&w, out.data(), 2), TACQ_OK);
        bool ok = true;
        for (int64_t n = 0; n < L.N; ++n)
          for (int64_t k = 0; k < K; ++k) {
            const int64_t g = k / ref_group_len(gs, K);
            const float expect = L.scale32[n * L.G() + g] * (static_cast<float>(L.codes[n * K + k]) - L.zero32[n * L.G() + g]);
            ok &= out[n * K + k] == expect;
          }
        CHECK(ok);
      }
    }
  }
}

void test_weights_bad_arguments() {
  const Layer L = random_layer(rng, 4, 64, 3, 32, false, 0.1);
  const tacq_weights good = L.view();
  std::vector<float> out(4 * 64), x(16 * 64, 0.5f), y(16 * 4);
  std::vector<uint16_t> xb(16 * 64, 0x3F00), yb(16 * 4);
  auto both = [&](const tacq_weights& w, tacq_status expected_dense, tacq_status expected_gemv) {
    CHECK_STATUS(tacq_dequantize_f32(&w, out.data(), 0), expected_dense);
    CHECK_STATUS(tacq_mixed_gemv_f32(&w, x.data(), 2, y.data(), 0), expected_gemv);
    CHECK_STATUS(tacq_mixed_gemv_bf16(&w, xb.data(), 2, yb.data(), 0), expected_gemv);
  };
  both(good, TACQ_OK, TACQ_OK);
  CHECK_STATUS(tacq_dequantize_f32(nullptr, out.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_dequantize_f32(&good, nullptr, 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_dequantize_f32(&good, out.data(), -1), TACQ_ERROR_BAD_ARGUMENT);
  tacq_weights w = good;
  w.packed = nullptr; both(w, TACQ_ERROR_NULL_POINTER, TACQ_ERROR_NULL_POINTER);
  w = good; w.scale = nullptr; both(w, TACQ_ERROR_NULL_POINTER, TACQ_ERROR_NULL_POINTER);
  w = good; w.zero = nullptr; both(w, TACQ_ERROR_NULL_POINTER, TACQ_ERROR_NULL_POINTER);
  for (int bits : {0, 1, 5, -3}) {
    w = good; w.bits = bits; both(w, TACQ_ERROR_BAD_BITS, TACQ_ERROR_BAD_BITS);
  }
  w = good; w.K = 0; both(w, TACQ_ERROR_BAD_SIZE, TACQ_ERROR_BAD_SIZE);
  w = good; w.N = -1; both(w, TACQ_ERROR_BAD_SIZE, TACQ_ERROR_BAD_SIZE);
  w = good; w.N = INT64_MAX; both(w, TACQ_ERROR_BAD_SIZE, TACQ_ERROR_BAD_SIZE);
  for (int64_t gs : {0, -2, 16, 48, 128, 63}) {
    w = good; w.group_size = gs; both(w, TACQ_ERROR_BAD_GROUP_SIZE, TACQ_ERROR_BAD_GROUP_SIZE);
  }
  for (int32_t d : {static_cast<int32_t>(TACQ_DTYPE_BF16), static_cast<int32_t>(TACQ_DTYPE_F64), 7, -1}) {
    w = good; w.scale_dtype = d; both(w, TACQ_ERROR_BAD_DTYPE, TACQ_ERROR_BAD_DTYPE);
  }
  // The residual: mixed_gemv only.
  w = good; w.row_ptr = nullptr; both(w, TACQ_OK, TACQ_ERROR_NULL_POINTER);
  w = good; w.col_idx = nullptr; both(w, TACQ_OK, TACQ_ERROR_NULL_POINTER);
  w = good; w.values = nullptr; both(w, TACQ_OK, TACQ_ERROR_NULL_POINTER);
  w = good; w.nnz = -1; both(w, TACQ_OK, TACQ_ERROR_BAD_SIZE);
  w = good; w.nnz = int64_t{INT32_MAX} + 1; both(w, TACQ_OK, TACQ_ERROR_BAD_SIZE);
  w = good; w.nnz = good.nnz - 1; both(w, TACQ_OK, TACQ_ERROR_BAD_CSR);
  // Corrupt CSR content.
  auto with_csr = [&](std::vector<int32_t> rp, std::vector<int32_t> ci, tacq_status expected) {
    tacq_weights c = good;
    std::vector<uint16_t> vals(ci.size() + 1, 0x3C00);
    c.row_ptr = rp.data();
    c.col_idx = ci.data();
    c.values = vals.data();
    c.nnz = static_cast<int64_t>(ci.size());
    CHECK_STATUS(tacq_mixed_gemv_f32(&c, x.data(), 3, y.data(), 0), expected);
    CHECK_STATUS(tacq_mixed_gemv_bf16(&c, xb.data(), 3, yb.data(), 1), expected);
  };
  with_csr({0, 1, 2, 2, 3}, {5, 0, 63}, TACQ_OK);
  with_csr({1, 1, 2, 2, 3}, {5, 0, 63}, TACQ_ERROR_BAD_CSR);    // row_ptr[0] != 0
  with_csr({0, 2, 1, 2, 3}, {5, 6, 63}, TACQ_ERROR_BAD_CSR);    // decreasing
  with_csr({0, 1, 2, 2, 2}, {5, 0, 63}, TACQ_ERROR_BAD_CSR);    // row_ptr[N] != nnz
  with_csr({0, 1, 2, 2, 4}, {5, 0, 63}, TACQ_ERROR_BAD_CSR);    // row_ptr[N] > nnz
  with_csr({0, -1, 2, 2, 3}, {5, 0, 63}, TACQ_ERROR_BAD_CSR);   // negative
  with_csr({0, 1, 2, 2, 3}, {5, 0, 64}, TACQ_ERROR_BAD_CSR);    // column == K
  with_csr({0, 1, 2, 2, 3}, {-1, 0, 3}, TACQ_ERROR_BAD_CSR);    // negative column
  with_csr({0, 2, 2, 2, 3}, {5, 5, 3}, TACQ_ERROR_BAD_CSR);     // repeated column
  with_csr({0, 2, 2, 2, 3}, {6, 5, 3}, TACQ_ERROR_BAD_CSR);     // decreasing columns
  with_csr({0, 0, 0, 0, 3}, {1, 2, INT32_MAX}, TACQ_ERROR_BAD_CSR);
  with_csr({0, 0, 0, 0, 3}, {1, 2, INT32_MIN}, TACQ_ERROR_BAD_CSR);
  // Activations and outputs.
  CHECK_STATUS(tacq_mixed_gemv_f32(nullptr, x.data(), 1, y.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_f32(&good, nullptr, 1, y.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_f32(&good, x.data(), 1, nullptr, 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_bf16(nullptr, xb.data(), 1, yb.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_bf16(&good, nullptr, 1, yb.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_bf16(&good, xb.data(), 1, nullptr, 0), TACQ_ERROR_NULL_POINTER);
  for (int64_t M : {int64_t{0}, int64_t{-1}, int64_t{17}, INT64_MAX}) {
    CHECK_STATUS(tacq_mixed_gemv_f32(&good, x.data(), M, y.data(), 0), TACQ_ERROR_BAD_SIZE);
    CHECK_STATUS(tacq_mixed_gemv_bf16(&good, xb.data(), M, yb.data(), 0), TACQ_ERROR_BAD_SIZE);
  }
  CHECK_STATUS(tacq_mixed_gemv_f32(&good, x.data(), 16, y.data(), 0), TACQ_OK);
  CHECK_STATUS(tacq_mixed_gemv_f32(&good, x.data(), 1, y.data(), -1), TACQ_ERROR_BAD_ARGUMENT);
  CHECK_STATUS(tacq_mixed_gemv_bf16(&good, xb.data(), 1, yb.data(), -1), TACQ_ERROR_BAD_ARGUMENT);
  // The CUDA entry point in a build without CUDA; a CUDA build's argument
  // checks are ctest cuda_arguments' (test_cuda_arguments.cpp).
  if (!tacq_has_cuda())
    CHECK_STATUS(tacq_mixed_gemv_cuda(&good, x.data(), TACQ_DTYPE_F32, 1, y.data(), nullptr), TACQ_ERROR_NO_CUDA);
}

void test_mixed_gemv() {
  struct Case { int64_t N, K, gs; };
  const std::vector<Case> cases = {{1, 32, -1}, {7, 45, -1}, {33, 96, 32}, {16, 256, 128}, {9, 200, 200}, {40, 1056, 32}};
  for (int bits = 2; bits <= 4; ++bits) {
    for (const Case& c : cases) {
      for (bool f16 : {false, true}) {
        const Layer L = random_layer(rng, c.N, c.K, bits, c.gs, f16, 0.05);
        const tacq_weights w = L.view();
        for (int64_t M : {1, 3, 16}) {
          const std::vector<float> x = random_normal(rng, static_cast<size_t>(M * c.K));
          std::vector<double> ref, mag;
          ref_gemv(L, x, M, &ref, &mag);
          std::vector<float> y(static_cast<size_t>(M * c.N), NAN), y1(y.size(), NAN);
          CHECK_STATUS(tacq_mixed_gemv_f32(&w, x.data(), M, y.data(), 0), TACQ_OK);
          CHECK_STATUS(tacq_mixed_gemv_f32(&w, x.data(), M, y1.data(), 1), TACQ_OK);
          bool ok = true, same = true;
          for (size_t i = 0; i < y.size(); ++i) {
            ok &= std::fabs(y[i] - ref[i]) <= 1e-5 * mag[i] + 1e-6;
            same &= y[i] == y1[i];  // threads split rows, never a row's sum
          }
          CHECK(ok);
          CHECK(same);
          // bf16: x rounded to bf16, y = bf16(fp32 result).
          std::vector<uint16_t> xb(x.size()), yb(y.size());
          std::vector<float> xr(x.size());
          for (size_t i = 0; i < x.size(); ++i) {
            xb[i] = ref_float_to_bf16(x[i]);
            xr[i] = ref_bf16_to_float(xb[i]);
          }
          ref_gemv(L, xr, M, &ref, &mag);
          CHECK_STATUS(tacq_mixed_gemv_bf16(&w, xb.data(), M, yb.data(), 2), TACQ_OK);
          ok = true;
          for (size_t i = 0; i < yb.size(); ++i) {
            const double got = ref_bf16_to_float(yb[i]);
            ok &= std::fabs(got - ref[i]) <= std::fabs(ref[i]) * (1.0 / 256) + 2e-3 * mag[i] + 1e-6;
          }
          CHECK(ok);
        }
      }
    }
  }
  // N = 0: nothing to compute, y may be NULL.
  Layer L = random_layer(rng, 0, 64, 2, -1, false, 0.0);
  tacq_weights w = L.view();
  std::vector<float> x(64, 1.f);
  CHECK_STATUS(tacq_mixed_gemv_f32(&w, x.data(), 1, nullptr, 0), TACQ_OK);
}

// Calls whose staging memory is small enough for the calling thread's reused
// block and calls that need their own (K = 8192 at 16 rows: 512 KiB of staged
// fp32 x), in turn, from four threads at once: each thread's results must
// match the reference in every round (a block shared between threads, or
// one left too small after a larger call, would not).
void test_mixed_gemv_concurrent_staging() {
  struct Job {
    Layer L;
    int64_t M;
    std::vector<float> x;
    std::vector<double> ref, mag;
  };
  std::vector<Job> jobs;
  const struct { int64_t N, K, gs, M; } shapes[] = {{48, 192, 64, 1}, {24, 8192, 128, 16}, {64, 512, -1, 3},
                                                    {8, 4096, 64, 16}, {96, 192, -1, 2}};
  for (const auto& s : shapes) {
    Job j{random_layer(rng, s.N, s.K, 2 + static_cast<int>(jobs.size() % 3), s.gs, true, 0.01), s.M, {}, {}, {}};
    j.x = random_normal(rng, static_cast<size_t>(s.M * s.K));
    ref_gemv(j.L, j.x, j.M, &j.ref, &j.mag);
    jobs.push_back(std::move(j));
  }
  constexpr int kThreads = 4, kRounds = 100;
  int wrong[kThreads] = {};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        const Job& j = jobs[(t + round) % jobs.size()];
        const tacq_weights w = j.L.view();
        std::vector<float> y(static_cast<size_t>(j.M * j.L.N), NAN);
        if (tacq_mixed_gemv_f32(&w, j.x.data(), j.M, y.data(), 1) != TACQ_OK) ++wrong[t];
        for (size_t i = 0; i < y.size(); ++i)
          if (!(std::fabs(y[i] - j.ref[i]) <= 1e-5 * j.mag[i] + 1e-6)) {
            ++wrong[t];
            break;
          }
      }
    });
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) CHECK(wrong[t] == 0);
}

// x rounded to int8 per 32-value block along K (tacq_mixed_gemv_int8x_f32).
std::vector<float> ref_round_int8(const std::vector<float>& x, int64_t M, int64_t K) {
  std::vector<float> out(x.size());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k0 = 0; k0 < K; k0 += 32) {
      const int64_t k1 = std::min(K, k0 + 32);
      float amax = 0.f;
      for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(x[m * K + k]));
      const float lift = amax < 0x1p-64f ? 0x1p64f : 1.f;  // tiny blocks: 127 / amax stays finite
      for (int64_t k = k0; k < k1; ++k)
        out[m * K + k] =
            amax == 0.f ? 0.f : std::nearbyint(x[m * K + k] * lift * (127.f / (amax * lift))) * (amax / 127.f);
    }
  return out;
}

void test_mixed_gemv_int8x() {
  struct Case { int64_t N, K, gs; };
  const std::vector<Case> cases = {{7, 45, -1}, {33, 96, 32}, {16, 512, 128}, {9, 1056, 32}, {5, 768, 96}};
  for (int bits = 2; bits <= 4; ++bits)
    for (const Case& c : cases) {
      const Layer L = random_layer(rng, c.N, c.K, bits, c.gs, true, 0.05);
      const tacq_weights w = L.view();
      for (int64_t M : {1, 5, 16}) {
        std::vector<float> x = random_normal(rng, static_cast<size_t>(M * c.K));
        for (int64_t k = 0; k < std::min<int64_t>(32, c.K); ++k) x[k] = 0.f;  // an all-zero block
        std::vector<double> ref, mag;
        ref_gemv(L, ref_round_int8(x, M, c.K), M, &ref, &mag);
        std::vector<float> y(static_cast<size_t>(M * c.N), NAN);
        CHECK_STATUS(tacq_mixed_gemv_int8x_f32(&w, x.data(), M, y.data(), 2), TACQ_OK);
        bool ok = true;
        for (size_t i = 0; i < y.size(); ++i) ok &= std::fabs(y[i] - ref[i]) <= 1e-5 * mag[i] + 1e-6;
        CHECK(ok);
      }
    }
  const Layer L = random_layer(rng, 4, 64, 2, -1, false, 0.1);
  const tacq_weights w = L.view();
  std::vector<float> x(2 * 64, 0.5f), y(2 * 4);
  CHECK_STATUS(tacq_mixed_gemv_int8x_f32(nullptr, x.data(), 2, y.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_int8x_f32(&w, nullptr, 2, y.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_mixed_gemv_int8x_f32(&w, x.data(), 17, y.data(), 0), TACQ_ERROR_BAD_SIZE);
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    x[100] = bad;
    CHECK_STATUS(tacq_mixed_gemv_int8x_f32(&w, x.data(), 2, y.data(), 0), TACQ_ERROR_BAD_VALUE);
    CHECK(std::string(tacq_last_error()).find("row 1") != std::string::npos);
  }
}

// ---- quantize: the clipping search of docs/method.md, in double -----------------

struct RefQuant { float scale, zero; double error; };

double ref_error(const std::vector<float>& v, float scale, float zero, int bits, double span) {
  const float maxq = static_cast<float>((1 << bits) - 1);
  double err = 0;
  for (float w : v) {
    float q = std::nearbyint(w / scale) + zero;
    q = std::min(std::max(q, 0.f), maxq);
    err += std::pow(std::fabs((scale * (q - zero) - w) / span), 2.4);
  }
  return err;
}

// Candidates of the search for group v (kept entries already replaced).
std::vector<RefQuant> ref_candidates(const std::vector<float>& v, int bits) {
  float lo = 0.f, hi = 0.f;
  for (float w : v) { lo = std::min(lo, w); hi = std::max(hi, w); }
  if (hi - lo < std::numeric_limits<float>::min()) { lo = -1.f; hi = 1.f; }
  std::vector<RefQuant> out;
  for (int i = 0; i < 80; ++i) {
    const float f = static_cast<float>(1.0 - i / 100.0);
    const float scale = (f * (hi - lo)) / static_cast<float>((1 << bits) - 1);
    const float zero = std::nearbyint((-f * lo) / scale);
    out.push_back({scale, zero, ref_error(v, scale, zero, bits, hi - lo)});
  }
  return out;
}

void test_quantize() {
  for (int bits = 2; bits <= 4; ++bits) {
    for (auto [K, gs] : std::vector<std::pair<int64_t, int64_t>>{{40, -1}, {64, 32}, {96, 96}}) {
      for (bool with_keep : {false, true}) {
        const int64_t N = 6, G = K / ref_group_len(gs, K), len = ref_group_len(gs, K);
        std::vector<float> w = random_normal(rng, static_cast<size_t>(N * K));
        for (int64_t k = 0; k < K; ++k) w[5 * K + k] = 0.f;  // an all-zero row: range [-1, 1]
        std::vector<uint8_t> keep(w.size(), 0);
        if (with_keep)
          for (size_t i = 0; i < keep.size(); i += 7) keep[i] = 1;
        std::vector<uint8_t> codes(w.size());
        std::vector<float> scale(static_cast<size_t>(N * G)), zero(scale.size());
        CHECK_STATUS(tacq_quantize(w.data(), with_keep ? keep.data() : nullptr, N, K, bits, gs, codes.data(),
                                   scale.data(), zero.data(), 0), TACQ_OK);
        bool ok = true;
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t g = 0; g < G; ++g) {
            // Kept weights -> mean of the others, clamped to their range.
            std::vector<float> v;
            double sum = 0;
            int64_t count = 0;
            float mn = 0, mx = 0;
            for (int64_t k = g * len; k < (g + 1) * len; ++k)
              if (!keep[n * K + k] || !with_keep) {
                mn = count ? std::min(mn, w[n * K + k]) : w[n * K + k];
                mx = count ? std::max(mx, w[n * K + k]) : w[n * K + k];
                sum += w[n * K + k];
                ++count;
              }
            const float fill = count ? std::min(std::max(static_cast<float>(sum / count), mn), mx) : 0.f;
            for (int64_t k = g * len; k < (g + 1) * len; ++k)
              v.push_back(with_keep && keep[n * K + k] ? fill : w[n * K + k]);
            const auto cands = ref_candidates(v, bits);
            double best = cands[0].error;
            for (const auto& c : cands) best = std::min(best, c.error);
            // The kernel's choice is one of the candidates, and the best up to rounding of the error.
            const float s = scale[n * G + g], z = zero[n * G + g];
            const auto it = std::find_if(cands.begin(), cands.end(), [&](const RefQuant& c) { return c.scale == s && c.zero == z; });
            ok &= it != cands.end() && it->error <= best * (1 + 1e-5) + 1e-12;
            const float maxq = static_cast<float>((1 << bits) - 1);
            for (int64_t k = g * len; k < (g + 1) * len; ++k) {
              float q = std::min(std::max(std::nearbyint(w[n * K + k] / s) + z, 0.f), maxq);
              if (with_keep && keep[n * K + k]) q = z;  // kept: the code of 0
              ok &= codes[n * K + k] == static_cast<uint8_t>(q);
            }
          }
        }
        CHECK(ok);
      }
    }
  }
}

void test_quantize_bad_arguments() {
  const int64_t N = 2, K = 64;
  std::vector<float> w(N * K, 0.25f), scale(4), zero(4);
  std::vector<uint8_t> codes(N * K), keep(N * K, 0);
  auto q = [&](const float* wp, const uint8_t* kp, int64_t n, int64_t k, int bits, int64_t gs, uint8_t* c, float* s,
               float* z, int threads) { return tacq_quantize(wp, kp, n, k, bits, gs, c, s, z, threads); };
  CHECK_STATUS(q(w.data(), keep.data(), N, K, 3, 32, codes.data(), scale.data(), zero.data(), 0), TACQ_OK);
  CHECK_STATUS(q(nullptr, nullptr, N, K, 3, 32, codes.data(), scale.data(), zero.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(q(w.data(), nullptr, N, K, 3, 32, nullptr, scale.data(), zero.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(q(w.data(), nullptr, N, K, 3, 32, codes.data(), nullptr, zero.data(), 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(q(w.data(), nullptr, N, K, 3, 32, codes.data(), scale.data(), nullptr, 0), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(q(w.data(), nullptr, N, K, 6, 32, codes.data(), scale.data(), zero.data(), 0), TACQ_ERROR_BAD_BITS);
  CHECK_STATUS(q(w.data(), nullptr, N, 0, 3, -1, codes.data(), scale.data(), zero.data(), 0), TACQ_ERROR_BAD_SIZE);
  CHECK_STATUS(q(w.data(), nullptr, -2, K, 3, 32, codes.data(), scale.data(), zero.data(), 0), TACQ_ERROR_BAD_SIZE);
  for (int64_t gs : {0, 16, 48, 128, -7})
    CHECK_STATUS(q(w.data(), nullptr, N, K, 3, gs, codes.data(), scale.data(), zero.data(), 0), TACQ_ERROR_BAD_GROUP_SIZE);
  CHECK_STATUS(q(w.data(), nullptr, N, K, 3, 32, codes.data(), scale.data(), zero.data(), -1), TACQ_ERROR_BAD_ARGUMENT);
  keep[3] = 2;
  CHECK_STATUS(q(w.data(), keep.data(), N, K, 3, 32, codes.data(), scale.data(), zero.data(), 0), TACQ_ERROR_BAD_VALUE);
  keep[3] = 0;
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    w[70] = bad;
    CHECK_STATUS(q(w.data(), nullptr, N, K, 3, 32, codes.data(), scale.data(), zero.data(), 0), TACQ_ERROR_BAD_VALUE);
  }
}

}  // namespace

int main() {
  test_library_facts();
  test_pack_unpack();
  test_pack_bad_arguments();
  test_dequantize();
  test_weights_bad_arguments();
  test_mixed_gemv();
  test_mixed_gemv_concurrent_staging();
  test_mixed_gemv_int8x();
  test_quantize();
  test_quantize_bad_arguments();
  return finish("test_ops");
}
