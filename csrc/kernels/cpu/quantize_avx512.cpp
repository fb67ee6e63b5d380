// tacq.quantize CPU kernel, avx512 build (ISA flags from CMakeLists.txt).
#include <cstring>

#include "quantize.h"
#include "tacq/quant_math.h"

namespace tacq::cpu::avx512 {
#include "quantize_impl.h"
}  // namespace tacq::cpu::avx512
