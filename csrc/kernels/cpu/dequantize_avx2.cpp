// tacq.dequantize CPU kernel, avx2 build (ISA flags from CMakeLists.txt).
#include <immintrin.h>

#include "dequantize.h"

namespace tacq::cpu::avx2 {
#include "dequantize_impl.h"
}  // namespace tacq::cpu::avx2
