// One-channel location term (ESPnet AttLoc / AttCovLoc, SpeechBrain LocationAwareAttention):
//   out[b, t, a] = base[b, t, a] + sum_c dense[a, c] * conv[b, c, t]
//   conv[b, c, t] = sum_k cw[c, k] * prev[b, t + k - P],  K = 2P + 1 taps, zero padding
// and its backward (grad_base is grad itself; the glue passes it through).
//
// Why a kernel: at the LAS default (K = 201 taps, C = 10 filters, A = 320) oneDNN's conv
// with one input channel runs at a few GFLOP/s, and the dense C -> A GEMM (N or K = 10)
// plus the add to base cost several passes over (B, T, A). Here each batch item is one
// work item: the conv is a correlation with T outputs kept in registers (blocks of kTB),
// the dense term is added while base is copied (one read of base, one write of out), and
// the backward reads grad once for both grad_conv (C dot products per row) and grad_dense.
//
// Determinism: per-item partials of grad_conv_weight and grad_dense are summed over b in
// order after the parallel loop, so results do not depend on the thread count.
// Plain loops written for the compiler's vectoriser under this ISA's flags (every inner
// loop is contiguous, fixed-trip blocks stay in registers).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"
#include "scratch.h"

namespace attnkern {
namespace ATTNKERN_ISA {
namespace {

// Outputs per register block of corr_acc: 8 accumulators of this ISA's widest vector of
// float (two FMA ports x 4 cycles of latency), 4 on SSE.
#if ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX512
constexpr int64_t kTB = 64;
#elif ATTNKERN_ISA_ID == ATTNKERN_ISA_AVX2
constexpr int64_t kTB = 64;
#else
constexpr int64_t kTB = 16;
#endif
constexpr int64_t kLanes = 16;  // partial sums of a dot product; columns per dense block

// out[i] += sum_{k < K} w[k] * x[i + k] for i in [0, n). x must be readable (and finite) up
// to round_up(n, kTB) + K - 1; out must have round_up(n, kTB) slots (the tail is scratch).
template <typename T>
void corr_acc(const T* __restrict x, const T* __restrict w, int64_t K, int64_t n,
              T* __restrict out) {
  for (int64_t i0 = 0; i0 < n; i0 += kTB) {
    T acc[kTB];
    for (int64_t u = 0; u < kTB; ++u) acc[u] = out[i0 + u];
    const T* xs = x + i0;
    for (int64_t k = 0; k < K; ++k) {
      const T wk = w[k];
      for (int64_t u = 0; u < kTB; ++u) acc[u] += wk * xs[k + u];
    }
    for (int64_t u = 0; u < kTB; ++u) out[i0 + u] = acc[u];
  }
}

// conv (C, n) of one item (row stride ld >= n) from its zero-padded input xpad (P zeros,
// T values, zeros); n a multiple of kTB.
template <typename T>
void conv_item(const T* xpad, const T* cw, int64_t C, int64_t K, int64_t n, int64_t ld,
               T* conv) {
  for (int64_t c = 0; c < C; ++c) {
    std::fill(conv + c * ld, conv + c * ld + n, T(0));
    corr_acc(xpad, cw + c * K, K, n, conv + c * ld);
  }
}

template <typename T>
void pad_item(const T* src, int64_t n, int64_t left, int64_t len, T* dst) {
  std::fill(dst, dst + len, T(0));
  std::copy(src, src + n, dst + left);
}

}  // namespace

template <typename T>
void location1_forward_impl(const T* base, const T* prev, const T* cw, const T* dw, int64_t B,
                            int64_t Tn, int64_t A, int64_t C, int64_t K, const int64_t* ends,
                            T* out) {
  const int64_t P = (K - 1) / 2;
  const int64_t Tp = round_up(Tn, kTB);
  const int64_t xlen = Tp + K;  // corr_acc reads up to Tp + K - 2
  Buf<T> dt_buf(C * A);  // dense transposed (C, A): the inner loop runs over a
  T* const dt = dt_buf.get();
  for (int64_t a = 0; a < A; ++a)
    for (int64_t c = 0; c < C; ++c) dt[c * A + a] = dw[a * C + c];
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Buf<T> scratch(xlen + C * Tp);
    T* xpad = scratch.get();
    T* conv = xpad + xlen;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t end = ends != nullptr ? ends[b] : Tn;  // rows past it are not written
      pad_item(prev + b * Tn, Tn, P, xlen, xpad);
      conv_item(xpad, cw, C, K, round_up(end, kTB), Tp, conv);
      for (int64_t t = 0; t < end; ++t) {
        const T* __restrict src = base + (b * Tn + t) * A;
        T* __restrict dst = out + (b * Tn + t) * A;
        // base + sum_c conv[c] dt[c] in blocks of columns held in registers over c
        int64_t a0 = 0;
        for (; a0 + 4 * kLanes <= A; a0 += 4 * kLanes) {
          T acc[4 * kLanes];
          for (int64_t u = 0; u < 4 * kLanes; ++u) acc[u] = src[a0 + u];
          for (int64_t c = 0; c < C; ++c) {
            const T v = conv[c * Tp + t];
            const T* __restrict d = dt + c * A + a0;
            for (int64_t u = 0; u < 4 * kLanes; ++u) acc[u] += v * d[u];
          }
          for (int64_t u = 0; u < 4 * kLanes; ++u) dst[a0 + u] = acc[u];
        }
        std::copy(src + a0, src + A, dst + a0);  // the tail columns: C axpys
        for (int64_t c = 0; c < C; ++c) {
          const T v = conv[c * Tp + t];
          const T* __restrict d = dt + c * A;
          for (int64_t a = a0; a < A; ++a) dst[a] += v * d[a];
        }
      }
    }
  });
}

