// Fused APPNP step on the CPU: out = (1-a) Â x + a x_in, Â = D̃^{-1/2} (A + I) D̃^{-1/2}.
//
// One pass over the CSR graph: every output row is computed by one thread, which gathers
// the row's neighbours into an fp32 accumulator (self loop first, then the neighbours in
// CSR order), then applies the normalisation and the axpy and writes the row in x's dtype.
// No Â, no edge weights and no Âx are materialised; x_in and out are streamed once.
//
// Load balance: the rows are cut into contiguous chunks of about equal cost, counting an
// edge as 1 and a row as kRowCost (power-law graphs put ~10k edges on a hub and one on most
// rows), several chunks per thread, handed out through an atomic counter. Where a row is
// computed does not change how, so the result is bitwise the same for any thread count.
//
// Column passes: once x outgrows the caches, every gather misses them. Cutting the
// neighbour ids into `passes` ranges makes each pass gather from a 1/passes slice of x, at
// the price of keeping the fp32 sums between passes (in out when it is fp32, else in a
// scratch): (passes - 1) extra reads and writes of N x C x 4 bytes. A pass continues each
// row where the previous one stopped, so every row still sums in CSR order and the result
// does not depend on the number of passes (rows need not even be sorted: the last pass
// takes whatever is left).
//
// The row kernels live in appnp_rows.h (portable, built twice: baseline ISA and AVX2) and
// appnp_avx512.cpp (intrinsics); the best one the CPU supports runs unless one is named.

#include "appnp.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "buffer.h"
#include "parallel.h"

