// The tile kernels used by forward and backward: scores (S tile of a query block against a
// key block) and grads (dS tile -> gq, gk, dwr), with the vector kernels behind them
// (score_fact, score_direct_avx, score_fact_h, grad_group, grads_avx). Separate from the
// operands (operands.h) and scratch (scratch.h): only the arithmetic of one tile lives here.
#pragma once

#include "operands.h"

namespace attnkern {
namespace ATTNKERN_ISA {

// ------------------------------------------------------------------------- vector tiles
#if ATTNKERN_VEC

// S[r][c] for NR rows and nvec*16 keys, factorised. eq: (NR, Hp); ekt: column j0 of row 0
// of the (Hp, Tkp) transposed block.
template <int NR>
static inline void score_fact(const float* eq, int64_t Hp, const float* ekt, int64_t ldk,
                              const float* w, float sumw, int64_t nvec, float* S, int64_t ldS) {
  const vf one = vset1(1.f), two = vset1(2.f);
  int64_t v = 0;
  for (; kScorePairs && v + 2 <= nvec; v += 2) {
    vf acc[NR][2];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[r][0] = acc[r][1] = vzero();
    const float* kcol = ekt + v * 16;
    for (int64_t h = 0; h < Hp; ++h, kcol += ldk) {
      const vf k0 = vload(kcol), k1 = vload(kcol + 16);
      const vf wh = vset1(w[h]);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const vf e = vset1(eq[r * Hp + h]);
        vf d0 = vfmadd(e, k0, one), d1 = vfmadd(e, k1, one);
        vf x0 = vrcp(d0), x1 = vrcp(d1);
        vf u0 = vmul(wh, x0), u1 = vmul(wh, x1);
        acc[r][0] = vfmadd(u0, vfnmadd(d0, x0, two), acc[r][0]);
        acc[r][1] = vfmadd(u1, vfnmadd(d1, x1, two), acc[r][1]);
      }
    }
    const vf sw = vset1(sumw);
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      vstore(S + r * ldS + v * 16, vfnmadd(two, acc[r][0], sw));
      vstore(S + r * ldS + v * 16 + 16, vfnmadd(two, acc[r][1], sw));
    }
  }
  for (; v < nvec; ++v) {  // at most one left with pairs
    vf acc[NR];
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[r] = vzero();
    const float* kcol = ekt + v * 16;
    for (int64_t h = 0; h < Hp; ++h, kcol += ldk) {
      const vf k0 = vload(kcol);
      const vf wh = vset1(w[h]);
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const vf e = vset1(eq[r * Hp + h]);
        vf d0 = vfmadd(e, k0, one);
        vf x0 = vrcp(d0);
        acc[r] = vfmadd(vmul(wh, x0), vfnmadd(d0, x0, two), acc[r]);
      }
    }
    const vf sw = vset1(sumw);
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r)
      vstore(S + r * ldS + v * 16, vfnmadd(two, acc[r], sw));
  }
}

// Direct path, h-vectorised: S[r][j] for nr rows x nk keys; q: (nr, Hp), k: key j0 of (., Hp).
static inline void score_direct_avx(const float* q, const float* k, int64_t Hp,
                                    const float* w, float sumw, int64_t nr, int64_t nk,
                                    float* S, int64_t ldS) {
  for (int64_t r = 0; r < nr; ++r) {
    const float* qr = q + r * Hp;
    int64_t j = 0;
    for (; j + 4 <= nk; j += 4) {
      vf a0 = vzero(), a1 = a0, a2 = a0, a3 = a0;
      const float* k0 = k + j * Hp;
      for (int64_t h = 0; h < Hp; h += 16) {
        const vf x = vload(qr + h), wh = vload(w + h);
        a0 = vfmadd(wh, r_direct16(vadd(x, vload(k0 + h))), a0);
        a1 = vfmadd(wh, r_direct16(vadd(x, vload(k0 + Hp + h))), a1);
        a2 = vfmadd(wh, r_direct16(vadd(x, vload(k0 + 2 * Hp + h))), a2);
        a3 = vfmadd(wh, r_direct16(vadd(x, vload(k0 + 3 * Hp + h))), a3);
      }
      S[r * ldS + j] = sumw - 2.f * vreduce_add(a0);
      S[r * ldS + j + 1] = sumw - 2.f * vreduce_add(a1);
      S[r * ldS + j + 2] = sumw - 2.f * vreduce_add(a2);
      S[r * ldS + j + 3] = sumw - 2.f * vreduce_add(a3);
    }
    for (; j < nk; ++j) {
      vf a0 = vzero();
      const float* k0 = k + j * Hp;
      for (int64_t h = 0; h < Hp; h += 16) {
        const vf x = vadd(vload(qr + h), vload(k0 + h));
        a0 = vfmadd(vload(w + h), r_direct16(x), a0);
      }
      S[r * ldS + j] = sumw - 2.f * vreduce_add(a0);
    }
  }
}

