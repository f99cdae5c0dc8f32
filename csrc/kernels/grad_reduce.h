// The gradient epilogue shared by the attention's backward (backward.cpp) and the energies'
// (scores.cpp). Both accumulate, per work item (batch, key split; plan_backward), gk of the
// keys it owns, gq into one partial per split and dwr + sum(ds) into one partial per item,
// the terms of t = tanh(q + k) = 1 - 2r; these turn them into the gradients:
//   dk = 4 w gk,   dq = 4 w (sum over splits of gq),   dw = sum over items (sum(ds) - 2 dwr)
// Partials are summed in a fixed order: results do not depend on the thread count.
#pragma once

#include "common.h"

namespace attnkern {
namespace ATTNKERN_ISA {

// Zero n elements (in parallel: the partial buffers grow with B * Tq * H).
template <typename T>
inline void zero_fill(T* p, int64_t n) {
  at::parallel_for(0, n, 1 << 16, [&](int64_t a, int64_t e) { std::fill(p + a, p + e, T(0)); });
}

// dk rows of n keys from their gk rows (padded width Hp), w (H,).
template <typename T>
inline void store_dk(const T* gk, int64_t Hp, const T* w, int64_t H, int64_t n, T* dk) {
  for (int64_t j = 0; j < n; ++j) {
    const T* g = gk + j * Hp;
    T* d = dk + j * H;
    for (int64_t h = 0; h < H; ++h) d[h] = T(4) * w[h] * g[h];
  }
}

// dq (B * Tq, H) from gq (nsplit, B * Tq, Hp).
template <typename T>
inline void reduce_dq(const T* gq, int64_t nsplit, int64_t B, int64_t Tq, int64_t H,
                      int64_t Hp, const T* w, T* dq) {
  at::parallel_for(0, B * Tq, grain_for(H * nsplit), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      for (int64_t h = 0; h < H; ++h) {
        T s = 0;
        for (int64_t sp = 0; sp < nsplit; ++sp) s += gq[(sp * B * Tq + row) * Hp + h];
        dq[row * H + h] = T(4) * w[h] * s;
      }
    }
  });
}

// dw (H,) from each item's sum(ds) (items,) and dwr (items, Hp).
template <typename T>
inline void reduce_dw(const T* dss, const T* dwr, int64_t items, int64_t H, int64_t Hp, T* dw) {
  for (int64_t h = 0; h < H; ++h) dw[h] = 0;
  for (int64_t it = 0; it < items; ++it)
    for (int64_t h = 0; h < H; ++h) dw[h] += dss[it] - T(2) * dwr[it * Hp + h];
}

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
