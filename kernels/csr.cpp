// Symmetric CSR construction: a two-level counting sort of both edge directions by row,
// then a sort + dedup inside each row.
//
// An ogbn-products-sized input (124M directed edges, 2.45M nodes) becomes 248M row entries
// before dedup. A global sort of 64-bit (row, col) keys (what numpy.unique does) needs
// several GB and minutes. A one-level counting sort writes every entry to a random place
// in a 1 GB array: ~40 ns per entry on these machines (a cache and a TLB miss). So:
//   1. partition the entries into buckets of consecutive rows (a few thousand buckets: every
//      bucket's write position stays in cache, the writes stream);
//   2. per bucket, which holds ~128k entries: counting sort by row into the bucket's part of
//      the column array (cache resident), then sort + dedup each row while it is still hot.
// Passes over the edge list split the edges into one contiguous chunk per thread, and each
// chunk writes its entries after the previous chunk's: the result before the row sort is
// the same for any thread count.

#include "csr.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "parallel.h"

namespace fastleading {
namespace {

constexpr int64_t kMinEdgesPerThread = int64_t{1} << 18;
constexpr double kBucketEntries = 1 << 17;   // 512 KiB of int32 columns: fits L2
constexpr int64_t kMaxBuckets = int64_t{1} << 16;

// A row entry in its bucket: the row relative to the bucket's first row, and the column.
template <class Col>
struct Entry {
  uint32_t row;
  Col col;
};

// log2 of the rows per bucket: ~kBucketEntries entries per bucket on average, at most
// kMaxBuckets buckets (per-thread bucket counters stay small).
int bucket_shift(int64_t num_nodes, int64_t num_entries) {
  const double entries_per_row = num_nodes > 0 ? static_cast<double>(num_entries) / num_nodes : 1.0;
  int shift = 0;
  while (shift < 30 && static_cast<double>(int64_t{2} << shift) * entries_per_row <= kBucketEntries) ++shift;
  while (shift < 30 && (num_nodes >> shift) >= kMaxBuckets) ++shift;
  return shift;
}

}  // namespace

template <class Id, class Col>
Csr<Col> build_csr(const Id* src, const Id* dst, int64_t num_edges, int64_t num_nodes,
                   int num_threads) {
  if (num_nodes < 0) throw std::invalid_argument("num_nodes must be >= 0");
  if (num_nodes > 0 && static_cast<uint64_t>(num_nodes - 1) >
                           static_cast<uint64_t>(std::numeric_limits<Col>::max())) {
    throw std::overflow_error("num_nodes does not fit the column index type");
  }
  const int max_threads = resolve_threads(num_threads);
  const int chunks = threads_for(num_edges, kMinEdgesPerThread, max_threads);
  const int shift = bucket_shift(num_nodes, 2 * num_edges);
  const int64_t num_buckets = (num_nodes + (int64_t{1} << shift) - 1) >> shift;
  const uint64_t n = static_cast<uint64_t>(num_nodes);

  // Pass 1: entries per (chunk, bucket); validates the ids.
  std::vector<int64_t> position(static_cast<size_t>(chunks) * num_buckets, 0);
  std::vector<char> bad(chunks, 0);
  parallel_tasks(chunks, chunks, [&](int64_t t) {
    int64_t* count = position.data() + t * num_buckets;
    char found = 0;
    for (int64_t e = split_point(num_edges, chunks, t), end = split_point(num_edges, chunks, t + 1); e < end; ++e) {
      const uint64_t u = static_cast<uint64_t>(src[e]), v = static_cast<uint64_t>(dst[e]);
      if (u >= n || v >= n) {
        found = 1;
        continue;
      }
      if (u == v) continue;
      ++count[u >> shift];
      ++count[v >> shift];
    }
    bad[t] = found;
  });
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) {
    throw std::out_of_range("edge list has node ids outside [0, num_nodes)");
  }

