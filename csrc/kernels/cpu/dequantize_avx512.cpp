// tacq.dequantize CPU kernel, avx512 build (ISA flags from CMakeLists.txt).
#include <immintrin.h>

#include "dequantize.h"

namespace tacq::cpu::avx512 {
#include "dequantize_impl.h"
}  // namespace tacq::cpu::avx512
