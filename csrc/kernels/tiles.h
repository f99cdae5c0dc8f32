// Key-side precompute, row-side scratch, and the two tile kernels used by forward and
// backward: scores(S tile) and grads(dS tile -> gq, gk, dwr).
#pragma once

#include <cstdlib>
#include <memory>
#include <utility>

#include "common.h"

namespace attnkern {
namespace ATTNKERN_ISA {

// Per-thread cache of freed scratch blocks. Large blocks from malloc are fresh mmaps, so
// each call would pay page faults on every scratch page (about 7% of a TRAIN-shape
// backward); reusing them avoids that. Bounded: at most kCacheBytes kept per thread.
class BlockCache {
 public:
  static constexpr size_t kCacheBytes = size_t(32) << 20;
  ~BlockCache() {
    for (auto& b : blocks_) std::free(b.second);
  }
  void* take(size_t bytes) {
    int best = -1;
    for (int i = 0; i < (int)blocks_.size(); ++i)
      if (blocks_[i].first >= bytes && blocks_[i].first <= 2 * bytes + 4096 &&
          (best < 0 || blocks_[i].first < blocks_[best].first))
        best = i;
    if (best < 0) return nullptr;
    void* p = blocks_[best].second;
    total_ -= blocks_[best].first;
    blocks_.erase(blocks_.begin() + best);
    return p;
  }
  void give(void* p, size_t bytes) {
    if (bytes > kCacheBytes / 2) {
      std::free(p);
      return;
    }
    blocks_.emplace_back(bytes, p);
    total_ += bytes;
    while (total_ > kCacheBytes) {  // drop the oldest
      total_ -= blocks_.front().first;
      std::free(blocks_.front().second);
      blocks_.erase(blocks_.begin());
    }
  }
  static BlockCache& local() {
    static thread_local BlockCache cache;
    return cache;
  }

 private:
  std::vector<std::pair<size_t, void*>> blocks_;
  size_t total_ = 0;
};

// Uninitialised, 64-byte aligned buffer (every element is written before it is read).
template <typename T>
struct Buf {
  T* ptr = nullptr;
  size_t bytes = 0;
  Buf() = default;
  explicit Buf(int64_t n) { alloc(n); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { release(); }
  void alloc(int64_t n) {
    release();
    bytes = (size_t)round_up(std::max<int64_t>(n, 1) * (int64_t)sizeof(T), 64);
    ptr = static_cast<T*>(BlockCache::local().take(bytes));
    if (ptr == nullptr) ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
    TORCH_CHECK(ptr != nullptr, "attnkern: out of memory allocating ", bytes, " bytes");
  }
  void release() {
    if (ptr != nullptr) BlockCache::local().give(ptr, bytes);
    ptr = nullptr;
  }
  T* get() const { return ptr; }
  T& operator[](int64_t i) const { return ptr[i]; }
};


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

// Keys to process per chunk: a chunk's key-side data (bytes_per_key each) is built once and
// swept by every query block of its task, so it is sized to stay in L2 (kChunkBytes).
// At least kChunkMinKeys so that re-deriving each query block's exp(2q) per chunk stays a
// small fraction of the chunk's work. A multiple of kBK; depends only on the shapes.
inline int64_t chunk_keys(int64_t Tk, int64_t bytes_per_key) {
  const int64_t kc = round_up(kChunkBytes / std::max<int64_t>(bytes_per_key, 1) - kBK + 1, kBK);
  return std::min(std::max(kc, kChunkMinKeys), std::max(round_up(Tk, kBK), kBK));
}

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
        vf mx = vzero();
        for (int64_t j = j0; j < j1; ++j) {
          const float* src = kp + j * Hp;
          float* dst = alias ? nullptr : e + (j - j0) * Hp;
          if (key_exp != nullptr) {
            for (int64_t h = 0; h < Hp; h += 16) mx = vmax(mx, vabs(vload(src + h)));
            if (!alias) {  // padding lanes: exp(0) = 1, as for the padded keys (weight 0)
              std::copy(key_exp + j * H, key_exp + (j + 1) * H, dst);
              std::fill(dst + H, dst + Hp, 1.f);
            }
            continue;
          }
          for (int64_t h = 0; h < Hp; h += 16) {
            vf x = vload(src + h);
            mx = vmax(mx, vabs(x));
            vstore(dst + h, exp16(vadd(x, x)));
          }
        }
        // NaN compares false: a NaN key makes its block take the direct path.
        safe[t] = vall_le(mx, vset1(kSafe));
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
    if (P.fact && rs.safe && kc.safe[j0 / kBK]) {
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
