#include "activation_int8.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace tacq {

at::Tensor round_int8_blocks(const char* op, const at::Tensor& x) {
  const at::Tensor xf = x.to(at::kFloat);
  TORCH_CHECK_VALUE(at::isfinite(xf).all().item<bool>(), "tacq.", op,
                    ": x contains NaN or infinity, which x_int8=True cannot round to int8");
  const int64_t M = xf.size(0), K = xf.size(1), Kp = (K + 31) / 32 * 32;
  const at::Tensor blocks = at::constant_pad_nd(xf, {0, Kp - K}).reshape({M, Kp / 32, 32});
  const at::Tensor amax = blocks.abs().amax(-1, /*keepdim=*/true);
  // Same fp32 operations as the CPU rounding: q = round(x * (127 / amax)), x = q * (amax / 127),
  // a block below 2^-64 lifted by 2^64 first (exact; 127 / amax stays finite).
  const at::Tensor lift = at::where(amax < 0x1p-64f, at::full_like(amax, 0x1p64f), at::ones_like(amax));
  const at::Tensor q = at::round(blocks * lift * at::full_like(amax, 127.f).div(amax * lift));
  const at::Tensor rounded = at::where(amax > 0, q * (amax / 127.f), at::zeros_like(blocks));
  return rounded.reshape({M, Kp}).narrow(1, 0, K).contiguous();
}

}  // namespace tacq
