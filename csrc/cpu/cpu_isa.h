// The instruction sets the CPU kernels are compiled for: the compiler's baseline everywhere, and on
// x86-64 with GCC or Clang also AVX2 + FMA, chosen at run time when the CPU has them.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define EFFKERNELS_CPU_AVX2 1
#endif

namespace effkernels {

// Whether to run the AVX2 build: the CPU has AVX2 and FMA, and EFFKERNELS_CPU_ISA is not "baseline"
// (which the tests set to run the baseline build on any CPU). Read once per process.
inline bool use_avx2() {
#ifdef EFFKERNELS_CPU_AVX2
  static const bool chosen = [] {
    const char* isa = std::getenv("EFFKERNELS_CPU_ISA");
    if (isa != nullptr && std::strcmp(isa, "baseline") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return chosen;
#else
  return false;
#endif
}

}  // namespace effkernels