// Factorised, h-vectorised (hpass): S[r][j] for nr rows x nk keys from exp(2q) rows eq
// (nr, Hp) and exp(2k) rows ek (key j0 of (., Hp)); the few-rows path (a decoder step).
static inline void score_fact_h(const float* eq, const float* ek, int64_t Hp, const float* w,
                                float sumw, int64_t nr, int64_t nk, float* S, int64_t ldS) {
  const vf one = vset1(1.f), two = vset1(2.f);
  for (int64_t r = 0; r < nr; ++r) {
    const float* er = eq + r * Hp;
    int64_t j = 0;
    for (; j + 4 <= nk; j += 4) {
      vf a[4] = {vzero(), vzero(), vzero(), vzero()};
      const float* k0 = ek + j * Hp;
      for (int64_t h = 0; h < Hp; h += 16) {
        const vf e = vload(er + h), wh = vload(w + h);
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) {
          const vf d = vfmadd(e, vload(k0 + u * Hp + h), one);
          const vf x = vrcp(d);
          a[u] = vfmadd(vmul(wh, x), vfnmadd(d, x, two), a[u]);
        }
      }
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) S[r * ldS + j + u] = sumw - 2.f * vreduce_add(a[u]);
    }
    for (; j < nk; ++j) {
      vf a = vzero();
      const float* kj = ek + j * Hp;
      for (int64_t h = 0; h < Hp; h += 16) {
        const vf d = vfmadd(vload(er + h), vload(kj + h), one);
        const vf x = vrcp(d);
        a = vfmadd(vmul(vload(w + h), x), vfnmadd(d, x, two), a);
      }
      S[r * ldS + j] = sumw - 2.f * vreduce_add(a);
    }
  }
}

// Gradient accumulation for NJ keys on one 16-lane slice of h, over nr rows:
//   gq[r] += ds * r(1-r), gk[u] += ds * r(1-r), dw += ds * r
// FACT: e/k hold exp(2q)/exp(2k); otherwise raw q/k.
template <int NJ, bool FACT>
static inline void grad_group(const float* qrow, const float* krow, int64_t Hp,
                              const float* dS, int64_t ldS, int64_t nr, float* gq, float* gk,
                              vf& dwr) {
  const vf one = vset1(1.f), two = vset1(2.f);
  vf kv[NJ], g[NJ], dw[NJ];
#pragma GCC unroll 4
  for (int u = 0; u < NJ; ++u) {
    kv[u] = vload(krow + u * Hp);
    g[u] = vload(gk + u * Hp);
    dw[u] = vzero();
  }
  for (int64_t r = 0; r < nr; ++r) {
    const vf e = vload(qrow + r * Hp);
    vf acc = vload(gq + r * Hp);
#pragma GCC unroll 4
    for (int u = 0; u < NJ; ++u) {
      const vf ds = vset1(dS[r * ldS + u]);
      vf x;
      if (FACT) {
        const vf d = vfmadd(e, kv[u], one);
        x = vrcp(d);
        x = vmul(x, vfnmadd(d, x, two));
      } else {
        x = r_direct16(vadd(e, kv[u]));
      }
      const vf rr = vfnmadd(x, x, x);  // r - r^2
      acc = vfmadd(ds, rr, acc);
      g[u] = vfmadd(ds, rr, g[u]);
      dw[u] = vfmadd(ds, x, dw[u]);
    }
    vstore(gq + r * Hp, acc);
  }
#pragma GCC unroll 4
  for (int u = 0; u < NJ; ++u) {
    vstore(gk + u * Hp, g[u]);
    dwr = vadd(dwr, dw[u]);
  }
}

