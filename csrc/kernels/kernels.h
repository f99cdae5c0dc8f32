// Entry points of one ISA's CPU kernels, on contiguous buffers of the accumulation type T
// (float for float32/float16/bfloat16 inputs, double for float64), and their work plans.
// Signatures: api.h.
#pragma once

#include "common.h"

namespace attnkern {
namespace ATTNKERN_ISA {

template <typename T>
void forward_impl(const T* q, const T* k, const T* ek, Rows<T> v, const T* w,
                  const MaskArgs& mk, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dv,
                  T* out, T* lse, T* wts);

template <typename T>
void backward_impl(const T* go, const T* gw, const T* q, const T* k, const T* ek, Rows<T> v,
                   const T* w, const T* lse, const T* delta, const T* probs,
                   const MaskArgs& mk, int64_t B,
                   int64_t Tq, int64_t Tk, int64_t H, int64_t Dv, T* dq, T* dk, T* dv, T* dw);

template <typename T>
void location1_forward_impl(const T* base, const T* prev, const T* cw, const T* dw, int64_t B,
                            int64_t Tn, int64_t A, int64_t C, int64_t K, const int64_t* ends,
                            T* out);

template <typename T>
void location1_backward_impl(const T* g, const T* prev, const T* cw, const T* dw, int64_t B,
                             int64_t Tn, int64_t A, int64_t C, int64_t K, T* gprev, T* gcw,
                             T* gdw);

template <typename T>
void scores_forward_impl(const T* q, const T* k, const T* ek, const T* w, const MaskArgs& mk,
                         int64_t B, int64_t Tq, int64_t Tk, int64_t H, T* out);

template <typename T>
void scores_backward_impl(const T* g, const T* q, const T* k, const T* ek, const T* w,
                          const MaskArgs& mk, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                          T* dq, T* dk, T* dw);

#if ATTNKERN_VEC
void rows_linear_impl(const float* x, const float* W, int64_t M, int64_t K, int64_t N,
                      int64_t n0, int64_t n1, float* y);

void rows_linear_grad_impl(const float* g, const float* W, int64_t M, int64_t N, int64_t K,
                           int64_t k0, int64_t k1, float* dx);
#endif

// The work split of forward_impl / backward_impl (plan.cpp; fields and invariants in api.h).
ForwardPlan plan_forward(int64_t B, int64_t Tq, int64_t Tk, int64_t Hp, int64_t Dv,
                         int64_t threads);
BackwardPlan plan_backward(int64_t B, int64_t Tk, int64_t Hp, int64_t Dv);

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
