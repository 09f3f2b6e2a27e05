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

  // Column passes (see appnp.cpp): a pass gathers, for every row, the next neighbours in
  // CSR order while they are < col_limit, continuing where the previous pass stopped
  // (cursor[r]), and keeps the fp32 sums in acc between passes. The first pass starts with
  // the self loop, the last one (col_limit = num_rows) takes every remaining neighbour and
  // applies the epilogue. With one pass (first and last) cursor and acc are unused.
  bool first_pass = true;
  bool last_pass = true;
  uint64_t col_floor = 0;  // the previous pass's col_limit: prefetches skip ids outside [floor, limit)
  uint64_t col_limit = 0;
  int64_t* cursor = nullptr;  // [num_rows]
  float* acc = nullptr;       // [num_rows, num_cols], row stride acc_stride
  int64_t acc_stride = 0;
};

// The x row to prefetch for the neighbour id `ahead` (read `prefetch_distance` edges ahead in
// col): itself when this pass will gather it, else `fallback` (a row already in cache), so a
// lookahead that crosses into rows of other passes fetches nothing (no branch: the id is random).
static inline int64_t prefetch_row(const AppnpProblem& p, uint64_t ahead, int64_t fallback) {
  return ahead - p.col_floor < p.col_limit - p.col_floor ? static_cast<int64_t>(ahead) : fallback;
}

// The edges [begin, end) of row r that this pass gathers (updates the cursor). Static: each
// instruction-set build of the row kernels gets its own copy (no symbol merged across them).
static inline void pass_edges(const AppnpProblem& p, const void* col, int64_t r, int64_t* begin, int64_t* end) {
  *begin = p.first_pass ? p.rowptr[r] : p.cursor[r];
  *end = p.rowptr[r + 1];
  if (p.last_pass) return;
  int64_t e = *begin;
  if (p.col_int64) {
    const int64_t* c = static_cast<const int64_t*>(col);
    while (e < *end && static_cast<uint64_t>(c[e]) < p.col_limit) ++e;
  } else {
    const int32_t* c = static_cast<const int32_t*>(col);
    while (e < *end && static_cast<uint64_t>(static_cast<int64_t>(c[e])) < p.col_limit) ++e;
  }
  *end = e;
  p.cursor[r] = e;
}

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
// p.prefetch_distance < 0 picks a default for the row width; passes < 1 picks the number of
// column passes from the size of x (1 when x fits a cache share). Rows are cut into chunks of
// about equal edge count; every row is computed by one thread in a fixed order, so the
// result is the same for any thread count. Throws std::invalid_argument for a malformed
// rowptr or an unknown isa and std::out_of_range for column indices outside [0, num_rows).
// Returns the number of threads it ran on and the number of column passes.
struct AppnpRun {
  int threads;
  int passes;
};
AppnpRun appnp_step(AppnpProblem p, int num_threads, const std::string& isa, int passes = 0);

}  // namespace fastleading
