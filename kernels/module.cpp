// Python bindings of the native kernels: the module `fastleading._native`.
// Arrays cross the boundary as numpy arrays (no torch headers: the module builds against
// any torch); the Python wrappers in fastleading/graph.py and fastleading/sampler.py
// validate inputs and wrap the results as tensors without copying. appnp_step takes torch
// tensors directly (through DLPack, bf16 included) and writes into the given `out`; its
// wrapper is fastleading.ops.appnp_step.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "appnp.h"
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
                    std::vector<int64_t> fanouts, uint64_t seed, int num_threads, bool draws) {
  if (rowptr.shape(0) < 1) throw std::invalid_argument("rowptr must have num_nodes + 1 entries");
  Subgraph sub;
  {
    nb::gil_scoped_release release;
    sub = sample_subgraph<Col>(rowptr.data(), col.data(), static_cast<int64_t>(rowptr.shape(0)) - 1,
                               targets.data(), static_cast<int64_t>(targets.shape(0)), fanouts,
                               seed, num_threads, draws);
  }
  if (!draws) {
    return nb::make_tuple(to_numpy(std::move(sub.node_ids)), to_numpy(std::move(sub.csr.rowptr)),
                          to_numpy(std::move(sub.csr.col)), std::move(sub.nodes_per_hop));
  }
  return nb::make_tuple(to_numpy(std::move(sub.node_ids)), to_numpy(std::move(sub.csr.rowptr)),
                        to_numpy(std::move(sub.csr.col)), std::move(sub.nodes_per_hop),
                        to_numpy(std::move(sub.weight)), to_numpy(std::move(sub.draws.rowptr)),
                        to_numpy(std::move(sub.draws.col)), to_numpy(std::move(sub.draws_t.rowptr)),
                        to_numpy(std::move(sub.draws_t.col)));
}

using AnyVector = nb::ndarray<nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Matrix = nb::ndarray<nb::ndim<2>, nb::device::cpu>;

FeatureType feature_type(const Matrix& a, const char* name) {
  const nb::dlpack::dtype dt = a.dtype();
  if (dt == nb::dtype<float>()) return FeatureType::kF32;
  if (dt.lanes == 1 && dt.bits == 16) {
    if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat)) return FeatureType::kBF16;
    if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float)) return FeatureType::kF16;
  }
  throw std::invalid_argument(std::string("appnp_step: ") + name + " must be float32, bfloat16 or float16");
}

int64_t row_stride(const Matrix& a, const char* name) {
  if (a.shape(1) > 1 && a.stride(1) != 1) {
    throw std::invalid_argument(std::string("appnp_step: ") + name + " must have unit stride along its last dim");
  }
  return a.stride(0);
}