template <typename T>
void location1_backward_impl(const T* g, const T* prev, const T* cw, const T* dw, int64_t B,
                             int64_t Tn, int64_t A, int64_t C, int64_t K, T* gprev, T* gcw,
                             T* gdw) {
  const int64_t P = (K - 1) / 2;
  const int64_t Tp = round_up(Tn, kTB);
  const int64_t Kp = round_up(K, kTB);
  const int64_t xlen = std::max(Tp + K, Kp + Tn) + kTB;  // both correlations' reads
  Buf<T> dt_buf(C * A);
  T* const dt = dt_buf.get();
  for (int64_t a = 0; a < A; ++a)
    for (int64_t c = 0; c < C; ++c) dt[c * A + a] = dw[a * C + c];
  Buf<T> wflip_buf(C * K);  // gprev is the conv of grad_conv with the flipped taps
  T* const wflip = wflip_buf.get();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wflip[c * K + k] = cw[c * K + (K - 1 - k)];
  // per-item partials: grad_dense transposed (C, A) and grad_conv_weight (C, Kp)
  const int64_t part = C * A + C * Kp;
  Buf<T> parts_buf(B * part);
  T* const parts = parts_buf.get();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Buf<T> scratch(2 * xlen + 2 * C * Tp);
    T* xpad = scratch.get();
    T* gpad = xpad + xlen;
    T* conv = gpad + xlen;
    T* gconv = conv + C * Tp;
    for (int64_t b = b0; b < b1; ++b) {
      pad_item(prev + b * Tn, Tn, P, xlen, xpad);
      conv_item(xpad, cw, C, K, Tp, Tp, conv);
      T* gdt = parts + b * part;
      T* gw = gdt + C * A;
      std::fill(gdt, gdt + part, T(0));
      // one read of each grad row: grad_conv (C dots) and grad_dense (C axpys)
      for (int64_t t = 0; t < Tn; ++t) {
        const T* __restrict gr = g + (b * Tn + t) * A;
        for (int64_t c = 0; c < C; ++c) {
          const T* __restrict d = dt + c * A;
          T* __restrict o = gdt + c * A;
          const T v = conv[c * Tp + t];
          // the dot in kLanes partial sums (vectorised without reassociating), then the tail
          T lanes[kLanes] = {};
          int64_t a = 0;
          for (; a + kLanes <= A; a += kLanes)
            for (int64_t u = 0; u < kLanes; ++u) {
              lanes[u] += gr[a + u] * d[a + u];
              o[a + u] += v * gr[a + u];
            }
          T s = 0;
          for (; a < A; ++a) {
            s += gr[a] * d[a];
            o[a] += v * gr[a];
          }
          for (int64_t u = 0; u < kLanes; ++u) s += lanes[u];
          gconv[c * Tp + t] = s;
        }
      }
      // grad_conv_weight[c, k] = sum_t gconv[c, t] * xpad[t + k]: a correlation over k
      for (int64_t c = 0; c < C; ++c) corr_acc(xpad, gconv + c * Tp, Tn, K, gw + c * Kp);
      if (gprev != nullptr) {
        // gprev[s] = sum_c sum_k cw[c, k] gconv[c, s - k + P]
        //          = sum_c sum_k wflip[c, k] gpad_c[s + k], gpad_c = K - 1 - P zeros, gconv_c
        T* out = conv;  // conv is no longer needed: Tp slots of output
        std::fill(out, out + Tp, T(0));
        for (int64_t c = 0; c < C; ++c) {
          pad_item(gconv + c * Tp, Tn, K - 1 - P, xlen, gpad);
          corr_acc(gpad, wflip + c * K, K, Tp, out);
        }
        std::copy(out, out + Tn, gprev + b * Tn);
      }
    }
  });
  // fixed-order reduction over the items
  std::fill(gdw, gdw + A * C, T(0));
  std::fill(gcw, gcw + C * K, T(0));
  for (int64_t b = 0; b < B; ++b) {
    const T* gdt = parts + b * part;
    const T* gw = gdt + C * A;
    for (int64_t a = 0; a < A; ++a)
      for (int64_t c = 0; c < C; ++c) gdw[a * C + c] += gdt[c * A + a];
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < K; ++k) gcw[c * K + k] += gw[c * Kp + k];
  }
}

template void location1_forward_impl<float>(const float*, const float*, const float*,
                                            const float*, int64_t, int64_t, int64_t, int64_t,
                                            int64_t, const int64_t*, float*);
template void location1_forward_impl<double>(const double*, const double*, const double*,
                                             const double*, int64_t, int64_t, int64_t, int64_t,
                                             int64_t, const int64_t*, double*);
template void location1_backward_impl<float>(const float*, const float*, const float*,
                                             const float*, int64_t, int64_t, int64_t, int64_t,
                                             int64_t, float*, float*, float*);
template void location1_backward_impl<double>(const double*, const double*, const double*,
                                              const double*, int64_t, int64_t, int64_t,
                                              int64_t, int64_t, double*, double*, double*);

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
