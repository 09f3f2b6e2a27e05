// Python bindings of the native kernels: the module `fastleading._native`.
// Arrays cross the boundary as numpy arrays (no torch headers: the module builds against
// any torch); the Python wrappers in fastleading/graph.py and fastleading/sampler.py
// validate inputs and wrap the results as tensors without copying.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "csr.h"
#include "sampler.h"

namespace nb = nanobind;
using namespace fastleading;

namespace {

template <class T>
using Array = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T>
using NumpyArray = nb::ndarray<nb::numpy, T, nb::ndim<1>>;

// Hands a Buffer to numpy without copying; numpy frees it.
template <class T>
NumpyArray<T> to_numpy(Buffer<T>&& buffer) {
  const size_t size = static_cast<size_t>(buffer.size());
  T* data = buffer.release();
  nb::capsule owner(data, [](void* p) noexcept { std::free(p); });
  return NumpyArray<T>(data, {size}, owner);
}

// Hands a vector to numpy without copying; numpy deletes it.
template <class T>
NumpyArray<T> to_numpy(std::vector<T>&& vector) {
  auto* heap = new std::vector<T>(std::move(vector));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return NumpyArray<T>(heap->data(), {heap->size()}, owner);
}

template <class Id>
nb::tuple build_csr_py(Array<Id> src, Array<Id> dst, int64_t num_nodes, int num_threads) {
  if (src.shape(0) != dst.shape(0)) throw std::invalid_argument("src and dst differ in length");
  const int64_t num_edges = static_cast<int64_t>(src.shape(0));
  // int32 columns halve the memory of every graph with fewer than 2^31 nodes.
  if (num_nodes <= int64_t{std::numeric_limits<int32_t>::max()} + 1) {
    Csr<int32_t> csr;
    {
      nb::gil_scoped_release release;
      csr = build_csr<Id, int32_t>(src.data(), dst.data(), num_edges, num_nodes, num_threads);
    }
    return nb::make_tuple(to_numpy(std::move(csr.rowptr)), to_numpy(std::move(csr.col)));
  }
  Csr<int64_t> csr;
  {
    nb::gil_scoped_release release;
    csr = build_csr<Id, int64_t>(src.data(), dst.data(), num_edges, num_nodes, num_threads);
  }
  return nb::make_tuple(to_numpy(std::move(csr.rowptr)), to_numpy(std::move(csr.col)));
}

template <class Col>
nb::tuple sample_py(Array<int64_t> rowptr, Array<Col> col, Array<int64_t> targets,
                    std::vector<int64_t> fanouts, uint64_t seed, int num_threads) {
  if (rowptr.shape(0) < 1) throw std::invalid_argument("rowptr must have num_nodes + 1 entries");
  Subgraph sub;
  {
    nb::gil_scoped_release release;
    sub = sample_subgraph<Col>(rowptr.data(), col.data(), static_cast<int64_t>(rowptr.shape(0)) - 1,
                               targets.data(), static_cast<int64_t>(targets.shape(0)), fanouts,
                               seed, num_threads);
  }
  return nb::make_tuple(to_numpy(std::move(sub.node_ids)), to_numpy(std::move(sub.csr.rowptr)),
                        to_numpy(std::move(sub.csr.col)), std::move(sub.nodes_per_hop));
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "Native kernels of fastleading: symmetric CSR construction and neighbour sampling.";

  const char* build_csr_doc =
      "build_csr(src, dst, num_nodes, num_threads) -> (rowptr int64 [N+1], col int32|int64 [E])\n\n"
      "Symmetric CSR of the edges src[i] -- dst[i] (int32 or int64 [M], C-contiguous): both\n"
      "directions, no self loops, no duplicates, columns sorted in each row. col is int32 when\n"
      "num_nodes <= 2**31. num_threads=0 uses every core. Raises IndexError for ids outside\n"
      "[0, num_nodes). Releases the GIL.";
  m.def("build_csr", &build_csr_py<int64_t>, nb::arg("src"), nb::arg("dst"), nb::arg("num_nodes"),
        nb::arg("num_threads") = 0, build_csr_doc);
  m.def("build_csr", &build_csr_py<int32_t>, nb::arg("src"), nb::arg("dst"), nb::arg("num_nodes"),
        nb::arg("num_threads") = 0);

  const char* sample_doc =
      "sample(rowptr, col, targets, fanouts, seed, num_threads) -> (node_ids, rowptr, col, nodes_per_hop)\n\n"
      "Multi-hop neighbour sampling without replacement around the unique int64 targets [B]\n"
      "of the CSR graph (rowptr int64 [N+1], col int32|int64 [E]). Returns the subgraph's\n"
      "global node ids int64 [n] (targets first, then each hop's new nodes), its symmetric CSR\n"
      "over local ids (rowptr int64 [n+1], col int64 [E']) and the node count per hop.\n"
      "Deterministic in seed, independent of num_threads. Releases the GIL.";
  m.def("sample", &sample_py<int32_t>, nb::arg("rowptr"), nb::arg("col"), nb::arg("targets"),
        nb::arg("fanouts"), nb::arg("seed"), nb::arg("num_threads") = 0, sample_doc);
  m.def("sample", &sample_py<int64_t>, nb::arg("rowptr"), nb::arg("col"), nb::arg("targets"),
        nb::arg("fanouts"), nb::arg("seed"), nb::arg("num_threads") = 0);
}
