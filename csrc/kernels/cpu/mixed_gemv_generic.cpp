// tacq.mixed_gemv CPU kernel, generic build of the portable body (ISA flags from CMakeLists.txt).
#include "halves.h"
#include "mixed_gemv.h"

namespace tacq::cpu::generic {
#include "mixed_gemv_portable.h"
}  // namespace tacq::cpu::generic
