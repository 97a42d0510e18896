// The separable_map CPU per-plane loops for the compiler's baseline instruction set.
#include <algorithm>
#include <cmath>
#include <type_traits>
#define EFFKERNELS_CPU_ISA cpu_baseline
#include "separable_map_impl.h"
