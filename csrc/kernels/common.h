// Shared pieces of the attnkern CPU kernels: constants, masks and vector helpers. (The tile
// kernels are in tiles.h, their operands in operands.h, scratch memory in scratch.h, the work
// plans in plan.cpp.)
//
// Notation: r = 1 / (exp(2x) + 1) with x = q + k, so tanh(x) = 1 - 2r and
// 1 - tanh(x)^2 = 4 r (1 - r). Scores are s = sum_h w_h (1 - 2 r_h) = sum(w) - 2 sum_h w_h r_h.
// Factorised path (float32, AVX-512): exp(2x) = exp(2q) * exp(2k), both precomputed once per
// row, so r costs one FMA plus a reciprocal (rcp14 + one Newton step). Valid only while
// |q|, |k| <= kSafe (exp(2q) * exp(2k) stays a normal float); blocks with a larger input
// take the direct path (exp per element).
#pragma once

// Only the light headers: every inline function this TU instantiates carries its ISA flags.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "api.h"

// Built once per ISA (setup.py): ATTNKERN_ISA names the namespace, ATTNKERN_ISA_ID selects
// the vector code. The path follows the ISA the build asked for, never the compiler's flags
// alone (a -march=native build keeps an exact scalar path).
#if !defined(ATTNKERN_ISA) || !defined(ATTNKERN_ISA_ID)
#error "csrc/kernels is compiled once per ISA: define ATTNKERN_ISA and ATTNKERN_ISA_ID"
#endif
#define ATTNKERN_ISA_SCALAR 0
#define ATTNKERN_ISA_AVX2 1
#define ATTNKERN_ISA_AVX512 2
#define ATTNKERN_ISA_NEON 3
#if ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX512
#if !(defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && \
      defined(__AVX512VL__) && defined(__FMA__))
#error "the avx512 kernels need -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma"
#endif
#define ATTNKERN_AVX512 1
#else
#define ATTNKERN_AVX512 0
#endif
#if ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX2 && !(defined(__AVX2__) && defined(__FMA__))
#error "the avx2 kernels need -mavx2 -mfma"
#endif
#if ATTNKERN_ISA_ID == ATTNKERN_ISA_NEON && !defined(__ARM_NEON)
#error "the neon kernels need an aarch64 target"
#endif

namespace attnkern {
namespace ATTNKERN_ISA {

#include "vec.h"

constexpr int64_t kBQ = 8;   // query rows per block (forward and backward)
constexpr int64_t kBK = 64;  // keys per block
// |x| <= 21: exp(+-42) per factor and exp(+-84) for the product are normal floats, so
// the factorised reciprocal never sees inf * 0 or a denormal.
constexpr float kSafe = 21.f;
// exp(2 kSafe) and exp(-2 kSafe): the same range read on a caller's exp(2k).
constexpr float kSafeExpHi = 1.7392749e18f;
constexpr float kSafeExpLo = 5.7495223e-19f;
// Below this many query rows per key chunk the exp(2k) precompute costs as much as it saves.
constexpr int64_t kFactMinTq = 4;
// Key chunks (see chunk_keys in plan.cpp): key-side bytes per chunk, sized for a 1-2 MiB L2
// shared with the query side, and a floor on the keys per chunk.
constexpr int64_t kChunkBytes = int64_t(512) << 10;
constexpr int64_t kChunkMinKeys = 256;

constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Register blocking of the vector tiles, per ISA: AVX-512 has 32 registers of 16 lanes; a
// 16-lane vf is two registers on AVX2 (16 in all) and four on NEON (32), so the blocks there
// are smaller (no spilled accumulators).
constexpr bool kScorePairs = ATTNKERN_AVX512;      // score_fact: 2 key vectors per pass
constexpr int kGemmVecs = ATTNKERN_AVX512 ? 4 : 1;  // gemm_acc: 16-lane column vectors
constexpr int kNt = ATTNKERN_AVX512 ? 4 : 2;        // gemm_nt: kNt x kNt dot products
constexpr int kGradKeys = ATTNKERN_AVX512 ? 4 : 2;  // grad_group: keys per pass
// gemm_acc with at most this many rows of C streams X row by row (see gemm_acc_rows).
constexpr int64_t kStreamRows = 2;

// Grain for at::parallel_for so that a parallel region is only opened for enough work
// (tiny calls, e.g. gradcheck or one decoder step of a small model, run inline: an OpenMP
// region costs microseconds, and far more on an oversubscribed machine).
inline int64_t grain_for(int64_t work_per_item, int64_t min_work = int64_t(1) << 15) {
  return std::max<int64_t>(1, min_work / std::max<int64_t>(work_per_item, 1));
}

// Runs f(begin, end) over [0, n) on the intra-op threads, handing out chunks of `chunk`
// items from a shared counter (dynamic schedule). On a shared, oversubscribed machine a
// descheduled thread then delays the call by its current chunk, not by its static half of
// the work; it also balances causal and ragged-length work. Items must write disjoint
// outputs, so the result does not depend on which thread ran which item.
template <typename F>
inline void parallel_dynamic(int64_t n, int64_t grain, int64_t chunk, const F& f) {
  if (n <= 0) return;
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / grain);
  if (nt <= 1 || at::in_parallel_region()) {
    f(int64_t(0), n);
    return;
  }
  chunk = std::max<int64_t>(1, chunk);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    for (;;) {
      const int64_t i = next.fetch_add(chunk, std::memory_order_relaxed);
      if (i >= n) break;
      f(i, std::min(n, i + chunk));
    }
  });
}

