// The dwconv_act CPU kernels for the compiler's baseline instruction set.
#define EFFKERNELS_CPU_ISA cpu_baseline
#include "dwconv_act_impl.h"
