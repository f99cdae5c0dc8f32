// Forward: one pass per block of query rows over the key blocks with an online softmax
// (running max m, running sum l, rescaled accumulator over Dv). Saves only lse per row.
// Parallel over (batch, query block); every row is computed by exactly one task, so the
// result does not depend on the thread count.
#include "kernels.h"
#include "gemm.h"
#include "tiles.h"

namespace attnkern {

template <typename T>
void forward_impl(const T* q, const T* k, const T* v, const T* w, const Masks& mk, int64_t B,
                  int64_t Tq, int64_t Tk, int64_t H, int64_t Dv, T* out, T* lse, T* wts) {
  const int64_t nqb = (Tq + kBQ - 1) / kBQ;
  constexpr int64_t ldS = round_up(kBK, 16);
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const int64_t work = std::min(kBQ, Tq) * Tk * (H + Dv);

  // Batches in groups whose key-side tables (exp(2k): Tk x H floats a batch) stay near 8 MiB:
  // such tables come back from the scratch cache instead of being page-faulted in anew each
  // call, and stay in cache while the group's query blocks sweep them (long Tk ran 1.85x
  // over linear at Tk=16k with one whole-batch table). Enough tasks per group for every thread.
  const int64_t table_bytes = std::max<int64_t>(1, round_up(Tk, 16) * round_up(H, 16) * 4);
  const int64_t min_group = (2 * at::get_num_threads() + nqb - 1) / nqb;
  const int64_t G = std::max<int64_t>({int64_t(1), (int64_t(8) << 20) / table_bytes, min_group});
  for (int64_t b0 = 0; b0 < B; b0 += G) {
  const int64_t nb = std::min(G, B - b0);
  KeySide<T> ks;
  ks.build(k + b0 * Tk * H, w, nb, Tk, H, Tq, /*need_ek=*/false);
  parallel_dynamic(nb * nqb, grain_for(work), grain_for(work, int64_t(1) << 17), [&](int64_t t0, int64_t t1) {
    RowSide<T> rs;
    rs.alloc(ks);
    Buf<T> S(kBQ * ldS), acc(kBQ * std::max<int64_t>(Dv, 1));
    T m[kBQ], l[kBQ];
    int64_t jend[kBQ];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bl = t / nqb, b = b0 + bl, i0 = (t % nqb) * kBQ, nr = std::min(kBQ, Tq - i0);
      int64_t jmax = 0;
      for (int64_t r = 0; r < nr; ++r) {
        jend[r] = mk.jend(b, i0 + r);
        jmax = std::max(jmax, jend[r]);
        m[r] = ninf;
        l[r] = 0;
      }
      std::fill(acc.get(), acc.get() + nr * Dv, T(0));
      if (jmax > 0) rs.load(ks, q + (b * Tq + i0) * H, nr);

      for (int64_t j0 = 0; j0 < jmax; j0 += kBK) {
        const int64_t nk = std::min(kBK, jmax - j0);
        tile_scores(ks, rs, bl, j0, nk, S.get(), ldS);
        for (int64_t r = 0; r < nr; ++r) {
          T* s = S.get() + r * ldS;
          const int64_t je = std::min(nk, jend[r] - j0);
          T bm = ninf;
          for (int64_t j = 0; j < nk; ++j) {
            if (j >= je || mk.padded(b, j0 + j))
              s[j] = ninf;
            else if (s[j] > bm || s[j] != s[j])  // a NaN score sticks, poisoning the row
              bm = bm != bm ? bm : s[j];
          }
          if (wts) std::copy(s, s + nk, wts + ((b * Tq + i0 + r) * Tk + j0));
          if (bm == ninf) {  // nothing usable in this block for this row
            std::fill(s, s + nk, T(0));
            continue;
          }
          const T mnew = bm != bm ? bm : std::max(m[r], bm);
          const T alpha = m[r] == ninf ? T(0) : std::exp(m[r] - mnew);
          const T sum = exp_shift(s, nk, mnew);
          if (alpha != T(1)) {
            T* a = acc.get() + r * Dv;
            for (int64_t d = 0; d < Dv; ++d) a[d] *= alpha;
          }
          l[r] = l[r] * alpha + sum;
          m[r] = mnew;
        }
        // acc += P V for this block
        gemm_acc(S.get(), ldS, 1, v + (b * Tk + j0) * Dv, Dv, acc.get(), Dv, nr, nk, Dv);
      }

      for (int64_t r = 0; r < nr; ++r) {
        const int64_t i = b * Tq + i0 + r;
        T* o = out + i * Dv;
        const T* a = acc.get() + r * Dv;
        if (l[r] != T(0)) {  // l is > 0 or NaN here
          const T inv = T(1) / l[r];
          for (int64_t d = 0; d < Dv; ++d) o[d] = a[d] * inv;
          lse[i] = m[r] + std::log(l[r]);
        } else {
          std::fill(o, o + Dv, T(0));
          lse[i] = std::numeric_limits<T>::infinity();
        }
        if (wts) {
          T* wr = wts + i * Tk;
          if (l[r] != T(0))
            exp_shift(wr, jmax, lse[i]);
          else
            std::fill(wr, wr + jmax, T(0));
          std::fill(wr + jmax, wr + Tk, T(0));
        }
      }
    }
  });
  }
}

template void forward_impl<float>(const float*, const float*, const float*, const float*,
                                  const Masks&, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  float*, float*, float*);
template void forward_impl<double>(const double*, const double*, const double*, const double*,
                                   const Masks&, int64_t, int64_t, int64_t, int64_t, int64_t,
                                   double*, double*, double*);

}  // namespace attnkern
