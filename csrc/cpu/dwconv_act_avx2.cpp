// The dwconv_act CPU kernels for x86-64 with AVX2 and FMA, chosen at run time when the CPU has them.
// Every header is included before the target pragma, so only the kernels themselves use AVX2.
#include "dwconv_act_kernels.h"

#ifdef EFFKERNELS_CPU_AVX2
#include <vector>
#pragma GCC target("avx2,fma")
#define EFFKERNELS_CPU_ISA cpu_avx2
#include "dwconv_act_impl.h"
#endif
