// Symmetric CSR construction from an edge list (see csr.cpp).
#pragma once

#include <cstdint>

#include "buffer.h"

namespace fastleading {

// Compressed sparse rows: row r's columns are col[rowptr[r] .. rowptr[r + 1]).
template <class Col>
struct Csr {
  Buffer<int64_t> rowptr;  // [num_nodes + 1]
  Buffer<Col> col;         // [rowptr[num_nodes]]
};

// Builds the symmetric CSR of the undirected edges src[i] -- dst[i], i < num_edges: every
// edge appears in both rows, self loops and duplicates are dropped, and each row's columns
// are sorted ascending. Runs on up to `num_threads` threads (0: all cores).
// Throws std::out_of_range when an id lies outside [0, num_nodes).
template <class Id, class Col>
Csr<Col> build_csr(const Id* src, const Id* dst, int64_t num_edges, int64_t num_nodes,
                   int num_threads);

}  // namespace fastleading
