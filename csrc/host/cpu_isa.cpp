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

// What TACQ_CPU_ISA allows, lowest first (tacq/cpu_isa.h).
enum class Cap { kGeneric, kAvx2, kAvx512, kAvx512Vnni, kNone };

static Cap env_cap() {
  const char* v = std::getenv("TACQ_CPU_ISA");
  if (v == nullptr) return Cap::kNone;
  if (std::strcmp(v, "generic") == 0) return Cap::kGeneric;
  if (std::strcmp(v, "avx2") == 0) return Cap::kAvx2;
  if (std::strcmp(v, "avx512") == 0) return Cap::kAvx512;
  if (std::strcmp(v, "avx512_vnni") == 0) return Cap::kAvx512Vnni;
  return Cap::kNone;
}

static CpuIsa hardware_isa() {
  static const CpuIsa hardware = detect_hardware_isa();
  return hardware;
}

CpuIsa cpu_isa() {
  // Read on every call (cheap) so tests may change TACQ_CPU_ISA at run time.
  const Cap cap = env_cap();
  const CpuIsa allowed = cap == Cap::kGeneric ? CpuIsa::kGeneric : cap == Cap::kAvx2 ? CpuIsa::kAvx2 : CpuIsa::kAvx512;
  return static_cast<int>(allowed) < static_cast<int>(hardware_isa()) ? allowed : hardware_isa();
}

// AVX-512 extensions: in the hardware, with AVX-512, and allowed by the cap
// (a cap that allows an extension allows AVX-512: one read of TACQ_CPU_ISA).
#if defined(__x86_64__) || defined(__i386__)
bool cpu_has_avx512_bf16() {
  static const bool hardware = __builtin_cpu_supports("avx512bf16") && hardware_isa() == CpuIsa::kAvx512;
  return hardware && env_cap() == Cap::kNone;
}
bool cpu_has_avx512_vnni() {
  static const bool hardware = __builtin_cpu_supports("avx512vnni") && hardware_isa() == CpuIsa::kAvx512;
  return hardware && env_cap() >= Cap::kAvx512Vnni;
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
