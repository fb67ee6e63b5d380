// tacq.quantize CPU kernel, generic build (ISA flags from CMakeLists.txt).
#include <cstring>

#include "quantize.h"
#include "tacq/quant_math.h"

namespace tacq::cpu::generic {
#include "quantize_impl.h"
}  // namespace tacq::cpu::generic