  // Bucket b's entries go to [bucket_start[b], bucket_start[b + 1]), chunk by chunk.
  std::vector<int64_t> bucket_start(num_buckets + 1);
  int64_t total = 0;
  for (int64_t b = 0; b < num_buckets; ++b) {
    bucket_start[b] = total;
    for (int64_t t = 0; t < chunks; ++t) {
      const int64_t count = position[t * num_buckets + b];
      position[t * num_buckets + b] = total;
      total += count;
    }
  }
  bucket_start[num_buckets] = total;

  // Pass 2: partition the entries (both directions of every edge) into their buckets.
  Buffer<Entry<Col>> entries(total);
  parallel_tasks(chunks, chunks, [&](int64_t t) {
    int64_t* next = position.data() + t * num_buckets;
    const uint32_t row_mask = static_cast<uint32_t>((int64_t{1} << shift) - 1);
    for (int64_t e = split_point(num_edges, chunks, t), end = split_point(num_edges, chunks, t + 1); e < end; ++e) {
      const int64_t u = src[e], v = dst[e];
      if (u == v) continue;
      entries[next[u >> shift]++] = Entry<Col>{static_cast<uint32_t>(u) & row_mask, static_cast<Col>(v)};
      entries[next[v >> shift]++] = Entry<Col>{static_cast<uint32_t>(v) & row_mask, static_cast<Col>(u)};
    }
  });

  // Pass 3: per bucket, counting sort by row into the bucket's part of `col`, then sort and
  // dedup every row and pack the rows to the front of that part. rowptr[r + 1] holds row
  // r's unique count until the final prefix sum.
  Buffer<Col> col(total);
  Buffer<int64_t> rowptr(num_nodes + 1);
  rowptr[0] = 0;
  std::vector<int64_t> bucket_unique(num_buckets);
  parallel_tasks(num_buckets, threads_for(total, kMinEdgesPerThread, max_threads), [&](int64_t b) {
    const int64_t first_row = b << shift;
    const int64_t rows = std::min(num_nodes, first_row + (int64_t{1} << shift)) - first_row;
    const Entry<Col>* in = entries.data() + bucket_start[b];
    const int64_t size = bucket_start[b + 1] - bucket_start[b];
    Col* out = col.data() + bucket_start[b];
    std::vector<int64_t> start(rows + 1, 0);
    for (int64_t i = 0; i < size; ++i) ++start[in[i].row + 1];
    for (int64_t r = 0; r < rows; ++r) start[r + 1] += start[r];
    std::vector<int64_t> cursor(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < size; ++i) out[cursor[in[i].row]++] = in[i].col;
    int64_t packed = 0;
    for (int64_t r = 0; r < rows; ++r) {
      Col* begin = out + start[r];
      Col* end = out + start[r + 1];
      std::sort(begin, end);
      const int64_t len = std::unique(begin, end) - begin;
      if (begin != out + packed) std::memmove(out + packed, begin, sizeof(Col) * len);
      packed += len;
      rowptr[first_row + r + 1] = len;
    }
    bucket_unique[b] = packed;
  });
  entries = Buffer<Entry<Col>>();  // free before the column array is shrunk

  // Pass 4: close the gaps between buckets (they only move towards the front, so in order)
  // and turn the row counts into offsets.
  int64_t write = 0;
  for (int64_t b = 0; b < num_buckets; ++b) {
    if (bucket_start[b] != write && bucket_unique[b] > 0) {
      std::memmove(col.data() + write, col.data() + bucket_start[b], sizeof(Col) * bucket_unique[b]);
    }
    write += bucket_unique[b];
  }
  for (int64_t r = 0; r < num_nodes; ++r) rowptr[r + 1] += rowptr[r];
  col.shrink(write);
  return Csr<Col>{std::move(rowptr), std::move(col)};
}

template Csr<int32_t> build_csr<int32_t, int32_t>(const int32_t*, const int32_t*, int64_t, int64_t, int);
template Csr<int64_t> build_csr<int32_t, int64_t>(const int32_t*, const int32_t*, int64_t, int64_t, int);
template Csr<int32_t> build_csr<int64_t, int32_t>(const int64_t*, const int64_t*, int64_t, int64_t, int);
template Csr<int64_t> build_csr<int64_t, int64_t>(const int64_t*, const int64_t*, int64_t, int64_t, int);

}  // namespace fastleading
