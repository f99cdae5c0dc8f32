// Entry points of the CPU kernels, on contiguous buffers of the accumulation type T
// (float for float32/float16/bfloat16 inputs, double for float64).
#pragma once

#include "common.h"

namespace attnkern {

// q (B,Tq,H), k (B,Tk,H), v (B,Tk,Dv), w (H) -> out (B,Tq,Dv), lse (B,Tq),
// wts (B,Tq,Tk) when non-null.
template <typename T>
void forward_impl(const T* q, const T* k, const T* v, const T* w, const Masks& mk, int64_t B,
                  int64_t Tq, int64_t Tk, int64_t H, int64_t Dv, T* out, T* lse, T* wts);

// go (B,Tq,Dv), gw (B,Tq,Tk) or null, lse/delta (B,Tq) -> dq, dk, dv, dw (input shapes).
template <typename T>
void backward_impl(const T* go, const T* gw, const T* q, const T* k, const T* v, const T* w,
                   const T* lse, const T* delta, const Masks& mk, int64_t B, int64_t Tq,
                   int64_t Tk, int64_t H, int64_t Dv, T* dq, T* dk, T* dv, T* dw);

}  // namespace attnkern
