// The interface between the glue (csrc/*.cpp, built for the x86-64 / aarch64 baseline) and
// the kernels (csrc/kernels/*.cpp, compiled once per ISA into namespace attnkern::<isa>).
// Plain types and declarations only: nothing here may be an inline function, as the kernel
// translation units are built with ISA flags the glue must not inherit (an inline function
// defined in both would be merged by the linker, ISA instructions and all).
#pragma once

#include <cstdint>

namespace attnkern {

// Which keys a row may use (see Masks in common.h): key_padding_mask (B, Tk) bool or null,
// key_lengths (B,) int64 or null, causal. All pointers are to contiguous CPU memory.
struct MaskArgs {
  const bool* pad;
  const int64_t* len;
  bool causal;
  int64_t Tq, Tk;
};

// The value operand (B, Tk, Dv): each row's Dv elements contiguous, row j of batch b at
// p + b * sb + j * st. Any row strides: an encoder output laid out (Tk, B) in memory (an RNN's
// batch_first view) or a batch expanded with stride 0 is read in place, not copied per call.
template <typename T>
struct Rows {
  const T* p;
  int64_t sb, st;
  const T* row(int64_t b, int64_t j) const { return p + b * sb + j * st; }
};

// q (B,Tq,H), k (B,Tk,H), ek = exp(2k) (B,Tk,H) or null, v (B,Tk,Dv) rows, w (H)
//   -> out (B,Tq,Dv), lse (B,Tq), wts (B,Tq,Tk) when non-null.
template <typename T>
using ForwardFn = void (*)(const T* q, const T* k, const T* ek, Rows<T> v, const T* w,
                           const MaskArgs& mk, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                           int64_t Dv, T* out, T* lse, T* wts);

// go (B,Tq,Dv), gw (B,Tq,Tk) or null, lse/delta (B,Tq), ek as above, probs (B,Tq,Tk)
// = the forward's weights exp(s - lse) or null (then recomputed)
//   -> dq, dk, dv, dw (the shapes of q, k, v, w); dv may be null (no value gradient).
template <typename T>
using BackwardFn = void (*)(const T* go, const T* gw, const T* q, const T* k, const T* ek,
                            Rows<T> v, const T* w, const T* lse, const T* delta,
                            const T* probs, const MaskArgs& mk, int64_t B, int64_t Tq,
                            int64_t Tk, int64_t H, int64_t Dv, T* dq, T* dk, T* dv, T* dw);

// How forward_impl splits one call into work items (plan_forward in kernels/plan.cpp).
// Query rows are in blocks of kBQ (8), keys in blocks of kBK (64); nqb = max(1, ceil(Tq/8)).
// Work item it = (batch b, span sg, split sp), it = (b * nspan + sg) * nsplit + sp.
// Determinism: KC, nsplit and KS depend only on the shapes, never on the thread count: a
// split changes a row's rounding (its partial states are merged), so this is what makes
// results bitwise identical for any thread count. span and nspan may follow the thread
// count: a span only decides which item computes a row, not the row's arithmetic.
struct ForwardPlan {
  int64_t KC;      // keys per chunk (key-side data built once, swept by every block of the
                   // span): a multiple of kBK, at most max(kBK, round_up(Tk, kBK))
  int64_t nsplit;  // key splits per (batch, span), >= 1; 1 when B >= 16 or Tk <= KC
  int64_t KS;      // keys per split, a whole number of chunks (KS % KC == 0); the splits
                   // cover every key (nsplit * KS >= Tk); a split past Tk is empty (it
                   // keeps m = -inf, l = 0 and is skipped by the merge)
  int64_t span;    // query blocks per span, >= 1
  int64_t nspan;   // spans per batch = ceil(nqb / span): they cover every query block
                   // (nspan * span >= nqb) and none is empty ((nspan - 1) * span < nqb)
  int64_t items;   // B * nspan * nsplit
};

// How backward_impl splits one call (plan_backward in kernels/plan.cpp). Items are
// (batch, key split), it = b * nsplit + sp, and own their keys (dk, dv need no reduction);
// every split writes its own dq partial. Depends only on the shapes (no thread count at all).
struct BackwardPlan {
  int64_t nsplit;  // key splits per batch, >= 1; 1 when B >= 8 or Tk <= kBK; at most
                   // ceil(8 / B), so the dq partials stay within 8 x one batch's dq
  int64_t KS;      // keys per split, a multiple of kBK; the splits cover every key
                   // (nsplit * KS >= Tk) and none is empty ((nsplit - 1) * KS < Tk)
  int64_t KC;      // keys per chunk within a split (the last chunk of a split may be
                   // shorter): a multiple of kBK
  int64_t items;   // B * nsplit
};

// Arguments: the sizes (B, Tq, Tk, Dv), Hp = H padded as the ISA's kernels pad it (a
// multiple of 16 for the vector float path, else H), and for the forward the threads the
// call may use (1 when it runs inline).
using ForwardPlanFn = ForwardPlan (*)(int64_t B, int64_t Tq, int64_t Tk, int64_t Hp,
                                      int64_t Dv, int64_t threads);
using BackwardPlanFn = BackwardPlan (*)(int64_t B, int64_t Tk, int64_t Hp, int64_t Dv);

// The one-channel location term (kernels/location1.cpp): base (B,T,A), prev (B,T), cw (C,K)
// with K = 2P + 1 odd, dw (A,C) -> out (B,T,A) = base + dw . conv(prev, cw, padding P).
// ends (B,) or null: only rows t < ends[b] of each batch are written (the others are left
// as they are; ends[b] <= T).
template <typename T>
using Location1FwdFn = void (*)(const T* base, const T* prev, const T* cw, const T* dw,
                                int64_t B, int64_t Tn, int64_t A, int64_t C, int64_t K,
                                const int64_t* ends, T* out);
// Its backward from grad (B,T,A): gprev (B,T) (null: not computed), gcw (C,K), gdw (A,C).
template <typename T>
using Location1BwdFn = void (*)(const T* g, const T* prev, const T* cw, const T* dw,
                                int64_t B, int64_t Tn, int64_t A, int64_t C, int64_t K,
                                T* gprev, T* gcw, T* gdw);

// Fused energies (kernels/scores.cpp): q (B,Tq,H), k (B,Tk,H), ek = exp(2k) or null, w (H)
//   -> out (B,Tq,Tk) = w . tanh(q_i + k_j), -inf where masked.
template <typename T>
using ScoresFwdFn = void (*)(const T* q, const T* k, const T* ek, const T* w,
                             const MaskArgs& mk, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                             T* out);
// Their backward from g (B,Tq,Tk) (masked entries ignored) -> dq, dk, dw.
template <typename T>
using ScoresBwdFn = void (*)(const T* g, const T* q, const T* k, const T* ek, const T* w,
                             const MaskArgs& mk, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                             T* dq, T* dk, T* dw);

// One ISA's kernels (defined in kernels/table.cpp of that ISA's build).
// y = x W^T on rows [n0, n1) of W and dx = g W on columns [k0, k1) of dx, for a few rows
// of x (rows_linear.cpp): x (M, K), W (N, K), y (M, N), g (M, N), dx (M, K), contiguous
// float32. Null on the scalar path.
using RowsLinearFn = void (*)(const float* x, const float* W, int64_t M, int64_t K, int64_t N,
                              int64_t n0, int64_t n1, float* y);
using RowsLinearGradFn = void (*)(const float* g, const float* W, int64_t M, int64_t N,
                                  int64_t K, int64_t k0, int64_t k1, float* dx);

struct KernelTable {
  const char* name;  // "scalar" | "avx2" | "avx512" | "neon"
  ForwardFn<float> fwd_f;
  ForwardFn<double> fwd_d;
  BackwardFn<float> bwd_f;
  BackwardFn<double> bwd_d;
  // The work plans the kernels above use (reached by tests through attnkern._C).
  ForwardPlanFn plan_fwd;
  BackwardPlanFn plan_bwd;
  Location1FwdFn<float> loc1_fwd_f;
  Location1FwdFn<double> loc1_fwd_d;
  Location1BwdFn<float> loc1_bwd_f;
  Location1BwdFn<double> loc1_bwd_d;
  ScoresFwdFn<float> scores_fwd_f;
  ScoresFwdFn<double> scores_fwd_d;
  ScoresBwdFn<float> scores_bwd_f;
  ScoresBwdFn<double> scores_bwd_d;
  RowsLinearFn rows_fwd;
  RowsLinearGradFn rows_bwd;
};

namespace scalar { extern const KernelTable table; }
#if defined(__x86_64__)
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
#elif defined(__aarch64__)
namespace neon { extern const KernelTable table; }
#endif

// The table in use (isa.cpp): chosen at import, see attnkern/_cpu.py.
const KernelTable& active_kernels();

}  // namespace attnkern
