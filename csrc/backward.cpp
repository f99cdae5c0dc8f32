// Backward: recompute scores per (query block, key block) tile, then
//   p = exp(s - lse), dp = grad_out_i . v_j (+ grad_weights_ij), ds = p (dp - delta)
//   dv_j += p grad_out_i;   gq_i, gk_j += ds r(1-r);   dwr += ds r
// and finally dq = 4 w gq, dk = 4 w gk, dw = sum(ds) - 2 dwr (since t = 1 - 2r).
//
// Work items are (batch, key split): an item owns its keys, so dk and dv need no reduction;
// dq of a batch with several splits goes to one partial buffer per split, and dw to one
// partial per item; both are reduced in a fixed order. The split count depends only on the
// shapes, so results are bitwise identical run to run and for any thread count.
#include "kernels.h"
#include "gemm.h"
#include "tiles.h"

namespace attnkern {

namespace {
// Splits per batch: enough items to keep threads busy for small batches, bounded so the dq
// partials stay small (at most 8 x one batch's dq).
int64_t key_splits(int64_t B, int64_t Tk) {
  const int64_t nkb = (Tk + kBK - 1) / kBK;
  if (B >= 8 || nkb <= 1) return 1;
  return std::max<int64_t>(1, std::min(nkb, (8 + B - 1) / B));
}
}  // namespace

template <typename T>
void backward_impl(const T* go, const T* gw, const T* q, const T* k, const T* v, const T* w,
                   const T* lse, const T* delta, const Masks& mk, int64_t B, int64_t Tq,
                   int64_t Tk, int64_t H, int64_t Dv, T* dq, T* dk, T* dv, T* dw) {
  KeySide<T> ks;
  ks.build(k, w, B, Tk, H, Tq, /*need_ek=*/true);
  const int64_t Hp = ks.Hp;
  int64_t nsplit = key_splits(B, Tk);
  const int64_t KS = round_up((Tk + nsplit - 1) / std::max<int64_t>(nsplit, 1), kBK);
  nsplit = Tk > 0 ? (Tk + KS - 1) / KS : 1;
  const int64_t items = B * nsplit;
  constexpr int64_t ldS = round_up(kBK, 16);

  Buf<T> gq(nsplit * B * Tq * Hp), gk(B * Tk * Hp), dwr(items * Hp), dss(items);
  auto zero = [](T* p, int64_t n) {
    at::parallel_for(0, n, 1 << 16, [&](int64_t a, int64_t e) { std::fill(p + a, p + e, T(0)); });
  };
  zero(gq.get(), nsplit * B * Tq * Hp);
  zero(gk.get(), B * Tk * Hp);
  zero(dwr.get(), items * Hp);
  zero(dv, B * Tk * Dv);

  const int64_t item_work = Tq * ((Tk + nsplit - 1) / nsplit) * (2 * H + 2 * Dv);
  parallel_dynamic(items, grain_for(item_work), 1, [&](int64_t t0, int64_t t1) {
    RowSide<T> rs;
    rs.alloc(ks);
    Buf<T> S(kBQ * ldS), P(kBQ * ldS), DP(kBQ * ldS);
    int64_t jend[kBQ];
    for (int64_t it = t0; it < t1; ++it) {
      const int64_t b = it / nsplit, sp = it % nsplit;
      const int64_t ks0 = sp * KS, ks1 = std::min(Tk, ks0 + KS);
      T* gqb = gq.get() + (sp * B + b) * Tq * Hp;
      T* dwi = dwr.get() + it * Hp;
      T ds_sum = 0;
      for (int64_t i0 = 0; i0 < Tq; i0 += kBQ) {
        const int64_t nr = std::min(kBQ, Tq - i0);
        int64_t jmax = 0;
        for (int64_t r = 0; r < nr; ++r) {
          jend[r] = mk.jend(b, i0 + r);
          jmax = std::max(jmax, jend[r]);
        }
        const int64_t jlim = std::min(ks1, jmax);
        if (ks0 >= jlim) continue;
        rs.load(ks, q + (b * Tq + i0) * H, nr);
        for (int64_t j0 = ks0; j0 < jlim; j0 += kBK) {
          const int64_t nk = std::min(kBK, jlim - j0);
          tile_scores(ks, rs, b, j0, nk, S.get(), ldS);
          const T* vb = v + (b * Tk + j0) * Dv;
          const T* gob = go + (b * Tq + i0) * Dv;
          gemm_nt(gob, Dv, vb, Dv, DP.get(), ldS, nr, nk, Dv);  // dP = dO V^T
          for (int64_t r = 0; r < nr; ++r) {
            const int64_t i = b * Tq + i0 + r;
            const T lr = lse[i], dl = delta[i];
            const T* gwr = gw ? gw + i * Tk + j0 : nullptr;
            T* s = S.get() + r * ldS;
            T* p = P.get() + r * ldS;
            const int64_t je = std::min(nk, jend[r] - j0);
            const bool live = lr != std::numeric_limits<T>::infinity();
            for (int64_t j = 0; j < nk; ++j) {
              T pj = 0, dsj = 0;
              if (live && j < je && !mk.padded(b, j0 + j)) {
                pj = std::exp(s[j] - lr);
                T dp = DP[r * ldS + j];
                if (gwr) dp += gwr[j];
                dsj = pj * (dp - dl);
              }
              p[j] = pj;
              s[j] = dsj;
              ds_sum += dsj;
            }
          }
          // dV += P^T dO
          gemm_acc(P.get(), 1, ldS, gob, Dv, dv + (b * Tk + j0) * Dv, Dv, nk, nr, Dv);
          tile_grads(ks, rs, b, j0, nk, S.get(), ldS, gqb + i0 * Hp,
                     gk.get() + (b * Tk + j0) * Hp, dwi);
        }
      }
      dss[it] = ds_sum;
    }
  });

  // dq = 4 w (sum over splits of gq), dk = 4 w gk, in a fixed order.
  at::parallel_for(0, B * Tq, grain_for(H * nsplit), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / Tq, i = row % Tq;
      for (int64_t h = 0; h < H; ++h) {
        T s = 0;
        for (int64_t sp = 0; sp < nsplit; ++sp) s += gq[((sp * B + b) * Tq + i) * Hp + h];
        dq[row * H + h] = T(4) * w[h] * s;
      }
    }
  });
  at::parallel_for(0, B * Tk, grain_for(H), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row)
      for (int64_t h = 0; h < H; ++h) dk[row * H + h] = T(4) * w[h] * gk[row * Hp + h];
  });
  for (int64_t h = 0; h < H; ++h) dw[h] = 0;
  for (int64_t it = 0; it < items; ++it)
    for (int64_t h = 0; h < H; ++h) dw[h] += dss[it] - T(2) * dwr[it * Hp + h];
}

template void backward_impl<float>(const float*, const float*, const float*, const float*,
                                   const float*, const float*, const float*, const float*,
                                   const Masks&, int64_t, int64_t, int64_t, int64_t, int64_t,
                                   float*, float*, float*, float*);
template void backward_impl<double>(const double*, const double*, const double*, const double*,
                                    const double*, const double*, const double*, const double*,
                                    const Masks&, int64_t, int64_t, int64_t, int64_t, int64_t,
                                    double*, double*, double*, double*);

}  // namespace attnkern
