// The portable APPNP row kernel built with AVX2 (CMakeLists.txt sets -mavx2 for this file only;
// appnp.cpp calls it only on CPUs that have AVX2). See appnp_rows.h.
#define FASTLEADING_APPNP_NS appnp_avx2
#include "appnp_rows.h"
