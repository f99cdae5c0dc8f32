// What the glue's location code (location.cpp) lends the fused ops (ops.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kernels/api.h"

#include <algorithm>
#include <vector>

namespace attnkern {

// The windows of contiguous x (B, C, T) into out (B * T, C * taps), contiguous, x's dtype:
// out[b * T + t, c * taps + k] = x[b, c, t + k - pad] for k < kernel inside [0, T), else 0.
// The caller has checked the geometry (kernel >= 1, 0 <= pad < kernel, taps >= kernel).
// With offsets (B + 1 ascending, offsets[0] = 0, offsets[b + 1] - offsets[b] <= T), only
// steps t < offsets[b + 1] - offsets[b] of each batch, packed: out (offsets[B], C * taps),
// batch b's step t at row offsets[b] + t.
void fill_location_windows(const at::Tensor& x, int64_t kernel, int64_t pad, int64_t taps,
                           at::Tensor& out, const int64_t* offsets = nullptr);

// Its adjoint: grad (rows, C * taps) contiguous (rows as fill_location_windows lays them out,
// with or without offsets) -> dx (B, C, T), preallocated, contiguous.
void adjoint_location_windows(const at::Tensor& grad, int64_t kernel, int64_t pad, int64_t taps,
                              const int64_t* offsets, at::Tensor& dx);

// Each batch's end of usable keys: min(lengths[b], one past mask's last False), T without
// either; mask (B, T) bool and lengths (B,) int64, contiguous, or undefined.
std::vector<int64_t> key_ends(const at::Tensor& mask, const at::Tensor& lengths, int64_t B,
                              int64_t T);

// keys[b, t] = base[b, t] + term[offsets[b] + t] for t < offsets[b + 1] - offsets[b]: the
// packed term rows (fill_location_windows' layout) added to their batch's first rows, all
// (B, T, A) / (offsets[B], A) contiguous; with copy_tails, keys[b, t] = base[b, t] past them.
template <typename S>
void add_packed_rows(const S* base, const S* term, const int64_t* offsets, int64_t B, int64_t T,
                     int64_t A, S* keys, bool copy_tails) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = offsets[b + 1] - offsets[b];
      for (int64_t t = 0; t < n; ++t) {
        const S* x = base + (b * T + t) * A;
        const S* y = term + (offsets[b] + t) * A;
        S* o = keys + (b * T + t) * A;
        for (int64_t i = 0; i < A; ++i) o[i] = x[i] + y[i];
      }
      if (copy_tails) std::copy(base + (b * T + n) * A, base + (b + 1) * T * A, keys + (b * T + n) * A);
    }
  });
}

// The one-channel location kernels of the ISA chosen at import, by accumulation type: a
// template parameter picked by one branch at each caller (see ops.cpp on GCC 12's
// miscompile of a computed dtype).
template <typename T>
struct Loc1Kernels;
template <>
struct Loc1Kernels<float> {
  static Location1FwdFn<float> fwd() { return active_kernels().loc1_fwd_f; }
  static Location1BwdFn<float> bwd() { return active_kernels().loc1_bwd_f; }
};
template <>
struct Loc1Kernels<double> {
  static Location1FwdFn<double> fwd() { return active_kernels().loc1_fwd_d; }
  static Location1BwdFn<double> bwd() { return active_kernels().loc1_bwd_d; }
};

}  // namespace attnkern
