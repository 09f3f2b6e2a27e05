// The portable APPNP row kernel, built for the baseline instruction set (see appnp_rows.h).
#define FASTLEADING_APPNP_NS appnp_generic
#include "appnp_rows.h"
