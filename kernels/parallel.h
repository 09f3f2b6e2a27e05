// Small std::thread helpers shared by the CSR builder and the sampler.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>

namespace fastleading {

// Worker threads to use: `requested` when > 0, else the hardware concurrency.
inline int resolve_threads(int requested) {
  if (requested > 0) return requested;
  // Cached: hardware_concurrency() reads /sys on every call (~10% of a sampled batch).
  static const int hw = std::max(1u, std::thread::hardware_concurrency());
  return hw;
}

// Threads worth starting for `work` items when each thread should get at least `grain`
// of them: starting a thread costs tens of microseconds, which small inputs (a sampled
// batch) cannot amortise.
inline int threads_for(int64_t work, int64_t grain, int max_threads) {
  const int64_t useful = std::max<int64_t>(1, work / std::max<int64_t>(1, grain));
  return static_cast<int>(std::min<int64_t>(useful, std::max(1, max_threads)));
}

// Calls fn(task) for every task in [0, num_tasks) on up to `num_threads` threads. Tasks are
// handed out through an atomic counter, so uneven tasks (rows of a power-law graph) balance.
// fn must not throw: report failures through a flag and raise after this returns.
template <class Fn>
void parallel_tasks(int64_t num_tasks, int num_threads, Fn fn) {
  const int64_t threads = std::min<int64_t>(num_threads, num_tasks);
  if (threads <= 1) {
    for (int64_t t = 0; t < num_tasks; ++t) fn(t);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < num_tasks;) fn(t);
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int64_t i = 1; i < threads; ++i) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // no more threads available: the running ones take the remaining tasks
    }
  }
  worker();
  for (auto& th : pool) th.join();
}

// Half-open bounds of part `p` when [0, n) is cut into `parts` nearly equal ranges.
inline int64_t split_point(int64_t n, int64_t parts, int64_t p) { return n / parts * p + n % parts * p / parts; }

}  // namespace fastleading
