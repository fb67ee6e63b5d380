#include "tacq/cpu_isa.h"

#include <cstdlib>
#include <cstring>

namespace tacq {

static CpuIsa detect_hardware_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("bmi2"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2"))
    return CpuIsa::kAvx2;
#endif
  return CpuIsa::kGeneric;
}

static CpuIsa env_cap() {
  const char* v = std::getenv("TACQ_CPU_ISA");
  if (v == nullptr) return CpuIsa::kAvx512;
  if (std::strcmp(v, "generic") == 0) return CpuIsa::kGeneric;
  if (std::strcmp(v, "avx2") == 0) return CpuIsa::kAvx2;
  return CpuIsa::kAvx512;
}

CpuIsa cpu_isa() {
  // Read on every call (cheap) so tests may change TACQ_CPU_ISA at run time.
  static const CpuIsa hardware = detect_hardware_isa();
  const CpuIsa cap = env_cap();
  return static_cast<int>(cap) < static_cast<int>(hardware) ? cap : hardware;
}

// AVX-512 extensions: in the hardware, and AVX-512 allowed.
#if defined(__x86_64__) || defined(__i386__)
bool cpu_has_avx512_bf16() {
  static const bool hardware = __builtin_cpu_supports("avx512bf16");
  return hardware && cpu_isa() == CpuIsa::kAvx512;
}
bool cpu_has_avx512_vnni() {
  static const bool hardware = __builtin_cpu_supports("avx512vnni");
  return hardware && cpu_isa() == CpuIsa::kAvx512;
}
#else
bool cpu_has_avx512_bf16() { return false; }
bool cpu_has_avx512_vnni() { return false; }
#endif

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kGeneric: return "generic";
  }
  return "unknown";
}

}  // namespace tacq