// Which keys a row may use. jend(b, i) = number of leading keys allowed by key_lengths and
// causal; key_padding_mask removes single keys below it.
struct Masks : MaskArgs {
  explicit Masks(const MaskArgs& a) : MaskArgs(a) {}

  int64_t jend(int64_t b, int64_t i) const {
    int64_t e = Tk;
    if (len) e = std::min(e, len[b]);
    if (causal) e = std::min(e, i + Tk - Tq + 1);
    return std::max<int64_t>(e, 0);
  }
  // jend of rows i0 .. i0 + n - 1 into out[0 .. n); returns their maximum.
  int64_t jends(int64_t b, int64_t i0, int64_t n, int64_t* out) const {
    int64_t mx = 0;
    for (int64_t r = 0; r < n; ++r) {
      out[r] = jend(b, i0 + r);
      mx = std::max(mx, out[r]);
    }
    return mx;
  }
  bool padded(int64_t b, int64_t j) const { return pad != nullptr && pad[b * Tk + j]; }
};

// r = 1 / (exp(2x) + 1), scalar; 2x clamped so exp neither overflows nor makes r denormal
// in a way that matters (tanh is +-1 to working precision there).
template <typename T>
inline T r_direct(T x) {
  constexpr T lim = std::is_same<T, float>::value ? T(86) : T(600);
  T x2 = std::min(std::max(T(2) * x, -lim), lim);
  return T(1) / (std::exp(x2) + T(1));
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

template <typename T>
inline void axpy(T a, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

#if ATTNKERN_VEC
// Cephes-style exp on 16 lanes (about 1 ulp), input clamped to [-87, 88].
static inline vf exp16(vf x) {
  // max/min return their second operand when either is NaN: NaN passes through.
  x = vmin(vset1(88.f), vmax(vset1(-87.f), x));
  vf n = vround(vmul(x, vset1(1.44269504f)));
  vf r = vfnmadd(n, vset1(0.693359375f), x);
  r = vfnmadd(n, vset1(-2.12194440e-4f), r);
  vf p = vset1(1.9875691500e-4f);
  p = vfmadd(p, r, vset1(1.3981999507e-3f));
  p = vfmadd(p, r, vset1(8.3334519073e-3f));
  p = vfmadd(p, r, vset1(4.1665795894e-2f));
  p = vfmadd(p, r, vset1(1.6666665459e-1f));
  p = vfmadd(p, r, vset1(5.0000001201e-1f));
  p = vfmadd(vmul(p, r), r, vadd(r, vset1(1.f)));
  return vscale2n(p, n);
}

// 1 / d for d >= 1: rcp14 plus one Newton step (about 1 ulp).
static inline vf recip16(vf d) {
  vf r = vrcp(d);
  return vmul(r, vfnmadd(d, r, vset1(2.f)));
}

// r = 1 / (exp(2x) + 1) directly (any finite x; +-inf saturate).
static inline vf r_direct16(vf x) {
  vf x2 = vadd(x, x);
  x2 = vmin(vset1(86.f), vmax(vset1(-86.f), x2));
  return recip16(vadd(exp16(x2), vset1(1.f)));
}

static inline float dot16(const float* a, const float* b, int64_t n) {
  vf s0 = vzero(), s1 = vzero();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = vfmadd(vload(a + i), vload(b + i), s0);
    s1 = vfmadd(vload(a + i + 16), vload(b + i + 16), s1);
  }
  for (; i + 16 <= n; i += 16)
    s0 = vfmadd(vload(a + i), vload(b + i), s0);
  if (i < n) {
    const vmask m = vtail(n - i);
    s1 = vfmadd(vmaskz_load(m, a + i), vmaskz_load(m, b + i), s1);
  }
  return vreduce_add(vadd(s0, s1));
}

template <>
inline float dot<float>(const float* a, const float* b, int64_t n) {
  return dot16(a, b, n);
}
#endif


// s[j] <- exp(s[j] - m) for j < n, with -inf -> 0 exactly (NaN stays NaN); returns the sum.
template <typename T>
inline T exp_shift(T* s, int64_t n, T m) {
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T e = s[j] == -std::numeric_limits<T>::infinity() ? T(0) : std::exp(s[j] - m);
    s[j] = e;
    sum += e;
  }
  return sum;
}

#if ATTNKERN_VEC
template <>
inline float exp_shift<float>(float* s, int64_t n, float m) {
  const vf mv = vset1(m), ninf = vset1(-INFINITY);
  vf acc = vzero();
  for (int64_t j = 0; j < n; j += 16) {
    const vmask in = vtail(n - j);
    const vf x = vmaskz_load(in, s + j);
    const vmask live = vcmp_neq_mask(in, x, ninf);
    const vf e = vmaskz_mov(live, exp16(vsub(x, mv)));
    vmask_store(s + j, in, e);
    acc = vadd(acc, e);
  }
  return vreduce_add(acc);
}
#endif

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
