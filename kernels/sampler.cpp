// Multi-hop neighbour sampling. Each hop has three steps:
//   1. draw the neighbour positions of every frontier node (parallel over frontier nodes);
//   2. relabel the drawn neighbours to local ids (sequential, first appearance order) with an
//      open-addressing hash map, so nothing of size num_nodes is touched per batch;
//   3. record the edges; at the end build_csr symmetrises and deduplicates them (and, for
//      importance-weighted propagation, directed_csr keeps who drew whom, and its transpose).
// A [10, 5] batch of 128 targets draws ~7.7k neighbours and runs on one thread; threads start
// only for frontiers large enough to pay for them.

#include "sampler.h"

#include <algorithm>
#include <stdexcept>

#include "parallel.h"

namespace fastleading {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr int64_t kMinDrawsPerThread = int64_t{1} << 13;
constexpr int64_t kNodesPerTask = 512;
// Up to this many draws Floyd's algorithm checks for repeats by a linear scan; above it,
// by a hash set. Both give the same draws, only the cost differs.
constexpr int64_t kLinearScanMax = 32;

constexpr int64_t kCacheLine = 64;

inline void prefetch(const void* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

// SplitMix64's output function: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t state) : state_(state) {}
  uint64_t next() { return mix64(state_ += kGolden); }
  // Uniform in [0, bound), unbiased (Lemire's multiply-and-reject).
  uint64_t below(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

 private:
  uint64_t state_;
};

// The random stream of `node` at `hop`: a function of (seed, hop, node) only.
inline Rng node_rng(uint64_t seed, int64_t hop, int64_t node) {
  return Rng(mix64(mix64(mix64(seed) + static_cast<uint64_t>(hop)) + static_cast<uint64_t>(node)));
}

// Power-of-two table size for `count` keys at load factor <= 1/2, as log2.
inline int table_bits(int64_t count) {
  int bits = 4;
  while ((int64_t{1} << bits) < 2 * count) ++bits;
  return bits;
}

// Fibonacci hashing: the top `bits` bits of key * 2^64 / phi.
inline size_t hash_slot(int64_t key, int bits) {
  return static_cast<size_t>((static_cast<uint64_t>(key) * kGolden) >> (64 - bits));
}

// Set of int64 >= 0 with linear probing, cleared between uses.
class ProbeSet {
 public:
  void reset(int64_t expected) {
    bits_ = table_bits(expected);
    slots_.assign(size_t{1} << bits_, -1);
    mask_ = slots_.size() - 1;
  }
  // Inserts x; returns false when it was already there.
  bool insert(int64_t x) {
    for (size_t i = hash_slot(x, bits_);; i = (i + 1) & mask_) {
      if (slots_[i] == x) return false;
      if (slots_[i] < 0) {
        slots_[i] = x;
        return true;
      }
    }
  }

 private:
  std::vector<int64_t> slots_;
  size_t mask_ = 0;
  int bits_ = 0;
};

// Writes k distinct positions of [0, d), uniform over all k-subsets, to out[0..k) (Floyd's
// algorithm: k draws and no O(d) scratch, which matters for hubs of degree ~20k).
void draw_positions(Rng& rng, int64_t d, int64_t k, int64_t* out, ProbeSet& seen) {
  if (k <= kLinearScanMax) {
    for (int64_t c = 0, j = d - k; j < d; ++c, ++j) {
      int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j) + 1));
      if (std::find(out, out + c, t) != out + c) t = j;  // j itself was never drawable before
      out[c] = t;
    }
    return;
  }
  seen.reset(k);
  for (int64_t c = 0, j = d - k; j < d; ++c, ++j) {
    int64_t t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j) + 1));
    if (!seen.insert(t)) {
      t = j;
      seen.insert(t);
    }
    out[c] = t;
  }
}

