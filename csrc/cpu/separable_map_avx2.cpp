// The separable_map CPU per-plane loops for x86-64 with AVX2 and FMA, chosen at run time when the CPU
// has them. Every header is included before the target pragma, so only the loops themselves use AVX2.
#include "separable_map_kernels.h"

#ifdef EFFKERNELS_CPU_AVX2
#include <algorithm>
#include <cmath>
#include <type_traits>
#pragma GCC target("avx2,fma")
#define EFFKERNELS_CPU_ISA cpu_avx2
#include "separable_map_impl.h"
#endif
