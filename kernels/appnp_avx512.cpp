// The AVX-512 row kernel of the fused APPNP step (see appnp.h). CMakeLists.txt builds this
// file alone with -mavx512f -mavx512bw -mavx512vl; appnp.cpp calls it only on CPUs that have
// them. Nothing here is shared with the other builds (anonymous namespace, no library
// templates), so no AVX-512 code can leak into them through the linker.
//
// Same arithmetic as appnp_rows.h, in the same order (self loop first, then the neighbours in
// CSR order, products and sums rounded separately): the results are bitwise those of the
// portable kernel. A feature block of up to 16 vectors of 16 lanes (256 features) keeps its
// accumulators in zmm registers for the whole walk over a row's neighbours; the last vector
// of the last block is masked (widths that are not multiples of 16 need no scalar tail).

// GCC 12 reports the intrinsics' deliberately undefined registers (_mm512_undefined_ps()
// inside avx512fintrin.h) as "may be used uninitialized" once they are inlined here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "appnp.h"

namespace fastleading {
namespace appnp_avx512 {
namespace {

constexpr int kMaxVectors = 16;  // per block: 16 accumulators + 1 weight + temporaries < 32 zmm
constexpr int64_t kLanes = 16;
constexpr int64_t kLine = 64;

struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

#define FL_INLINE inline __attribute__((always_inline))

// Loads of 16 elements as fp32 (masked lanes read nothing and give 0) and stores from fp32.
template <class T>
struct Lanes;

template <>
struct Lanes<float> {
  static FL_INLINE __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static FL_INLINE __m512 load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
  static FL_INLINE void store(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
};

template <>
struct Lanes<Bf16> {
  static FL_INLINE __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static FL_INLINE __m512 load(const Bf16* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static FL_INLINE __m512 load(const Bf16* p, __mmask16 m) { return widen(_mm256_maskz_loadu_epi16(m, p)); }
  // Round to nearest even, NaN -> 0x7FC0 (as c10::BFloat16 and appnp_rows.h).
  static FL_INLINE void store(Bf16* p, __m512 v, __mmask16 m) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(r));
  }
};

template <>
struct Lanes<F16> {
  static FL_INLINE __m512 load(const F16* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static FL_INLINE __m512 load(const F16* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
  static FL_INLINE void store(F16* p, __m512 v, __mmask16 m) {
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};

struct Operands {
  const int64_t* rowptr;
  const float* dinv;
  uint64_t n;
  int64_t sx, sxin, sout, ahead, edge_limit;
  float one_minus_alpha, alpha;
  bool first_pass, last_pass;
  float* acc;
  int64_t acc_stride;
  uint64_t pf_floor, pf_range;  // prefetch ids in [pf_floor, pf_floor + pf_range): this pass's
};

// One row, features [c0, c0 + 16 * NV) (the last vector masked by `tail`), the edges
// [e_begin, e_end) of this pass; false when a column index is out of range.
template <class T, class Col, int NV>
FL_INLINE bool row_block(const Operands& o, const Col* __restrict col, const T* x, const T* x_in, T* out,
                         int64_t r, int64_t c0, __mmask16 tail, int64_t e_begin, int64_t e_end) {
  const float* __restrict dinv = o.dinv;
  // Prefetches cover the block's whole vectors (a masked tail adds at most one line), unrolled:
  // at narrow widths the prefetch code is a large part of the instructions per edge.
  constexpr int64_t kBlockBytes = NV * kLanes * static_cast<int64_t>(sizeof(T));
  const int64_t prefetch_end = o.ahead > 0 ? o.edge_limit - o.ahead : INT64_MIN;
  __m512 acc[NV];
  const float di_scalar = dinv[r];
  const __m512 di = _mm512_set1_ps(di_scalar);
  float* kept = o.acc != nullptr ? o.acc + r * o.acc_stride + c0 : nullptr;  // the sums between passes
  if (o.first_pass) {
    const T* xr = x + r * o.sx + c0;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const __m512 xv = v == NV - 1 ? Lanes<T>::load(xr + v * kLanes, tail) : Lanes<T>::load(xr + v * kLanes);
      acc[v] = _mm512_mul_ps(di, xv);
    }
  } else {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      acc[v] = v == NV - 1 ? Lanes<float>::load(kept + v * kLanes, tail) : Lanes<float>::load(kept + v * kLanes);
    }
  }
  bool ok = true;
  for (int64_t e = e_begin; e < e_end; ++e) {
    if (e < prefetch_end) {
      // A neighbour of another pass prefetches row r instead (already in cache; no branch).
      const uint64_t ja = static_cast<uint64_t>(static_cast<int64_t>(col[e + o.ahead]));
      const int64_t jp = ja - o.pf_floor < o.pf_range ? static_cast<int64_t>(ja) : r;
      const char* base = reinterpret_cast<const char*>(x + jp * o.sx + c0);
#pragma GCC unroll 17
      for (int64_t off = 0; off < kBlockBytes; off += kLine) _mm_prefetch(base + off, _MM_HINT_T0);
      _mm_prefetch(base + kBlockBytes - 1, _MM_HINT_T0);  // the last line of a row not on a line start
      _mm_prefetch(reinterpret_cast<const char*>(dinv + jp), _MM_HINT_T0);
    }
    const uint64_t j = static_cast<uint64_t>(col[e]);
    if (j >= o.n) {
      ok = false;
      continue;
    }
    const __m512 dj = _mm512_set1_ps(dinv[j]);
    const T* xj = x + static_cast<int64_t>(j) * o.sx + c0;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const __m512 xv = v == NV - 1 ? Lanes<T>::load(xj + v * kLanes, tail) : Lanes<T>::load(xj + v * kLanes);
      acc[v] = _mm512_add_ps(acc[v], _mm512_mul_ps(xv, dj));
    }
  }
  if (!o.last_pass) {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) Lanes<float>::store(kept + v * kLanes, acc[v], v == NV - 1 ? tail : __mmask16(0xFFFF));
    return ok;
  }
  const __m512 scale = _mm512_set1_ps(o.one_minus_alpha * di_scalar);
  const __m512 alpha = _mm512_set1_ps(o.alpha);
  const T* xin = x_in + r * o.sxin + c0;
  T* dst = out + r * o.sout + c0;
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) {
    const __mmask16 m = v == NV - 1 ? tail : __mmask16(0xFFFF);
    const __m512 xv = v == NV - 1 ? Lanes<T>::load(xin + v * kLanes, tail) : Lanes<T>::load(xin + v * kLanes);
    const __m512 res = _mm512_add_ps(_mm512_mul_ps(scale, acc[v]), _mm512_mul_ps(alpha, xv));
    Lanes<T>::store(dst + v * kLanes, res, m);
  }
  return ok;
}

// Rows [row_begin, row_end): full blocks of kMaxVectors vectors, then a last block of NV_LAST.
template <class T, class Col, int NV_LAST>
bool rows(const AppnpProblem& p, int64_t row_begin, int64_t row_end) {
  const Operands o{p.rowptr, p.dinv, static_cast<uint64_t>(p.num_rows), p.x_stride, p.x_in_stride,
                   p.out_stride, p.prefetch_distance, p.rowptr[row_end], p.one_minus_alpha, p.alpha,
                   p.first_pass, p.last_pass, p.acc, p.acc_stride, p.col_floor, p.col_limit - p.col_floor};
  const Col* col = static_cast<const Col*>(p.col);
  const T* x = static_cast<const T*>(p.x);
  const T* x_in = static_cast<const T*>(p.x_in);
  T* out = static_cast<T*>(p.out);
  constexpr int64_t block = kMaxVectors * kLanes;
  const int64_t full_blocks = (p.num_cols - 1) / block;
  const int64_t last_width = p.num_cols - full_blocks * block;  // in (0, block]
  const int64_t tail_lanes = last_width - (NV_LAST - 1) * kLanes;  // in (0, 16]
  const __mmask16 tail = static_cast<__mmask16>(tail_lanes == kLanes ? 0xFFFF : (1u << tail_lanes) - 1);
  bool ok = true;
  for (int64_t r = row_begin; r < row_end; ++r) {
    int64_t e_begin, e_end;
    pass_edges(p, col, r, &e_begin, &e_end);
    for (int64_t b = 0; b < full_blocks; ++b) {
      ok &= row_block<T, Col, kMaxVectors>(o, col, x, x_in, out, r, b * block, __mmask16(0xFFFF), e_begin, e_end);
    }
    ok &= row_block<T, Col, NV_LAST>(o, col, x, x_in, out, r, full_blocks * block, tail, e_begin, e_end);
  }
  return ok;
}

template <class T, class Col, int NV = 1>
bool dispatch_width(const AppnpProblem& p, int64_t row_begin, int64_t row_end, int nv_last) {
  if constexpr (NV > kMaxVectors) {
    return false;  // unreachable: nv_last is in [1, kMaxVectors]
  } else {
    if (nv_last == NV) return rows<T, Col, NV>(p, row_begin, row_end);
    return dispatch_width<T, Col, NV + 1>(p, row_begin, row_end, nv_last);
  }
}

template <class T>
bool dispatch_col(const AppnpProblem& p, int64_t row_begin, int64_t row_end) {
  constexpr int64_t block = kMaxVectors * kLanes;
  const int64_t last_width = p.num_cols - (p.num_cols - 1) / block * block;
  const int nv_last = static_cast<int>((last_width + kLanes - 1) / kLanes);
  return p.col_int64 ? dispatch_width<T, int64_t>(p, row_begin, row_end, nv_last)
                     : dispatch_width<T, int32_t>(p, row_begin, row_end, nv_last);
}

}  // namespace

bool appnp_rows(const AppnpProblem& p, int64_t row_begin, int64_t row_end) {
  switch (p.type) {
    case FeatureType::kF32:
      return dispatch_col<float>(p, row_begin, row_end);
    case FeatureType::kBF16:
      return dispatch_col<Bf16>(p, row_begin, row_end);
    case FeatureType::kF16:
      return dispatch_col<F16>(p, row_begin, row_end);
  }
  return false;
}

}  // namespace appnp_avx512
}  // namespace fastleading