nb::tuple appnp_step_py(Array<int64_t> rowptr, AnyVector col, Matrix x, Matrix x_in, double alpha, Matrix out,
                   std::optional<Array<float>> dinv, int num_threads, const std::string& isa,
                   int64_t prefetch_distance, int passes) {
  AppnpProblem p;
  p.num_rows = static_cast<int64_t>(x.shape(0));
  p.num_cols = static_cast<int64_t>(x.shape(1));
  if (rowptr.shape(0) != x.shape(0) + 1) throw std::invalid_argument("appnp_step: rowptr must have N + 1 entries");
  for (const Matrix* a : {&x_in, &out}) {
    if (a->shape(0) != x.shape(0) || a->shape(1) != x.shape(1)) {
      throw std::invalid_argument("appnp_step: x, x_in and out differ in shape");
    }
  }
  p.type = feature_type(x, "x");
  if (feature_type(x_in, "x_in") != p.type || feature_type(out, "out") != p.type) {
    throw std::invalid_argument("appnp_step: x, x_in and out differ in dtype");
  }
  if (col.dtype() == nb::dtype<int64_t>()) {
    p.col_int64 = true;
  } else if (col.dtype() != nb::dtype<int32_t>()) {
    throw std::invalid_argument("appnp_step: col must be int32 or int64");
  }
  if (dinv && dinv->shape(0) != x.shape(0)) throw std::invalid_argument("appnp_step: dinv must have N entries");
  p.rowptr = rowptr.data();
  p.col = col.data();
  p.num_edges = static_cast<int64_t>(col.shape(0));
  p.dinv = dinv ? dinv->data() : nullptr;
  p.x = x.data();
  p.x_stride = row_stride(x, "x");
  p.x_in = x_in.data();
  p.x_in_stride = row_stride(x_in, "x_in");
  p.out = out.data();
  p.out_stride = row_stride(out, "out");
  // Rounded to fp32 as the PyTorch reference's tensor-scalar products round them.
  p.one_minus_alpha = static_cast<float>(1.0 - alpha);
  p.alpha = static_cast<float>(alpha);
  p.prefetch_distance = prefetch_distance;
  AppnpRun run;
  {
    nb::gil_scoped_release release;
    run = appnp_step(p, num_threads, isa, passes);
  }
  return nb::make_tuple(run.threads, run.passes);
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "Native kernels of fastleading: symmetric CSR construction, neighbour sampling, fused APPNP step.";

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
      "sample(rowptr, col, targets, fanouts, seed, num_threads, draws=False) -> (node_ids, rowptr, col, nodes_per_hop)\n\n"
      "Multi-hop neighbour sampling without replacement around the unique int64 targets [B]\n"
      "of the CSR graph (rowptr int64 [N+1], col int32|int64 [E]). Returns the subgraph's\n"
      "global node ids int64 [n] (targets first, then each hop's new nodes), its symmetric CSR\n"
      "over local ids (rowptr int64 [n+1], col int64 [E']) and the node count per hop.\n"
      "draws=True appends (weight [n], draw_rowptr, draw_col, draw_rowptr_t, draw_col_t): float64\n"
      "degree / draws of each node (0 when it drew nothing), then the directed CSR of who drew\n"
      "whom (the last hop's rows empty) and its transpose, int64.\n"
      "Deterministic in seed, independent of num_threads. Releases the GIL.";
  m.def("sample", &sample_py<int32_t>, nb::arg("rowptr"), nb::arg("col"), nb::arg("targets"),
        nb::arg("fanouts"), nb::arg("seed"), nb::arg("num_threads") = 0, nb::arg("draws") = false, sample_doc);
  m.def("sample", &sample_py<int64_t>, nb::arg("rowptr"), nb::arg("col"), nb::arg("targets"),
        nb::arg("fanouts"), nb::arg("seed"), nb::arg("num_threads") = 0, nb::arg("draws") = false);

  const char* appnp_doc =
      "appnp_step(rowptr, col, x, x_in, alpha, out, dinv=None, num_threads=0, isa='auto', prefetch=-1, passes=0)\n"
      "    -> (threads, passes)\n\n"
      "out = (1-alpha) * Â x + alpha * x_in with Â = D̃^{-1/2}(A+I)D̃^{-1/2}, in one pass over the CSR\n"
      "graph (rowptr int64 [N+1], col int32|int64 [E], no self loops). x, x_in, out: [N, C] CPU arrays\n"
      "(torch tensors through DLPack) of one dtype, float32/bfloat16/float16, unit stride along C;\n"
      "out is written in place and must not overlap x or x_in. dinv: float32 [N] 1/sqrt(deg+1),\n"
      "computed when None. Accumulates in fp32 in the PyTorch reference's order; the result is\n"
      "bitwise the same for any num_threads (0: every core) and any isa ('auto' = the first of\n"
      "appnp_isas()). prefetch: edges the gather prefetches ahead (-1: by row width, 0: off).\n"
      "passes: column passes (each gathers from a slice of x; 0: by the size of x), with the same\n"
      "result for any number.\n"
      "Returns the threads it ran on (fewer than num_threads for small inputs) and the passes. Raises\n"
      "IndexError for col entries outside [0, N), ValueError for a bad rowptr. Releases the GIL.";
  m.def("appnp_step", &appnp_step_py, nb::arg("rowptr"), nb::arg("col"), nb::arg("x"), nb::arg("x_in"),
        nb::arg("alpha"), nb::arg("out"), nb::arg("dinv") = nb::none(), nb::arg("num_threads") = 0,
        nb::arg("isa") = "auto", nb::arg("prefetch") = -1, nb::arg("passes") = 0, appnp_doc);
  m.def("appnp_isas", &appnp_isas,
        "Instruction sets of appnp_step that this build runs on this CPU, best first (avx512, avx2, generic).");
}
