// What the glue's location code (location.cpp) lends the fused ops (ops.cpp).
#pragma once

#include <ATen/ATen.h>

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

}  // namespace attnkern