// Global id -> local id, open addressing with linear probing (load factor <= 1/2).
class IdMap {
 public:
  // Makes room for `count` keys in total without further growth.
  void reserve(int64_t count) {
    if (!keys_.empty() && static_cast<size_t>(2 * count) <= keys_.size()) return;
    bits_ = table_bits(count);
    std::vector<int64_t> old_keys(size_t{1} << bits_, -1), old_vals(size_t{1} << bits_);
    old_keys.swap(keys_);
    old_vals.swap(vals_);
    mask_ = keys_.size() - 1;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] >= 0) insert(old_keys[i], old_vals[i]);
    }
  }
  // The value stored for `key`, or `value` after storing it when `key` is new.
  int64_t insert(int64_t key, int64_t value) {
    for (size_t i = hash_slot(key, bits_);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return vals_[i];
      if (keys_[i] < 0) {
        keys_[i] = key;
        vals_[i] = value;
        return value;
      }
    }
  }

 private:
  std::vector<int64_t> keys_, vals_;
  size_t mask_ = 0;
  int bits_ = 0;
};

// CSR of the directed edges src[e] -> dst[e] as given (duplicates kept: a graph with repeated
// neighbour entries counts them, as the propagation does), columns sorted within rows. A row's
// columns come out in the order of the edges: already sorted when `dst` is non-decreasing
// along the edges of each row (the transpose of edges listed by non-decreasing source), else
// sorted here (`sort_rows`).
Csr<int64_t> directed_csr(const std::vector<int64_t>& src, const std::vector<int64_t>& dst,
                          int64_t num_nodes, bool sort_rows) {
  const int64_t num_edges = static_cast<int64_t>(src.size());
  Csr<int64_t> out{Buffer<int64_t>(num_nodes + 1), Buffer<int64_t>(num_edges)};
  int64_t* rowptr = out.rowptr.data();
  std::fill(rowptr, rowptr + num_nodes + 1, int64_t{0});
  for (int64_t e = 0; e < num_edges; ++e) ++rowptr[src[e] + 1];
  for (int64_t i = 0; i < num_nodes; ++i) rowptr[i + 1] += rowptr[i];
  std::vector<int64_t> cursor(rowptr, rowptr + num_nodes);
  for (int64_t e = 0; e < num_edges; ++e) out.col[cursor[src[e]]++] = dst[e];
  if (sort_rows) {
    for (int64_t i = 0; i < num_nodes; ++i) std::sort(out.col.data() + rowptr[i], out.col.data() + rowptr[i + 1]);
  }
  return out;
}

}  // namespace

