// tacq.dequantize CPU kernel, generic build (ISA flags from CMakeLists.txt).
#include "dequantize.h"

namespace tacq::cpu::generic {
#include "dequantize_impl.h"
}  // namespace tacq::cpu::generic
