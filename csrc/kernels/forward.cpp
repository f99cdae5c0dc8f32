// Forward: online softmax per query row (running max m, running sum l, rescaled accumulator
// over Dv); saves only lse per row.
//
// Work items are (batch, span of query blocks, split of the keys). An item walks its keys in
// L2-sized chunks: it builds a chunk's key-side data (exp(2k) tiles) once, then every query
// block of its span sweeps that chunk, carrying m, l and the accumulator from chunk to chunk.
// So the key-side data is built once per item and read from cache, and the cost stays linear
// in Tk. Keys are split (split-K) when batches x spans are too few to keep the threads busy
// (long keys with few queries, e.g. one decoder step); the splits' partial states are merged
// in a fixed order at the end. Splits depend only on the shapes (spans, which do not change
// any row's arithmetic, may follow the thread count; see plan.cpp), and every row sees its
// keys in the same order, so results do not depend on the thread count.
#include "kernels.h"
#include "gemm.h"
#include "operands.h"
#include "scratch.h"
#include "tiles.h"

namespace attnkern {
namespace ATTNKERN_ISA {

template <typename T>
void forward_impl(const T* q, const T* k, const T* ek, Rows<T> v, const T* w,
                  const MaskArgs& mask_args, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                  int64_t Dv, T* out, T* lse, T* wts) {
  const Masks mk(mask_args);
  constexpr int64_t ldS = round_up(kBK, 16);
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  KeyParams<T> kpar;
  kpar.init(w, H, Tq, ek != nullptr);  // every span holds min(Tq, >= kBQ) rows
  const int64_t Hp = kpar.Hp;

  // Query spans, key splits and chunks: plan_forward (plan.cpp; invariants in api.h). Only
  // the spans may follow the thread count given here.
  const int64_t nt = at::in_parallel_region() || B * Tq * Tk * (H + Dv) < (int64_t(1) << 16)
                         ? 1  // runs inline anyway (see parallel_dynamic, grain_for)
                         : at::get_num_threads();
  const ForwardPlan plan = plan_forward(B, Tq, Tk, Hp, Dv, nt);
  const int64_t KC = plan.KC, nsplit = plan.nsplit, KS = plan.KS;
  const int64_t span = plan.span, nspan = plan.nspan, items = plan.items;

  // Running state of every row, per split: m and l (nsplit, B, Tq); the accumulator goes
  // straight to `out` without splits, else to (nsplit, B, Tq, Dv) partials.
  Buf<T> ml(2 * nsplit * B * Tq);
  Buf<T> part(nsplit > 1 ? nsplit * B * Tq * Dv : 0);
  T* const m_all = ml.get();
  T* const l_all = ml.get() + nsplit * B * Tq;
  T* const acc_all = nsplit > 1 ? part.get() : out;

  const int64_t item_work = std::min(span * kBQ, Tq) * std::min(KS, Tk) * (H + Dv);
  parallel_dynamic(items, grain_for(item_work), 1, [&](int64_t t0, int64_t t1) {
    RowSide<T> rs;
    rs.alloc(kpar);
    KeyChunk<T> kc;
    kc.alloc(kpar, std::min(KC, std::max<int64_t>(Tk, 1)), /*need_ek=*/false);
    Buf<T> S(kBQ * ldS);
    int64_t jend[kBQ];
    for (int64_t it = t0; it < t1; ++it) {
      const int64_t b = it / (nspan * nsplit), sg = it / nsplit % nspan, sp = it % nsplit;
      const int64_t r0 = sg * span * kBQ, r1 = std::min(Tq, r0 + span * kBQ);
      const int64_t ks0 = sp * KS, ks1 = std::min(Tk, ks0 + KS);
      T* m = m_all + (sp * B + b) * Tq;
      T* l = l_all + (sp * B + b) * Tq;
      T* acc = acc_all + (sp * B + b) * Tq * Dv;
      int64_t jspan = 0;
      for (int64_t i = r0; i < r1; ++i) {
        m[i] = ninf;
        l[i] = 0;
        jspan = std::max(jspan, mk.jend(b, i));
      }
      std::fill(acc + r0 * Dv, acc + r1 * Dv, T(0));

      for (int64_t c0 = ks0; c0 < std::min(ks1, jspan); c0 += KC) {
        const int64_t c1 = std::min({c0 + KC, ks1, jspan});
        kc.load(kpar, k + (b * Tk + c0) * H, ek ? ek + (b * Tk + c0) * H : nullptr, c1 - c0,
                /*need_ek=*/false);
        for (int64_t i0 = r0; i0 < r1; i0 += kBQ) {
          const int64_t nr = std::min(kBQ, r1 - i0);
          const int64_t jlim = std::min(c1, mk.jends(b, i0, nr, jend));
          if (c0 >= jlim) continue;
          rs.load(kpar, q + (b * Tq + i0) * H, nr);
          for (int64_t j0 = c0; j0 < jlim; j0 += kBK) {
            const int64_t nk = std::min(kBK, jlim - j0);
            tile_scores(kpar, kc, rs, j0 - c0, nk, S.get(), ldS);
            for (int64_t r = 0; r < nr; ++r) {
              const int64_t i = i0 + r;
              T* s = S.get() + r * ldS;
              const int64_t je = std::min(nk, jend[r] - j0);
              T bm = ninf;
              for (int64_t j = 0; j < nk; ++j) {
                if (j >= je || mk.padded(b, j0 + j))
                  s[j] = ninf;
                else if (s[j] > bm || s[j] != s[j])  // a NaN score sticks, poisoning the row
                  bm = bm != bm ? bm : s[j];
              }
              if (wts) std::copy(s, s + nk, wts + ((b * Tq + i) * Tk + j0));
              if (bm == ninf) {  // nothing usable in this block for this row
                std::fill(s, s + nk, T(0));
                continue;
              }
              const T mnew = bm != bm ? bm : std::max(m[i], bm);
              const T alpha = m[i] == ninf ? T(0) : std::exp(m[i] - mnew);
              const T sum = exp_shift(s, nk, mnew);
              if (alpha != T(1)) {
                T* a = acc + i * Dv;
                for (int64_t d = 0; d < Dv; ++d) a[d] *= alpha;
              }
              l[i] = l[i] * alpha + sum;
              m[i] = mnew;
            }
            // acc += P V for this block
            gemm_acc(S.get(), ldS, 1, v.row(b, j0), v.st, acc + i0 * Dv, Dv, nr, nk, Dv);
          }
        }
      }
    }
  });

  // Merge the splits in order (a split that saw no key has m = -inf, l = 0 and is skipped;
  // a NaN m poisons the row), normalise, and turn saved raw scores into weights.
  at::parallel_for(0, B * Tq, grain_for(nsplit * Dv + (wts ? Tk : 0)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T mx = ninf;
      for (int64_t sp = 0; sp < nsplit; ++sp) {
        const T ms = m_all[sp * B * Tq + i];
        mx = (ms != ms || mx != mx) ? std::numeric_limits<T>::quiet_NaN() : std::max(mx, ms);
      }
      T* o = out + i * Dv;
      T lsum = 0;
      if (nsplit == 1) {
        lsum = l_all[i];
      } else {
        std::fill(o, o + Dv, T(0));
        for (int64_t sp = 0; sp < nsplit; ++sp) {
          const T ms = m_all[sp * B * Tq + i];
          if (ms == ninf) continue;
          const T c = std::exp(ms - mx);
          lsum += c * l_all[sp * B * Tq + i];
          const T* a = part.get() + (sp * B * Tq + i) * Dv;
          for (int64_t d = 0; d < Dv; ++d) o[d] += c * a[d];
        }
      }
      if (lsum != T(0)) {  // l is > 0 or NaN here
        const T inv = T(1) / lsum;
        for (int64_t d = 0; d < Dv; ++d) o[d] *= inv;
        lse[i] = mx + std::log(lsum);
      } else {
        std::fill(o, o + Dv, T(0));
        lse[i] = std::numeric_limits<T>::infinity();
      }
      if (wts) {
        const int64_t je = mk.jend(i / Tq, i % Tq);
        T* wr = wts + i * Tk;
        if (lsum != T(0))
          exp_shift(wr, je, lse[i]);
        else
          std::fill(wr, wr + je, T(0));
        std::fill(wr + je, wr + Tk, T(0));
      }
    }
  });
}

template void forward_impl<float>(const float*, const float*, const float*, Rows<float>,
                                  const float*, const MaskArgs&, int64_t, int64_t, int64_t,
                                  int64_t, int64_t, float*, float*, float*);
template void forward_impl<double>(const double*, const double*, const double*, Rows<double>,
                                   const double*, const MaskArgs&, int64_t, int64_t, int64_t,
                                   int64_t, int64_t, double*, double*, double*);

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