template <bool FACT>
static inline void grads_avx(const float* q, const float* k, int64_t Hp, const float* dS,
                             int64_t ldS, int64_t nr, int64_t nk, float* gq, float* gk,
                             float* dwr) {
  for (int64_t h = 0; h < Hp; h += 16) {
    vf dw = vload(dwr + h);
    int64_t j = 0;
    for (; j + kGradKeys <= nk; j += kGradKeys)
      grad_group<kGradKeys, FACT>(q + h, k + j * Hp + h, Hp, dS + j, ldS, nr, gq + h, gk + j * Hp + h, dw);
    switch (nk - j) {
      case 3: grad_group<3, FACT>(q + h, k + j * Hp + h, Hp, dS + j, ldS, nr, gq + h, gk + j * Hp + h, dw); break;
      case 2: grad_group<2, FACT>(q + h, k + j * Hp + h, Hp, dS + j, ldS, nr, gq + h, gk + j * Hp + h, dw); break;
      case 1: grad_group<1, FACT>(q + h, k + j * Hp + h, Hp, dS + j, ldS, nr, gq + h, gk + j * Hp + h, dw); break;
      default: break;
    }
    vstore(dwr + h, dw);
  }
}

// One query row (a decoder step): the same sums as grads_avx, key row by key row. With one
// row, grads_avx's h-slice-outer order reads each 16-lane slice of the block's keys at a
// stride of Hp (an L2 access the prefetcher does not follow, once per (key, slice)); here
// a key's row is read contiguously, and gq, dwr and the row (L1-resident) are updated in
// place. The same operations in the same order per element as grads_avx.
template <bool FACT>
static inline void grads_row_avx(const float* q, const float* k, int64_t Hp, const float* dS,
                                 int64_t nk, float* gq, float* gk, float* dwr) {
  const vf one = vset1(1.f), two = vset1(2.f);
  for (int64_t j = 0; j < nk; ++j) {
    const vf ds = vset1(dS[j]);
    const float* kr = k + j * Hp;
    float* g = gk + j * Hp;
    for (int64_t h = 0; h < Hp; h += 16) {
      const vf e = vload(q + h), kv = vload(kr + h);
      vf x;
      if (FACT) {
        const vf d = vfmadd(e, kv, one);
        x = vrcp(d);
        x = vmul(x, vfnmadd(d, x, two));
      } else {
        x = r_direct16(vadd(e, kv));
      }
      const vf rr = vfnmadd(x, x, x);  // r - r^2
      vstore(gq + h, vfmadd(ds, rr, vload(gq + h)));
      vstore(g + h, vfmadd(ds, rr, vload(g + h)));
      vstore(dwr + h, vadd(vload(dwr + h), vfmadd(ds, x, vzero())));
    }
  }
}
#endif  // ATTNKERN_VEC

// ------------------------------------------------------------------------- dispatchers

