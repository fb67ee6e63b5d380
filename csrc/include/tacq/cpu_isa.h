// Run-time choice of the CPU instruction set for the vectorized kernels.
// Kernel files named *_avx512.cpp / *_avx2.cpp are compiled with those ISA
// flags (CMakeLists.txt); callers pick one with cpu_isa(). The environment
// variable TACQ_CPU_ISA=generic|avx2|avx512 caps the choice, so the tests can
// exercise every path on one machine.
#pragma once

namespace tacq {

enum class CpuIsa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

CpuIsa cpu_isa();              // best ISA of this CPU, capped by TACQ_CPU_ISA
const char* cpu_isa_name(CpuIsa isa);

// AVX-512 BF16 present (Cooper Lake, Sapphire Rapids, Zen 4) and cpu_isa() allows AVX-512.
bool cpu_has_avx512_bf16();
// AVX-512 VNNI present (Cascade Lake, Ice Lake and later, Zen 4) and cpu_isa() allows AVX-512.
bool cpu_has_avx512_vnni();

}  // namespace tacq
