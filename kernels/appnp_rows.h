// The portable row kernel of the fused APPNP step (see appnp.h), written for the compiler's
// auto-vectoriser. appnp_generic.cpp and appnp_avx2.cpp include this file with different
// instruction-set flags and a different FASTLEADING_APPNP_NS: everything here lives in that
// namespace (and an anonymous one), so the two builds never share a symbol, and it uses
// no library template that the linker could merge across them.
//
// Row i, in the PyTorch reference's order (self loop first, then the neighbours in CSR
// order; products and sums rounded separately in fp32, no FMA contraction):
//   agg = dinv[i] * x[i];  agg += x[j] * dinv[j] for j in N(i);
//   out[i] = ((1-a) * dinv[i]) * agg + a * x_in[i]
// The feature dim is cut into blocks of kBlock; each block walks the row's neighbours once
// with its fp32 accumulator in L1, prefetching the block of the neighbour `prefetch_distance`
// edges ahead (across row boundaries; only neighbours of the current column pass).

#ifndef FASTLEADING_APPNP_NS
#error "define FASTLEADING_APPNP_NS before including appnp_rows.h"
#endif

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "appnp.h"

namespace fastleading {
namespace FASTLEADING_APPNP_NS {
namespace {

constexpr int64_t kBlock = 256;  // features per pass over a row's neighbours (1 KiB of fp32)
constexpr int64_t kLine = 64;

struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float to_float(float v) { return v; }
inline float to_float(Bf16 v) { return from_bits(uint32_t{v.bits} << 16); }
// IEEE half -> float, exact: the F16C instruction where the build has it, else branch-free
// integer code (after M. Dukhan's FP16 library, as c10::Half).
inline float to_float(F16 v) {
#if defined(__F16C__)
  return _cvtsh_ss(v.bits);
#endif
  const uint32_t w = uint32_t{v.bits} << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  return from_bits(sign | (two_w < (1u << 27) ? to_bits(denormalized) : to_bits(normalized)));
}

template <class T>
T from_float(float f);
template <>
inline float from_float<float>(float f) {
  return f;
}
// Round to nearest even; NaN -> 0x7FC0 (as c10::BFloat16).
template <>
inline Bf16 from_float<Bf16>(float f) {
  const uint32_t u = to_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return Bf16{static_cast<uint16_t>(f != f ? 0x7FC0u : rounded)};
}
// float -> IEEE half, round to nearest even (M. Dukhan's FP16 library, as c10::Half).
template <>
inline F16 from_float<F16>(float f) {
#if defined(__F16C__)
  return F16{static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT))};
#endif
  const uint32_t w = to_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  float base = (__builtin_fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  base = from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = to_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return F16{static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign))};
}

// w elements of a row as fp32: converted into buf, or fp32 rows read in place.
template <class T>
inline const float* load_block(const T* __restrict src, float* __restrict buf, int64_t w) {
  for (int64_t k = 0; k < w; ++k) buf[k] = to_float(src[k]);
  return buf;
}
inline const float* load_block(const float* src, float*, int64_t) { return src; }
#if defined(__F16C__)
inline const float* load_block(const F16* __restrict src, float* __restrict buf, int64_t w) {
  int64_t k = 0;
  for (; k + 8 <= w; k += 8) {
    _mm256_storeu_ps(buf + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  }
  for (; k < w; ++k) buf[k] = to_float(src[k]);
  return buf;
}
#endif

inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* b = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += kLine) __builtin_prefetch(b + off);
  __builtin_prefetch(b + bytes - 1);  // the last line of a row that does not start on a line
}

template <class T, class Col>
bool rows(const AppnpProblem& p, int64_t row_begin, int64_t row_end) {
  const int64_t* __restrict rowptr = p.rowptr;
  const Col* __restrict col = static_cast<const Col*>(p.col);
  const float* __restrict dinv = p.dinv;
  const T* x = static_cast<const T*>(p.x);
  const T* x_in = static_cast<const T*>(p.x_in);
  T* out = static_cast<T*>(p.out);
  const uint64_t n = static_cast<uint64_t>(p.num_rows);
  const int64_t cols = p.num_cols, sx = p.x_stride, sxin = p.x_in_stride, sout = p.out_stride;
  const int64_t ahead = p.prefetch_distance;
  const int64_t edge_limit = rowptr[row_end];
  const float one_minus_alpha = p.one_minus_alpha, alpha = p.alpha;
  alignas(64) float acc[kBlock];
  alignas(64) float buf[kBlock];
  bool ok = true;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float di = dinv[r];
    int64_t e_begin, e_end;
    pass_edges(p, col, r, &e_begin, &e_end);
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t w = cols - c0 < kBlock ? cols - c0 : kBlock;
      const int64_t block_bytes = w * static_cast<int64_t>(sizeof(T));
      float* __restrict kept = p.acc != nullptr ? p.acc + r * p.acc_stride + c0 : nullptr;  // sums between passes
      if (p.first_pass) {
        const float* xi = load_block(x + r * sx + c0, buf, w);
        for (int64_t k = 0; k < w; ++k) acc[k] = di * xi[k];
      } else {
        for (int64_t k = 0; k < w; ++k) acc[k] = kept[k];
      }
      for (int64_t e = e_begin; e < e_end; ++e) {
        if (ahead > 0 && e + ahead < edge_limit) {
          const int64_t jp = prefetch_row(p, static_cast<uint64_t>(static_cast<int64_t>(col[e + ahead])), r);
          prefetch_bytes(x + jp * sx + c0, block_bytes);
          __builtin_prefetch(dinv + jp);
        }
        const uint64_t j = static_cast<uint64_t>(col[e]);
        if (j >= n) {
          ok = false;
          continue;
        }
        const float dj = dinv[j];
        const float* __restrict xj = load_block(x + static_cast<int64_t>(j) * sx + c0, buf, w);
        for (int64_t k = 0; k < w; ++k) acc[k] += xj[k] * dj;
      }
      if (!p.last_pass) {
        for (int64_t k = 0; k < w; ++k) kept[k] = acc[k];
        continue;
      }
      const float scale = one_minus_alpha * di;
      const T* __restrict xin = x_in + r * sxin + c0;
      T* __restrict o = out + r * sout + c0;
      for (int64_t k = 0; k < w; ++k) {
        const float self = scale * acc[k];
        const float teleport = alpha * to_float(xin[k]);
        o[k] = from_float<T>(self + teleport);
      }
    }
  }
  return ok;
}

}  // namespace

bool appnp_rows(const AppnpProblem& p, int64_t row_begin, int64_t row_end) {
  switch (p.type) {
    case FeatureType::kF32:
      return p.col_int64 ? rows<float, int64_t>(p, row_begin, row_end) : rows<float, int32_t>(p, row_begin, row_end);
    case FeatureType::kBF16:
      return p.col_int64 ? rows<Bf16, int64_t>(p, row_begin, row_end) : rows<Bf16, int32_t>(p, row_begin, row_end);
    case FeatureType::kF16:
      return p.col_int64 ? rows<F16, int64_t>(p, row_begin, row_end) : rows<F16, int32_t>(p, row_begin, row_end);
  }
  return false;
}

}  // namespace FASTLEADING_APPNP_NS
}  // namespace fastleading
