// The per-call operand data the tile kernels read: KeyParams (padded width, zero-padded
// weight, which score path), KeyChunk (one chunk of keys: padded keys, exp(2k) rows and
// transposed tiles, per-block safe flags) and RowSide (one query block: padded rows, exp(2q)).
// Separate from the tiles because this is the data layout and its preparation (built once per
// call, chunk or block), while tiles.h is the arithmetic that sweeps it; how many keys a
// chunk holds is part of the work plan (plan.cpp).
#pragma once

#include "scratch.h"

namespace attnkern {
namespace ATTNKERN_ISA {

// Per-call key-side constants: padded width, zero-padded weight, whether to factorise.
template <typename T>
struct KeyParams {
  int64_t H = 0, Hp = 0;
  bool fact = false;
  // Factorised scores h-vectorised straight from exp(2k) rows (no transposed tiles): with a
  // caller's key_exp and few rows (a decoder step), where a transpose would not pay off.
  bool hpass = false;
  Buf<T> w;  // (Hp,) zero-padded weight
  T sumw = 0;

  // rows: query rows that will share one chunk's exp(2k) (below kFactMinTq the
  // precompute costs as much as it saves, unless the caller gives it: has_key_exp).
  void init(const T* weight, int64_t H_, int64_t rows, bool has_key_exp) {
    H = H_;
    constexpr bool vec = ATTNKERN_VEC && std::is_same<T, float>::value;
    Hp = vec ? round_up(H, 16) : H;
    w.alloc(Hp);
    sumw = 0;
    for (int64_t h = 0; h < Hp; ++h) {
      w[h] = h < H ? weight[h] : T(0);
      sumw += w[h];
    }
    fact = vec && (rows >= kFactMinTq || has_key_exp);
    hpass = fact && rows < kFactMinTq;
  }
};

// Key-side data of one chunk of keys [c0, c0 + nc) of one batch, built by the thread that
// uses it (per-thread buffers, reused across chunks):
//   kp  (nc, Hp)           raw keys, H zero-padded to Hp (aliases the input when H == Hp)
//   ekp (nc, Hp)           exp(2k) (factorised path, need_ek: the h-vectorised passes):
//                          the caller's key_exp when given and H == Hp, else built in ek
//   ekt (nblk, Hp, kBK)    exp(2k), each key block transposed into its own tile
//                          (factorised path, key-vectorised score pass; not with hpass)
//   safe (nblk)            whether every |k| of the block is <= kSafe (else direct path)
// Chunk-local rather than one (B, Tk, Hp) table per call: no per-call allocation that grows
// with Tk, and the data a query block sweeps stays in cache (cost linear in Tk).
template <typename T>
struct KeyChunk {
  int64_t nc = 0, nblk = 0;
  const T* kp = nullptr;
  const float* ekp = nullptr;
  Buf<T> kbuf;
  Buf<float> ek, ekt;
  Buf<uint8_t> safe;

  // Reserve buffers for chunks of up to kc keys.
  void alloc(const KeyParams<T>& P, int64_t kc, bool need_ek) {
    const int64_t nb = (kc + kBK - 1) / kBK;
    if (P.Hp != P.H) kbuf.alloc(kc * P.Hp);
    if (P.fact) {
      if (need_ek || P.hpass) ek.alloc(kc * P.Hp);
      if (!P.hpass) ekt.alloc(nb * P.Hp * kBK);
      safe.alloc(nb);
    }
  }

  // k: first key of the chunk, rows of length H; key_exp: exp(2k) of the same keys or null;
  // nc_ <= the kc given to alloc.
  void load(const KeyParams<T>& P, const T* k, const T* key_exp, int64_t nc_, bool need_ek) {
    nc = nc_;
    nblk = (nc + kBK - 1) / kBK;
    const int64_t H = P.H, Hp = P.Hp;
    if (Hp == H) {
      kp = k;
    } else {
      T* dst = kbuf.get();
      for (int64_t r = 0; r < nc; ++r) {
        std::copy(k + r * H, k + (r + 1) * H, dst + r * Hp);
        std::fill(dst + r * Hp + H, dst + (r + 1) * Hp, T(0));
      }
      kp = dst;
    }
    if (P.fact) build_fact(P, key_exp, need_ek || P.hpass);
  }