// S (nr, ldS): scores of rows [0, nr) of rs against keys [j0, j0 + nk) of the chunk kc
// (j0 relative to the chunk, a multiple of kBK). Columns past nk may be written (up to
// round_up(nk, 16)).
template <typename T>
__attribute__((noinline)) void tile_scores(const KeyParams<T>& P, const KeyChunk<T>& kc,
                                           const RowSide<T>& rs, int64_t j0, int64_t nk, T* S,
                                           int64_t ldS) {
  const int64_t Hp = P.Hp, nr = rs.nr;
  const T* kb = kc.kp + j0 * Hp;
#if ATTNKERN_VEC
  if constexpr (std::is_same<T, float>::value) {
    if (P.fact && P.hpass && rs.safe && kc.safe[j0 / kBK]) {
      score_fact_h(rs.eq.get(), kc.ekp + j0 * Hp, Hp, P.w.get(), P.sumw, nr, nk, S, ldS);
    } else if (P.fact && rs.safe && kc.safe[j0 / kBK]) {
      const float* ekt = kc.ekt.get() + (j0 / kBK) * Hp * kBK;
      const int64_t nvec = (nk + 15) / 16;
      const float* eq = rs.eq.get();
      int64_t r = 0;
      for (; r + 4 <= nr; r += 4)
        score_fact<4>(eq + r * Hp, Hp, ekt, kBK, P.w.get(), P.sumw, nvec, S + r * ldS, ldS);
      switch (nr - r) {
        case 3: score_fact<3>(eq + r * Hp, Hp, ekt, kBK, P.w.get(), P.sumw, nvec, S + r * ldS, ldS); break;
        case 2: score_fact<2>(eq + r * Hp, Hp, ekt, kBK, P.w.get(), P.sumw, nvec, S + r * ldS, ldS); break;
        case 1: score_fact<1>(eq + r * Hp, Hp, ekt, kBK, P.w.get(), P.sumw, nvec, S + r * ldS, ldS); break;
        default: break;
      }
    } else {
      score_direct_avx(rs.qp.get(), kb, Hp, P.w.get(), P.sumw, nr, nk, S, ldS);
    }
    return;
  }
#endif
  for (int64_t r = 0; r < nr; ++r) {
    const T* qr = rs.qp.get() + r * Hp;
    for (int64_t j = 0; j < nk; ++j) {
      const T* kj = kb + j * Hp;
      T acc = 0;
      for (int64_t h = 0; h < Hp; ++h) acc += P.w[h] * r_direct(qr[h] + kj[h]);
      S[r * ldS + j] = P.sumw - T(2) * acc;
    }
  }
}

// Accumulate gq (nr, Hp), gk (nk, Hp; row 0 = key j0 of the chunk) and dwr (Hp) from
// dS (nr, ldS):
//   gq[i] += sum_j dS_ij r(1-r), gk[j] += sum_i dS_ij r(1-r), dwr += sum_ij dS_ij r.
template <typename T>
__attribute__((noinline)) void tile_grads(const KeyParams<T>& P, const KeyChunk<T>& kc,
                                          const RowSide<T>& rs, int64_t j0, int64_t nk,
                                          const T* dS, int64_t ldS, T* gq, T* gk, T* dwr) {
  const int64_t Hp = P.Hp, nr = rs.nr;
  const T* kb = kc.kp + j0 * Hp;
#if ATTNKERN_VEC
  if constexpr (std::is_same<T, float>::value) {
    const bool fact = P.fact && rs.safe && kc.safe[j0 / kBK];
    if (nr == 1) {
      if (fact) grads_row_avx<true>(rs.eq.get(), kc.ekp + j0 * Hp, Hp, dS, nk, gq, gk, dwr);
      else grads_row_avx<false>(rs.qp.get(), kb, Hp, dS, nk, gq, gk, dwr);
    } else if (fact) {
      grads_avx<true>(rs.eq.get(), kc.ekp + j0 * Hp, Hp, dS, ldS, nr, nk, gq, gk, dwr);
    } else {
      grads_avx<false>(rs.qp.get(), kb, Hp, dS, ldS, nr, nk, gq, gk, dwr);
    }
    return;
  }
#endif
  for (int64_t r = 0; r < nr; ++r) {
    const T* qr = rs.qp.get() + r * Hp;
    for (int64_t j = 0; j < nk; ++j) {
      const T ds = dS[r * ldS + j];
      if (ds == T(0)) continue;
      const T* kj = kb + j * Hp;
      T* gqr = gq + r * Hp;
      T* gkj = gk + j * Hp;
      for (int64_t h = 0; h < Hp; ++h) {
        const T x = r_direct(qr[h] + kj[h]);
        const T rr = x * (T(1) - x);
        gqr[h] += ds * rr;
        gkj[h] += ds * rr;
        dwr[h] += ds * x;
      }
    }
  }
}

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
