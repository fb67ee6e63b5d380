// The x_int8 option of tacq.mixed_gemv in ATen, for devices whose kernels do
// not multiply int8 (CUDA): the rounding of csrc/kernels/cpu/mixed_gemv.h
// (Int8Order) done with tensor ops.
#pragma once

#include <ATen/core/Tensor.h>

namespace tacq {

// x [M, K] rounded to int8 per 32-value block along K and back to fp32
// (contiguous, x's device); a ValueError naming `op` if x holds NaN or
// infinity (one device synchronization).
at::Tensor round_int8_blocks(const char* op, const at::Tensor& x);

}  // namespace tacq