 private:
  void build_fact(const KeyParams<T>& P, const T* key_exp, bool keep) {
#if ATTNKERN_VEC
    if constexpr (std::is_same<T, float>::value) {
      const int64_t H = P.H, Hp = P.Hp;
      const bool alias = key_exp != nullptr && H == Hp;  // read the caller's rows in place
      ekp = alias ? key_exp : ek.get();
      for (int64_t t = 0; t < nblk; ++t) {
        const int64_t j0 = t * kBK, j1 = std::min(nc, j0 + kBK);
        const int64_t jp1 = std::min(round_up(nc, 16), j0 + kBK);
        // exp(2k) of the block's keys: kept in ek when an h-vectorised pass needs them, else
        // staged in a one-block buffer on the way to the transposed tile.
        float* e = alias ? nullptr : keep ? ek.get() + j0 * Hp : stage(Hp);
        vf mx = vzero(), mn = vset1(kSafeExpHi);
        for (int64_t j = j0; j < j1; ++j) {
          const float* src = kp + j * Hp;
          float* dst = alias ? nullptr : e + (j - j0) * Hp;
          if (key_exp != nullptr) {
            if (!alias) {  // padding lanes: exp(0) = 1, as for the padded keys (weight 0)
              std::copy(key_exp + j * H, key_exp + (j + 1) * H, dst);
              std::fill(dst + H, dst + Hp, 1.f);
            }
            // the range test on exp(2k) itself: reading the raw keys only for it would add
            // a third (B, Tk, H) stream to a step's ek and values (~1/3 of its bytes)
            const float* er = alias ? key_exp + j * H : dst;
            for (int64_t h = 0; h < Hp; h += 16) {
              const vf x = vload(er + h);
              mx = vmax(mx, x);
              mn = vmin(mn, x);
            }
            continue;
          }
          for (int64_t h = 0; h < Hp; h += 16) {
            vf x = vload(src + h);
            mx = vmax(mx, vabs(x));
            vstore(dst + h, exp16(vadd(x, x)));
          }
        }
        // |k| <= kSafe, or exp(-2 kSafe) <= exp(2k) <= exp(2 kSafe) from a caller's key_exp
        // (an infinite key gives 0 or inf, out of range). NaN compares false.
        safe[t] = key_exp != nullptr
                      ? vall_le(mx, vset1(kSafeExpHi)) && vall_le(vset1(kSafeExpLo), mn)
                      : vall_le(mx, vset1(kSafe));
        if (P.hpass) continue;
        if (alias) e = const_cast<float*>(key_exp) + j0 * Hp;  // read only below
        // transpose into the block's tile in 16 x 16 register tiles; padding keys get
        // exp(0) = 1 (finite: their scores are computed, then masked)
        float* tile = ekt.get() + t * Hp * kBK;
        for (int64_t jg = j0; jg < jp1; jg += 16) {
          const int64_t nv = std::min<int64_t>(16, j1 - jg);
          const float* src = e + (jg - j0) * Hp;
          float* dst = tile + (jg - j0);
          for (int64_t h0 = 0; h0 < Hp; h0 += 16) {
            vf r[16];
#pragma GCC unroll 16
            for (int u = 0; u < 16; ++u)
              r[u] = u < nv ? vload(src + u * Hp + h0) : vset1(1.f);
            vtranspose16(r);
#pragma GCC unroll 16
            for (int u = 0; u < 16; ++u) vstore(dst + (h0 + u) * kBK, r[u]);
          }
        }
      }
    }
#endif
  }
  Buf<float> stage_;
  float* stage(int64_t Hp) {
    if (stage_.get() == nullptr) stage_.alloc(kBK * Hp);
    return stage_.get();
  }
};

// Per-task query-row data: padded rows, exp(2q), and whether all rows are in the safe range.
template <typename T>
struct RowSide {
  int64_t nr = 0, Hp = 0;
  Buf<T> qp;     // (kBQ, Hp)
  Buf<float> eq; // (kBQ, Hp) exp(2q) (factorised path only)
  bool safe = false;

  void alloc(const KeyParams<T>& ks) {
    Hp = ks.Hp;
    qp.alloc(kBQ * Hp);
    if (ks.fact) eq.alloc(kBQ * Hp);
  }
  // q: first row of the block, rows of length H.
  void load(const KeyParams<T>& ks, const T* q, int64_t nrows) {
    nr = nrows;
    const int64_t H = ks.H;
    for (int64_t r = 0; r < nr; ++r) {
      std::copy(q + r * H, q + (r + 1) * H, qp.get() + r * Hp);
      std::fill(qp.get() + r * Hp + H, qp.get() + (r + 1) * Hp, T(0));
    }
    safe = false;
#if ATTNKERN_VEC
    if constexpr (std::is_same<T, float>::value) {
      if (ks.fact) {
        vf mx = vzero();
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t h = 0; h < Hp; h += 16) {
            vf x = vload(qp.get() + r * Hp + h);
            mx = vmax(mx, vabs(x));
            vstore(eq.get() + r * Hp + h, exp16(vadd(x, x)));
          }
        safe = vall_le(mx, vset1(kSafe));
      }
    }
#endif
  }
};

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
