// Multi-hop neighbour sampling without replacement (see sampler.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "csr.h"

namespace fastleading {

struct Subgraph {
  // Global ids of the subgraph's nodes; local id = position. The targets come first (in the
  // given order), then the nodes first reached at hop 1, hop 2, ...
  std::vector<int64_t> node_ids;
  // The sampled edges over local ids, symmetric, without duplicates or self loops.
  Csr<int64_t> csr;
  // [num_targets, new nodes at hop 1, ..., new nodes at hop H]; sums to node_ids.size().
  std::vector<int64_t> nodes_per_hop;
  // Only when sampled with `with_draws` (importance-weighted propagation), over local ids:
  // weight[i] = degree / k for a node that drew k = min(degree, fanout) neighbour positions,
  // 0 for a node that drew nothing (the last hop's). Row i of `draws` lists the nodes i drew
  // (without a self loop; empty for the last hop's nodes); columns sorted. `draws_t` is its
  // transpose.
  std::vector<double> weight;
  Csr<int64_t> draws, draws_t;
};

// Samples `fanouts.size()` hops around `targets` in the graph (rowptr [num_nodes + 1],
// col [E]). At hop h every node first reached at hop h - 1 (the targets for h = 1) draws
// min(degree, fanouts[h-1]) distinct neighbours uniformly (all of them when the fanout is
// negative). The draw of node v at hop h depends only on (seed, h, v): the result is the same
// for any thread count. Throws std::out_of_range for a target outside [0, num_nodes) and
// std::invalid_argument for a repeated target. `with_draws` also fills weight, draws and
// draws_t (the same sample: the draws do not depend on it).
template <class Col>
Subgraph sample_subgraph(const int64_t* rowptr, const Col* col, int64_t num_nodes,
                         const int64_t* targets, int64_t num_targets,
                         const std::vector<int64_t>& fanouts, uint64_t seed, int num_threads,
                         bool with_draws = false);

}  // namespace fastleading