namespace fastleading {
namespace {

constexpr int64_t kRowCost = 2;        // a row's self loop, x_in and out, in edge gathers
constexpr int64_t kTasksPerThread = 8;  // chunks per thread, for dynamic balance
// Threads start only when each gets this many feature-vector gathers (16 fp32 lanes each):
// starting one costs tens of microseconds.
constexpr int64_t kMinVectorGathersPerThread = int64_t{1} << 17;
// Software prefetches aim at about this many cache lines in flight per thread.
constexpr int64_t kPrefetchLines = 64;
// Column passes: about this many bytes of x per pass, at most kMaxPasses passes. On the
// 2-vCPU Sapphire Rapids VM this was tuned on (300 MB L3 shared with other tenants), 2-3 passes
// cut the process CPU time of a step on a 256 MB x by ~15%; on a 94 MB x they helped only while
// other jobs loaded the machine and cost ~15% when it was quiet. Ad-hoc measurements on a busy
// machine: a rough choice; `passes` overrides it.
constexpr int64_t kPassBytes = int64_t{128} << 20;
constexpr int64_t kMaxPasses = 4;

bool have_avx512() {
#if defined(FASTLEADING_APPNP_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

bool have_avx2() {
#if defined(FASTLEADING_APPNP_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

AppnpRowsFn row_kernel(const std::string& isa) {
  const std::vector<std::string> available = appnp_isas();
  const std::string& chosen = isa == "auto" ? available.front() : isa;
  bool supported = false;
  for (const auto& a : available) supported |= a == chosen;
  if (!supported) {
    std::string names;
    for (const auto& a : available) names += (names.empty() ? "" : ", ") + a;
    throw std::invalid_argument("appnp_step: isa '" + isa + "' is not available here (auto, " + names + ")");
  }
#if defined(FASTLEADING_APPNP_X86)
  if (chosen == "avx512") return &appnp_avx512::appnp_rows;
  if (chosen == "avx2") return &appnp_avx2::appnp_rows;
#endif
  return &appnp_generic::appnp_rows;
}

int64_t element_size(FeatureType type) { return type == FeatureType::kF32 ? 4 : 2; }

}  // namespace

std::vector<std::string> appnp_isas() {
  std::vector<std::string> isas;
  if (have_avx512()) isas.emplace_back("avx512");
  if (have_avx2()) isas.emplace_back("avx2");
  isas.emplace_back("generic");
  return isas;
}

AppnpRun appnp_step(AppnpProblem p, int num_threads, const std::string& isa, int passes) {
  const AppnpRowsFn rows = row_kernel(isa);
  const int64_t n = p.num_rows;
  if (n < 0 || p.num_cols < 0) throw std::invalid_argument("appnp_step: negative shape");
  // rowptr must be non-decreasing inside [0, E]: the kernels trust it.
  const int64_t* rowptr = p.rowptr;
  if (rowptr[0] < 0 || rowptr[n] > p.num_edges) {
    throw std::invalid_argument("appnp_step: rowptr reaches outside col");
  }
  for (int64_t r = 0; r < n; ++r) {
    if (rowptr[r + 1] < rowptr[r]) throw std::invalid_argument("appnp_step: rowptr is not non-decreasing");
  }
  if (n == 0 || p.num_cols == 0) return {1, 1};

  Buffer<float> own_dinv;
  if (p.dinv == nullptr) {  // 1/sqrt(deg+1), as gcn_dinv (fp32 sqrt and division are exact-rounded)
    own_dinv = Buffer<float>(n);
    for (int64_t r = 0; r < n; ++r) own_dinv[r] = 1.0f / std::sqrt(static_cast<float>(rowptr[r + 1] - rowptr[r] + 1));
    p.dinv = own_dinv.data();
  }
  const int64_t width = p.num_cols < 256 ? p.num_cols : 256;
  const int64_t lines = (width * element_size(p.type) + 63) / 64 + 1;
  if (p.prefetch_distance < 0) p.prefetch_distance = std::max<int64_t>(4, kPrefetchLines / lines);

  // cost(r) = edges before row r + kRowCost * r, non-decreasing; chunk t is the rows whose
  // cost lies in [total * t / tasks, total * (t + 1) / tasks).
  auto cost = [&](int64_t r) { return (rowptr[r] - rowptr[0]) + kRowCost * r; };
  const int64_t total = cost(n);
  const int64_t vectors = (p.num_cols + 15) / 16;
  const int threads = threads_for(total * vectors, kMinVectorGathersPerThread, resolve_threads(num_threads));
  const int64_t tasks = threads <= 1 ? 1 : std::min<int64_t>(n, int64_t{threads} * kTasksPerThread);
  std::vector<int64_t> bounds(tasks + 1);
  bounds[0] = 0;
  bounds[tasks] = n;
  for (int64_t t = 1; t < tasks; ++t) {
    const int64_t target = static_cast<int64_t>(static_cast<double>(total) * t / tasks);
    int64_t lo = bounds[t - 1], hi = n;  // first row with cost >= target
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (cost(mid) < target) lo = mid + 1; else hi = mid;
    }
    bounds[t] = lo;
  }
  if (passes < 1) {
    const int64_t x_bytes = n * p.num_cols * element_size(p.type);
    passes = static_cast<int>(std::clamp<int64_t>((x_bytes + kPassBytes - 1) / kPassBytes, 1, kMaxPasses));
  }
  passes = static_cast<int>(std::min<int64_t>(passes, n));
  Buffer<int64_t> cursor;
  Buffer<float> scratch;
  if (passes > 1) {
    cursor = Buffer<int64_t>(n);
    p.cursor = cursor.data();
    if (p.type == FeatureType::kF32) {  // out holds the sums until the last pass overwrites them
      p.acc = static_cast<float*>(p.out);
      p.acc_stride = p.out_stride;
    } else {
      scratch = Buffer<float>(n * p.num_cols);
      p.acc = scratch.data();
      p.acc_stride = p.num_cols;
    }
  }
  std::vector<char> bad(tasks, 0);
  for (int s = 0; s < passes; ++s) {
    AppnpProblem q = p;
    q.first_pass = s == 0;
    q.last_pass = s == passes - 1;
    q.col_floor = static_cast<uint64_t>(split_point(n, passes, s));
    q.col_limit = static_cast<uint64_t>(split_point(n, passes, s + 1));
    parallel_tasks(tasks, threads, [&](int64_t t) {
      if (bounds[t] < bounds[t + 1] && !rows(q, bounds[t], bounds[t + 1])) bad[t] = 1;
    });
  }
  for (char b : bad) {
    if (b) throw std::out_of_range("appnp_step: col has entries outside [0, num_rows)");
  }
  return {threads, passes};
}

}  // namespace fastleading
