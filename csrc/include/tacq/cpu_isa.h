// Run-time choice of the CPU instruction set for the vectorized kernels.
// Kernel files named *_avx512.cpp / *_avx2.cpp are compiled with those ISA
// flags (CMakeLists.txt); callers pick one with cpu_isa(). The environment
// variable TACQ_CPU_ISA caps the choice, so the tests can exercise every path
// on one machine, lowest first: generic, avx2, avx512 (AVX-512 without the
// BF16 and VNNI extensions, as Skylake-X), avx512_vnni (with VNNI, without
// BF16, as Cascade Lake and Ice Lake); any other value, or none: no cap.
#pragma once

namespace tacq {

enum class CpuIsa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

CpuIsa cpu_isa();              // best ISA of this CPU, capped by TACQ_CPU_ISA
const char* cpu_isa_name(CpuIsa isa);

// AVX-512 BF16 present (Cooper Lake, Sapphire Rapids, Zen 4), cpu_isa() AVX-512 and TACQ_CPU_ISA no cap.
bool cpu_has_avx512_bf16();
// AVX-512 VNNI present (Cascade Lake, Ice Lake and later, Zen 4), cpu_isa() AVX-512 and
// TACQ_CPU_ISA at least avx512_vnni.
bool cpu_has_avx512_vnni();

}  // namespace tacq