template <class Col>
Subgraph sample_subgraph(const int64_t* rowptr, const Col* col, int64_t num_nodes,
                         const int64_t* targets, int64_t num_targets,
                         const std::vector<int64_t>& fanouts, uint64_t seed, int num_threads,
                         bool with_draws) {
  const int max_threads = resolve_threads(num_threads);
  Subgraph out;
  std::vector<int64_t>& nodes = out.node_ids;
  IdMap local_id;
  local_id.reserve(num_targets);
  nodes.reserve(num_targets);
  for (int64_t i = 0; i < num_targets; ++i) {
    const int64_t t = targets[i];
    if (t < 0 || t >= num_nodes) throw std::out_of_range("target node id outside [0, num_nodes)");
    if (local_id.insert(t, i) != i) throw std::invalid_argument("targets contain a node twice");
    nodes.push_back(t);
  }
  out.nodes_per_hop.push_back(num_targets);

  std::vector<int64_t> edge_src, edge_dst, offset, drawn;
  int64_t frontier_begin = 0, frontier_end = num_targets;
  for (size_t hop = 0; hop < fanouts.size(); ++hop) {
    const int64_t fanout = fanouts[hop];
    const int64_t frontier = frontier_end - frontier_begin;
    auto draws_of = [&](int64_t u) {
      const int64_t degree = rowptr[u + 1] - rowptr[u];
      return fanout < 0 ? degree : std::min(degree, fanout);
    };
    offset.assign(frontier + 1, 0);
    for (int64_t i = 0; i < frontier; ++i) offset[i + 1] = offset[i] + draws_of(nodes[frontier_begin + i]);
    const int64_t total = offset[frontier];
    if (with_draws) {
      out.weight.resize(frontier_end);
      for (int64_t i = 0; i < frontier; ++i) {
        const int64_t u = nodes[frontier_begin + i], k = offset[i + 1] - offset[i];
        out.weight[frontier_begin + i] = k > 0 ? static_cast<double>(rowptr[u + 1] - rowptr[u]) / k : 0.0;
      }
    }

    // Step 1: draw (global ids of) neighbours, frontier node i's at drawn[offset[i]..).
    // First the positions of every node of the task, prefetching the column entries they
    // point to, then the gather: the cache misses of a task's rows overlap instead of
    // queueing one after another.
    drawn.resize(total);
    const int64_t tasks = (frontier + kNodesPerTask - 1) / kNodesPerTask;
    parallel_tasks(tasks, threads_for(total, kMinDrawsPerThread, max_threads), [&](int64_t task) {
      ProbeSet seen;
      const int64_t lo = task * kNodesPerTask, hi = std::min(frontier, lo + kNodesPerTask);
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t u = nodes[frontier_begin + i];
        const int64_t degree = rowptr[u + 1] - rowptr[u];
        const int64_t k = offset[i + 1] - offset[i];
        const Col* neighbours = col + rowptr[u];
        if (k == degree) {
          for (int64_t c = 0; c < degree; c += kCacheLine / sizeof(Col)) prefetch(neighbours + c);
          continue;
        }
        int64_t* dst = drawn.data() + offset[i];
        Rng rng = node_rng(seed, static_cast<int64_t>(hop), u);
        draw_positions(rng, degree, k, dst, seen);
        for (int64_t c = 0; c < k; ++c) prefetch(neighbours + dst[c]);
      }
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t u = nodes[frontier_begin + i];
        const int64_t degree = rowptr[u + 1] - rowptr[u];
        const int64_t k = offset[i + 1] - offset[i];
        const Col* neighbours = col + rowptr[u];
        int64_t* dst = drawn.data() + offset[i];
        if (k == degree) {
          std::copy(neighbours, neighbours + degree, dst);
        } else {
          for (int64_t c = 0; c < k; ++c) dst[c] = neighbours[dst[c]];
        }
      }
    });

    // Step 2 + 3: local ids in order of first appearance, and the edges.
    local_id.reserve(static_cast<int64_t>(nodes.size()) + total);
    edge_src.reserve(edge_src.size() + total);
    edge_dst.reserve(edge_dst.size() + total);
    for (int64_t i = 0; i < frontier; ++i) {
      const int64_t lu = frontier_begin + i;
      const int64_t u = nodes[lu];
      for (int64_t j = offset[i]; j < offset[i + 1]; ++j) {
        const int64_t v = drawn[j];
        if (v == u) continue;  // a self loop in the input graph is no sampled edge
        const int64_t next = static_cast<int64_t>(nodes.size());
        const int64_t lv = local_id.insert(v, next);
        if (lv == next) {
          nodes.push_back(v);
          if (hop + 1 < fanouts.size()) prefetch(rowptr + v);  // read when v is expanded next hop
        }
        edge_src.push_back(lu);
        edge_dst.push_back(lv);
      }
    }
    frontier_begin = frontier_end;
    frontier_end = static_cast<int64_t>(nodes.size());
    out.nodes_per_hop.push_back(frontier_end - frontier_begin);
  }
  const int64_t n = static_cast<int64_t>(nodes.size());
  out.csr = build_csr<int64_t, int64_t>(edge_src.data(), edge_dst.data(),
                                        static_cast<int64_t>(edge_src.size()), n, num_threads);
  if (with_draws) {
    // The edges as drawn (u -> v: u drew v); the nodes of the last hop draw nothing.
    // edge_src is non-decreasing (frontier nodes in order, hop after hop): the transpose's rows
    // come out sorted, the draws' rows (in draw order) are sorted.
    out.weight.resize(n, 0.0);
    out.draws = directed_csr(edge_src, edge_dst, n, /*sort_rows=*/true);
    out.draws_t = directed_csr(edge_dst, edge_src, n, /*sort_rows=*/false);
  }
  return out;
}

template Subgraph sample_subgraph<int32_t>(const int64_t*, const int32_t*, int64_t, const int64_t*,
                                           int64_t, const std::vector<int64_t>&, uint64_t, int, bool);
template Subgraph sample_subgraph<int64_t>(const int64_t*, const int64_t*, int64_t, const int64_t*,
                                           int64_t, const std::vector<int64_t>&, uint64_t, int, bool);

}  // namespace fastleading
