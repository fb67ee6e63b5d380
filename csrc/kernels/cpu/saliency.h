// Torch-free CPU piece of tacq.saliency_accumulate: the epilogue that folds
// one sample's gradient tile into the accumulator.
#pragma once

#include <cstdint>

namespace tacq::cpu {

// acc[i] += |grad[i]| for i in [0, count): both fp32, contiguous.
void accumulate_abs(float* acc, const float* grad, int64_t count);

}  // namespace tacq::cpu
