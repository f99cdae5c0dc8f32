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

// q (B,Tq,H), k (B,Tk,H), ek = exp(2k) (B,Tk,H) or null, v (B,Tk,Dv), w (H)
//   -> out (B,Tq,Dv), lse (B,Tq), wts (B,Tq,Tk) when non-null.
template <typename T>
using ForwardFn = void (*)(const T* q, const T* k, const T* ek, const T* v, const T* w,
                           const MaskArgs& mk, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                           int64_t Dv, T* out, T* lse, T* wts);

// go (B,Tq,Dv), gw (B,Tq,Tk) or null, lse/delta (B,Tq), ek as above, probs (B,Tq,Tk)
// = the forward's weights exp(s - lse) or null (then recomputed)
//   -> dq, dk, dv, dw (the shapes of q, k, v, w).
template <typename T>
using BackwardFn = void (*)(const T* go, const T* gw, const T* q, const T* k, const T* ek,
                            const T* v, const T* w, const T* lse, const T* delta,
                            const T* probs, const MaskArgs& mk, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                            int64_t Dv, T* dq, T* dk, T* dv, T* dw);

// One ISA's kernels (defined in kernels/table.cpp of that ISA's build).
struct KernelTable {
  const char* name;  // "scalar" | "avx2" | "avx512" | "neon"
  ForwardFn<float> fwd_f;
  ForwardFn<double> fwd_d;
  BackwardFn<float> bwd_f;
  BackwardFn<double> bwd_d;
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
