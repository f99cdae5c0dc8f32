// Fused energies (attnkern::scores): e[b, i, j] = sum_h w[h] tanh(q[b, i, h] + k[b, j, h]),
// -inf where a key is masked, and their backward from a gradient dE of the energies:
//   gq_i, gk_j += dE_ij r(1-r);  dwr += dE_ij r   (r = 1 / (1 + exp(2(q + k))), t = 1 - 2r)
//   dq = 4 w gq, dk = 4 w gk, dw = sum(dE) - 2 dwr
// (the fused attention's backward without the softmax: the same tiles, tiles.h).
//
// Forward work items are (batch, query block): an item builds its key chunks' side data
// (exp(2k) tiles) and sweeps them with its rows. Backward items are (batch, key split) as in
// backward.cpp (plan_backward): an item owns its keys, dq goes to one partial per split and
// dw to one per item, both reduced in a fixed order, so results do not depend on the thread
// count. Nothing of size B * Tq * Tk * H is allocated.
#include "grad_reduce.h"
#include "kernels.h"
#include "operands.h"
#include "scratch.h"
#include "tiles.h"

namespace attnkern {
namespace ATTNKERN_ISA {

template <typename T>
void scores_forward_impl(const T* q, const T* k, const T* ek, const T* w,
                         const MaskArgs& mask_args, int64_t B, int64_t Tq, int64_t Tk,
                         int64_t H, T* out) {
  const Masks mk(mask_args);
  constexpr int64_t ldS = round_up(kBK, 16);
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  KeyParams<T> kpar;
  kpar.init(w, H, Tq, ek != nullptr);
  const int64_t nqb = (Tq + kBQ - 1) / kBQ;
  // key chunks of one item: a few key blocks (kept in L1/L2 while the item's rows sweep them)
  const int64_t KC = std::min<int64_t>(4 * kBK, round_up(std::max<int64_t>(Tk, 1), kBK));
  const int64_t items = B * nqb;
  parallel_dynamic(items, grain_for(std::min(kBQ, Tq) * Tk * H), 1, [&](int64_t t0, int64_t t1) {
    RowSide<T> rs;
    rs.alloc(kpar);
    KeyChunk<T> kc;
    kc.alloc(kpar, KC, /*need_ek=*/false);
    Buf<T> S(kBQ * ldS);
    int64_t jend[kBQ];
    for (int64_t it = t0; it < t1; ++it) {
      const int64_t b = it / nqb, i0 = (it % nqb) * kBQ;
      const int64_t nr = std::min(kBQ, Tq - i0);
      const int64_t jmax = mk.jends(b, i0, nr, jend);
      T* ob = out + (b * Tq + i0) * Tk;
      for (int64_t r = 0; r < nr; ++r)  // keys past a row's end (lengths, causal)
        std::fill(ob + r * Tk + std::min(jend[r], Tk), ob + (r + 1) * Tk, ninf);
      if (jmax <= 0) continue;
      rs.load(kpar, q + (b * Tq + i0) * H, nr);
      for (int64_t c0 = 0; c0 < jmax; c0 += KC) {
        const int64_t c1 = std::min(c0 + KC, jmax);
        kc.load(kpar, k + (b * Tk + c0) * H, ek ? ek + (b * Tk + c0) * H : nullptr, c1 - c0,
                /*need_ek=*/false);
        for (int64_t j0 = c0; j0 < c1; j0 += kBK) {
          const int64_t nk = std::min(kBK, c1 - j0);
          tile_scores(kpar, kc, rs, j0 - c0, nk, S.get(), ldS);
          for (int64_t r = 0; r < nr; ++r) {
            const int64_t je = std::min(nk, jend[r] - j0);
            const T* s = S.get() + r * ldS;
            T* o = ob + r * Tk + j0;
            for (int64_t j = 0; j < je; ++j) o[j] = mk.padded(b, j0 + j) ? ninf : s[j];
          }
        }
      }
    }
  });
}

template <typename T>
void scores_backward_impl(const T* g, const T* q, const T* k, const T* ek, const T* w,
                          const MaskArgs& mask_args, int64_t B, int64_t Tq, int64_t Tk,
                          int64_t H, T* dq, T* dk, T* dw) {
  const Masks mk(mask_args);
  KeyParams<T> kpar;
  kpar.init(w, H, Tq, ek != nullptr);
  kpar.hpass = kpar.fact;  // no score pass: the gradient tiles read exp(2k) rows only
  const int64_t Hp = kpar.Hp;
  const BackwardPlan plan = plan_backward(B, Tk, Hp, 0);
  const int64_t nsplit = plan.nsplit, KS = plan.KS, KC = plan.KC, items = plan.items;
  constexpr int64_t ldS = round_up(kBK, 16);

  Buf<T> gq(nsplit * B * Tq * Hp), dwr(items * Hp), dss(items);
  zero_fill(gq.get(), nsplit * B * Tq * Hp);
  zero_fill(dwr.get(), items * Hp);

  parallel_dynamic(items, grain_for(Tq * ((Tk + nsplit - 1) / nsplit) * 2 * H), 1,
                   [&](int64_t t0, int64_t t1) {
    RowSide<T> rs;
    rs.alloc(kpar);
    KeyChunk<T> kc;
    const int64_t kcmax = std::min(KC, std::max<int64_t>(Tk, 1));
    kc.alloc(kpar, kcmax, /*need_ek=*/true);
    Buf<T> DS(kBQ * ldS), gk(kcmax * Hp);
    int64_t jend[kBQ];
    for (int64_t it = t0; it < t1; ++it) {
      const int64_t b = it / nsplit, sp = it % nsplit;
      const int64_t ks0 = sp * KS, ks1 = std::min(Tk, ks0 + KS);
      T* gqb = gq.get() + (sp * B + b) * Tq * Hp;
      T* dwi = dwr.get() + it * Hp;
      T ds_sum = 0;
      int64_t jbatch = 0;  // keys past every row's end take no gradient
      for (int64_t i = 0; i < Tq; ++i) jbatch = std::max(jbatch, mk.jend(b, i));
      for (int64_t c0 = ks0; c0 < ks1; c0 += KC) {
        const int64_t c1 = std::min(c0 + KC, ks1);
        std::fill(gk.get(), gk.get() + (c1 - c0) * Hp, T(0));
        if (c0 < jbatch)
          kc.load(kpar, k + (b * Tk + c0) * H, ek ? ek + (b * Tk + c0) * H : nullptr, c1 - c0,
                  /*need_ek=*/true);
        for (int64_t i0 = 0; i0 < Tq && c0 < jbatch; i0 += kBQ) {
          const int64_t nr = std::min(kBQ, Tq - i0);
          const int64_t jlim = std::min(c1, mk.jends(b, i0, nr, jend));
          if (c0 >= jlim) continue;
          rs.load(kpar, q + (b * Tq + i0) * H, nr);
          for (int64_t j0 = c0; j0 < jlim; j0 += kBK) {
            const int64_t nk = std::min(kBK, jlim - j0);
            for (int64_t r = 0; r < nr; ++r) {
              const T* gr = g + (b * Tq + i0 + r) * Tk + j0;
              T* d = DS.get() + r * ldS;
              const int64_t je = std::min(nk, jend[r] - j0);
              for (int64_t j = 0; j < nk; ++j) {
                // a masked energy is a constant -inf: no gradient flows through it
                const T x = j < je && !mk.padded(b, j0 + j) ? gr[j] : T(0);
                d[j] = x;
                ds_sum += x;
              }
            }
            tile_grads(kpar, kc, rs, j0 - c0, nk, DS.get(), ldS, gqb + i0 * Hp,
                       gk.get() + (j0 - c0) * Hp, dwi);
          }
        }
        store_dk(gk.get(), Hp, w, H, c1 - c0, dk + (b * Tk + c0) * H);  // this item's keys
      }
      dss[it] = ds_sum;
    }
  });

  reduce_dq(gq.get(), nsplit, B, Tq, H, Hp, w, dq);
  reduce_dw(dss.get(), dwr.get(), items, H, Hp, dw);
}

template void scores_forward_impl<float>(const float*, const float*, const float*,
                                         const float*, const MaskArgs&, int64_t, int64_t,
                                         int64_t, int64_t, float*);
template void scores_forward_impl<double>(const double*, const double*, const double*,
                                          const double*, const MaskArgs&, int64_t, int64_t,
                                          int64_t, int64_t, double*);
template void scores_backward_impl<float>(const float*, const float*, const float*,
                                          const float*, const float*, const MaskArgs&, int64_t,
                                          int64_t, int64_t, int64_t, float*, float*, float*);
template void scores_backward_impl<double>(const double*, const double*, const double*,
                                           const double*, const double*, const MaskArgs&,
                                           int64_t, int64_t, int64_t, int64_t, double*,
                                           double*, double*);

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
