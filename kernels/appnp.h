// Fused APPNP step on the CPU (see appnp.cpp): out = (1-a) Â x + a x_in with
// Â = D̃^{-1/2} (A + I) D̃^{-1/2}, in one pass over the CSR graph.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastleading {

enum class FeatureType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// One step's operands. Feature matrices are [num_rows, num_cols] with unit stride along the
// columns and a row stride in elements; x, x_in and out share `type`.
struct AppnpProblem {
  const int64_t* rowptr = nullptr;  // [num_rows + 1], validated by appnp_step
  const void* col = nullptr;        // int32 or int64 [num_edges], no self loops
  bool col_int64 = false;
  int64_t num_edges = 0;  // length of col; rowptr[num_rows] may not exceed it
  const float* dinv = nullptr;  // [num_rows] 1/sqrt(deg+1); never null inside the row kernels
  const void* x = nullptr;
  int64_t x_stride = 0;
  const void* x_in = nullptr;
  int64_t x_in_stride = 0;
  void* out = nullptr;
  int64_t out_stride = 0;
  int64_t num_rows = 0;
  int64_t num_cols = 0;
  FeatureType type = FeatureType::kF32;
  // The scalars of the epilogue, rounded to fp32 the way the PyTorch reference rounds them:
  // out = ((1-a) * dinv[i]) * agg + a * x_in, every product and sum rounded separately.
  float one_minus_alpha = 0.f;
  float alpha = 0.f;
  // Edges the gather runs ahead of itself with software prefetches (0: none).
  int64_t prefetch_distance = 0;
};

// Computes rows [row_begin, row_end) of out; the edges of those rows are already checked.
// Returns false when a column index lies outside [0, num_rows) (nothing is read for it).
using AppnpRowsFn = bool (*)(const AppnpProblem& p, int64_t row_begin, int64_t row_end);

// The row kernels, one per instruction set. generic: plain C++, auto-vectorised for the
// baseline ISA; avx2: the same source built for AVX2; avx512: AVX-512F/BW/VL intrinsics.
namespace appnp_generic {
bool appnp_rows(const AppnpProblem& p, int64_t row_begin, int64_t row_end);
}
#if defined(FASTLEADING_APPNP_X86)
namespace appnp_avx2 {
bool appnp_rows(const AppnpProblem& p, int64_t row_begin, int64_t row_end);
}
namespace appnp_avx512 {
bool appnp_rows(const AppnpProblem& p, int64_t row_begin, int64_t row_end);
}
#endif

// Instruction sets this build can run on this machine, best first ("avx512", "avx2", "generic").
std::vector<std::string> appnp_isas();

// Runs the step on up to `num_threads` threads (0: all cores) with the row kernel of `isa`
// ("auto": the best of appnp_isas()). p.dinv may be null: 1/sqrt(deg+1) is computed first.
// p.prefetch_distance < 0 picks a default for the row width. Rows are cut into chunks of
// about equal edge count; every row is computed by one thread in a fixed order, so the
// result is the same for any thread count. Throws std::invalid_argument for a malformed
// rowptr or an unknown isa and std::out_of_range for column indices outside [0, num_rows).
// Returns the number of threads it ran on.
int appnp_step(AppnpProblem p, int num_threads, const std::string& isa);

}  // namespace fastleading
