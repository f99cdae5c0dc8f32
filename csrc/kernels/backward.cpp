// Backward: recompute scores per (query block, key block) tile, then
//   p = exp(s - lse), dp = grad_out_i . v_j (+ grad_weights_ij), ds = p (dp - delta)
//   dv_j += p grad_out_i;   gq_i, gk_j += ds r(1-r);   dwr += ds r
// and finally dq = 4 w gq, dk = 4 w gk, dw = sum(ds) - 2 dwr (since t = 1 - 2r).
//
// Work items are (batch, key split): an item owns its keys, so dk and dv need no reduction.
// An item walks its keys in L2-sized chunks (exp(2k) tiles built once per chunk, every query
// block of the batch sweeps the chunk), so its key-side data stays in cache as Tk grows;
// dq of a batch with several splits goes to one partial buffer per split, and dw to one
// partial per item; both are reduced in a fixed order. The split count depends only on the
// shapes, so results are bitwise identical run to run and for any thread count.
#include "kernels.h"
#include "gemm.h"
#include "grad_reduce.h"
#include "operands.h"
#include "scratch.h"
#include "tiles.h"

namespace attnkern {
namespace ATTNKERN_ISA {

template <typename T>
void backward_impl(const T* go, const T* gw, const T* q, const T* k, const T* ek, Rows<T> v,
                   const T* w, const T* lse, const T* delta, const T* probs,
                   const MaskArgs& mask_args, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                   int64_t Dv, T* dq, T* dk, T* dv, T* dw) {
  const Masks mk(mask_args);
  KeyParams<T> kpar;
  kpar.init(w, H, Tq, ek != nullptr);
  // With the forward's probs there is no score pass: the gradient pass reads exp(2k) rows
  // only, so no transposed key tiles are built.
  if (probs) kpar.hpass = kpar.fact;
  const int64_t Hp = kpar.Hp;
  // Key splits and chunks: plan_backward (plan.cpp; invariants in api.h), from the shapes only.
  const BackwardPlan plan = plan_backward(B, Tk, Hp, Dv);
  const int64_t nsplit = plan.nsplit, KS = plan.KS, KC = plan.KC, items = plan.items;
  const bool one_block = Tq <= kBQ;  // every item's rows are one query block
  constexpr int64_t ldS = round_up(kBK, 16);

  Buf<T> gq(nsplit * B * Tq * Hp), dwr(items * Hp), dss(items);
  zero_fill(gq.get(), nsplit * B * Tq * Hp);
  zero_fill(dwr.get(), items * Hp);

  const int64_t item_work = Tq * ((Tk + nsplit - 1) / nsplit) * (2 * H + 2 * Dv);
  parallel_dynamic(items, grain_for(item_work), 1, [&](int64_t t0, int64_t t1) {
    RowSide<T> rs;
    rs.alloc(kpar);
    KeyChunk<T> kc;
    const int64_t kcmax = std::min(KC, std::max<int64_t>(Tk, 1));
    kc.alloc(kpar, kcmax, /*need_ek=*/true);
    Buf<T> S(kBQ * ldS), P(kBQ * ldS), DP(kBQ * ldS), gk(kcmax * Hp);
    int64_t jend[kBQ];
    for (int64_t it = t0; it < t1; ++it) {
      const int64_t b = it / nsplit, sp = it % nsplit;
      const int64_t ks0 = sp * KS, ks1 = std::min(Tk, ks0 + KS);
      T* gqb = gq.get() + (sp * B + b) * Tq * Hp;
      T* dwi = dwr.get() + it * Hp;
      T ds_sum = 0;
      int64_t jbatch = 0;  // keys past every row's jend need no work (their dk is 0)
      for (int64_t i = 0; i < Tq; ++i) jbatch = std::max(jbatch, mk.jend(b, i));
      for (int64_t c0 = ks0; c0 < ks1; c0 += KC) {
        const int64_t c1 = std::min(c0 + KC, ks1);
        std::fill(gk.get(), gk.get() + (c1 - c0) * Hp, T(0));
        // dv rows of the chunk (this item owns them): with one query block (a decoder
        // step) its tiles write them (gemm_set: each row written once, never read) and
        // only the keys no row sees are zeroed below; with several, they are zeroed here,
        // while about to be used, then accumulated.
        // dv is null when the caller takes no value gradient (it accumulates p and dO
        // itself, e.g. once per sequence): then no dv row is touched.
        int64_t dv_set = c0;  // one query block: dv rows [c0, dv_set) written by its tiles
        if (dv && !one_block) std::fill(dv + (b * Tk + c0) * Dv, dv + (b * Tk + c1) * Dv, T(0));
        if (c0 < jbatch)
          kc.load(kpar, k + (b * Tk + c0) * H, ek ? ek + (b * Tk + c0) * H : nullptr, c1 - c0,
                  /*need_ek=*/true);
        for (int64_t i0 = 0; i0 < Tq && c0 < jbatch; i0 += kBQ) {
          const int64_t nr = std::min(kBQ, Tq - i0);
          const int64_t jlim = std::min(c1, mk.jends(b, i0, nr, jend));
          if (c0 >= jlim) continue;
          rs.load(kpar, q + (b * Tq + i0) * H, nr);
          const T* gob = go + (b * Tq + i0) * Dv;
          for (int64_t j0 = c0; j0 < jlim; j0 += kBK) {
            const int64_t nk = std::min(kBK, jlim - j0);
            // p: the forward's weights when given (no score pass), else exp(s - lse)
            if (!probs) tile_scores(kpar, kc, rs, j0 - c0, nk, S.get(), ldS);
            gemm_nt(gob, Dv, v.row(b, j0), v.st, DP.get(), ldS, nr, nk, Dv);  // dP = dO V^T
            for (int64_t r = 0; r < nr; ++r) {
              const int64_t i = b * Tq + i0 + r;
              const T lr = lse[i], dl = delta[i];
              const T* gwr = gw ? gw + i * Tk + j0 : nullptr;
              const T* pr = probs ? probs + i * Tk + j0 : nullptr;
              T* s = S.get() + r * ldS;
              T* p = P.get() + r * ldS;
              const int64_t je = std::min(nk, jend[r] - j0);
              const bool live = lr != std::numeric_limits<T>::infinity();
              for (int64_t j = 0; j < nk; ++j) {
                T pj = 0, dsj = 0;
                if (live && j < je && !mk.padded(b, j0 + j)) {
                  pj = pr ? pr[j] : std::exp(s[j] - lr);
                  T dp = DP[r * ldS + j];
                  if (gwr) dp += gwr[j];
                  dsj = pj * (dp - dl);
                }
                p[j] = pj;
                s[j] = dsj;
                ds_sum += dsj;
              }
            }
            // dV += P^T dO (one query block: dV = P^T dO)
            if (dv && one_block) {
              gemm_set(P.get(), 1, ldS, gob, Dv, dv + (b * Tk + j0) * Dv, Dv, nk, nr, Dv);
              dv_set = j0 + nk;
            } else if (dv) {
              gemm_acc(P.get(), 1, ldS, gob, Dv, dv + (b * Tk + j0) * Dv, Dv, nk, nr, Dv);
            }
            tile_grads(kpar, kc, rs, j0 - c0, nk, S.get(), ldS, gqb + i0 * Hp,
                       gk.get() + (j0 - c0) * Hp, dwi);
          }
        }
        if (dv && one_block) std::fill(dv + (b * Tk + dv_set) * Dv, dv + (b * Tk + c1) * Dv, T(0));
        store_dk(gk.get(), Hp, w, H, c1 - c0, dk + (b * Tk + c0) * H);  // this item's keys
      }
      dss[it] = ds_sum;
    }
  });

  reduce_dq(gq.get(), nsplit, B, Tq, H, Hp, w, dq);
  reduce_dw(dss.get(), dwr.get(), items, H, Hp, dw);
}

template void backward_impl<float>(const float*, const float*, const float*, const float*,
                                   const float*, Rows<float>, const float*, const float*,
                                   const float*, const float*, const MaskArgs&, int64_t,
                                   int64_t, int64_t, int64_t, int64_t, float*, float*, float*,
                                   float*);
template void backward_impl<double>(const double*, const double*, const double*,
                                    const double*, const double*, Rows<double>, const double*,
                                    const double*, const double*, const double*,
                                    const MaskArgs&, int64_t, int64_t, int64_t, int64_t,
                                    int64_t, double*, double*, double*, double*);

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
