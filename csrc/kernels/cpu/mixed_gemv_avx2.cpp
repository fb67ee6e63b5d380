// tacq.mixed_gemv CPU kernel, avx2 build of the portable body (ISA flags from CMakeLists.txt).
#include "mixed_gemv.h"

namespace tacq::cpu::avx2 {
#include "mixed_gemv_portable.h"
}  // namespace tacq::cpu::avx2
