// Standalone numerics check of the kernel core, without libtorch: every ISA table linked in
// (scalar plus neon, or scalar plus avx2 / avx512) runs forward and backward, float and
// double, with and without key_exp, on shapes and masks that hit each code path, against a
// naive double reference.
// Used to run the NEON kernels under qemu-aarch64 (no aarch64 libtorch here); see
// scripts/kernel_check.sh. Threading is stubbed to one thread (the kernels' at::parallel_for
// then runs inline). Exit status 0 when every path is within tolerance.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <c10/util/ParallelGuard.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../kernels/api.h"

// The few libtorch functions the kernels call, for a single-threaded run.
namespace at {
int get_num_threads() { return 1; }
int get_thread_num() { return 0; }
bool in_parallel_region() { return false; }
void init_num_threads() {}
namespace internal {
void set_thread_num(int) {}
}  // namespace internal
}  // namespace at
namespace c10 {
ParallelGuard::ParallelGuard(bool) : previous_state_(false) {}
ParallelGuard::~ParallelGuard() = default;
namespace detail {
[[noreturn]] void torchCheckFail(const char* func, const char* file, uint32_t line,
                                 const std::string& msg) {
  std::fprintf(stderr, "TORCH_CHECK failed in %s (%s:%u): %s\n", func, file, line, msg.c_str());
  std::abort();
}
}  // namespace detail
}  // namespace c10

namespace {

using attnkern::KernelTable;
using attnkern::MaskArgs;

struct Case {
  int64_t B, Tq, Tk, H, Dv;
  bool pad, len, causal;
};

struct Data {
  Case c;
  std::vector<double> q, k, v, w, go;
  std::vector<uint8_t> pad;  // bool storage
  std::vector<int64_t> len;
  // reference results
  std::vector<double> out, lse, delta, dq, dk, dv, dw;
};

bool allowed(const Data& d, int64_t b, int64_t i, int64_t j) {
  const Case& c = d.c;
  if (c.len && j >= d.len[b]) return false;
  if (c.causal && j > i + c.Tk - c.Tq) return false;
  if (c.pad && d.pad[b * c.Tk + j]) return false;
  return true;
}

void reference(Data& d) {
  const Case& c = d.c;
  const int64_t B = c.B, Tq = c.Tq, Tk = c.Tk, H = c.H, Dv = c.Dv;
  d.out.assign(B * Tq * Dv, 0);
  d.lse.assign(B * Tq, INFINITY);
  d.delta.assign(B * Tq, 0);
  d.dq.assign(B * Tq * H, 0);
  d.dk.assign(B * Tk * H, 0);
  d.dv.assign(B * Tk * Dv, 0);
  d.dw.assign(H, 0);
  std::vector<double> s(Tk), p(Tk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < Tk; ++j) {
        double e = 0;
        for (int64_t h = 0; h < H; ++h)
          e += d.w[h] * std::tanh(d.q[(b * Tq + i) * H + h] + d.k[(b * Tk + j) * H + h]);
        s[j] = e;
        if (allowed(d, b, i, j)) mx = std::max(mx, e);
      }
      if (mx == -INFINITY) continue;  // no usable key: zero output and gradients
      double l = 0;
      for (int64_t j = 0; j < Tk; ++j) l += allowed(d, b, i, j) ? std::exp(s[j] - mx) : 0;
      d.lse[b * Tq + i] = mx + std::log(l);
      double* o = &d.out[(b * Tq + i) * Dv];
      const double* g = &d.go[(b * Tq + i) * Dv];
      for (int64_t j = 0; j < Tk; ++j) {
        p[j] = allowed(d, b, i, j) ? std::exp(s[j] - d.lse[b * Tq + i]) : 0;
        for (int64_t x = 0; x < Dv; ++x) o[x] += p[j] * d.v[(b * Tk + j) * Dv + x];
      }
      double delta = 0;
      for (int64_t x = 0; x < Dv; ++x) delta += o[x] * g[x];
      d.delta[b * Tq + i] = delta;
      for (int64_t j = 0; j < Tk; ++j) {
        if (p[j] == 0) continue;
        double dp = 0;
        for (int64_t x = 0; x < Dv; ++x) {
          dp += g[x] * d.v[(b * Tk + j) * Dv + x];
          d.dv[(b * Tk + j) * Dv + x] += p[j] * g[x];
        }
        const double ds = p[j] * (dp - delta);
        for (int64_t h = 0; h < H; ++h) {
          const double t = std::tanh(d.q[(b * Tq + i) * H + h] + d.k[(b * Tk + j) * H + h]);
          d.dq[(b * Tq + i) * H + h] += ds * d.w[h] * (1 - t * t);
          d.dk[(b * Tk + j) * H + h] += ds * d.w[h] * (1 - t * t);
          d.dw[h] += ds * t;
        }
      }
    }
}

Data make(const Case& c, uint32_t seed) {
  Data d;
  d.c = c;
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd;
  auto fill = [&](std::vector<double>& x, int64_t n, double scale) {
    x.resize(n);
    for (auto& e : x) e = scale * nd(gen);
  };
  fill(d.q, c.B * c.Tq * c.H, 1);
  fill(d.k, c.B * c.Tk * c.H, 1);
  fill(d.v, c.B * c.Tk * c.Dv, 1);
  fill(d.w, c.H, 1 / std::sqrt(double(c.H)));
  fill(d.go, c.B * c.Tq * c.Dv, 1);
  d.pad.resize(c.B * c.Tk);
  for (auto& e : d.pad) e = (gen() % 5) == 0;
  d.len.resize(c.B);
  for (int64_t b = 0; b < c.B; ++b) d.len[b] = b == 0 ? c.Tk : int64_t(gen() % (c.Tk + 1));
  reference(d);
  return d;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// max |a - b| / (1 + max |b|) over one output
template <typename T>
double err(const std::vector<T>& a, const std::vector<double>& b) {
  double e = 0, m = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    if (std::isinf(b[i])) {
      if (!(std::isinf(double(a[i])) && a[i] > 0)) return INFINITY;
      continue;
    }
    e = std::max(e, std::fabs(double(a[i]) - b[i]));
    m = std::max(m, std::fabs(b[i]));
  }
  return e / (1 + m);
}

// The value rows of a dense (B, Tk, Dv) vector.
template <typename T>
attnkern::Rows<T> rows(const std::vector<T>& v, const Case& c) {
  return attnkern::Rows<T>{v.data(), c.Tk * c.Dv, c.Dv};
}

// key_exp: pass exp(2k) as the prepared keys do (the factorised paths read it).
template <typename T>
double run(const KernelTable& kt, const Data& d, bool key_exp) {
  const Case& c = d.c;
  const auto q = cast<T>(d.q), k = cast<T>(d.k), v = cast<T>(d.v), w = cast<T>(d.w);
  const auto go = cast<T>(d.go), lse_ref = cast<T>(d.lse), delta_ref = cast<T>(d.delta);
  std::vector<T> ek(k.size());
  for (size_t i = 0; i < k.size(); ++i) ek[i] = std::exp(T(2) * k[i]);
  const T* ekp = key_exp ? ek.data() : nullptr;
  std::vector<char> padc(d.pad.begin(), d.pad.end());
  static_assert(sizeof(bool) == sizeof(char), "bool storage");
  const MaskArgs mk{c.pad ? reinterpret_cast<const bool*>(padc.data()) : nullptr,
                    c.len ? d.len.data() : nullptr, c.causal, c.Tq, c.Tk};
  std::vector<T> out(c.B * c.Tq * c.Dv), lse(c.B * c.Tq), wts(c.B * c.Tq * c.Tk);
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size()), dw(w.size());
  auto fwd = std::is_same<T, float>::value ? (void*)kt.fwd_f : (void*)kt.fwd_d;
  auto bwd = std::is_same<T, float>::value ? (void*)kt.bwd_f : (void*)kt.bwd_d;
  reinterpret_cast<attnkern::ForwardFn<T>>(fwd)(q.data(), k.data(), ekp, rows(v, c),
                                                w.data(),
                                                mk, c.B, c.Tq, c.Tk, c.H, c.Dv, out.data(),
                                                lse.data(), wts.data());
  double e = err(out, d.out);
  e = std::max(e, err(lse, d.lse));
  // Backward twice: p recomputed, and p read from the forward's weights.
  for (const T* probs : {static_cast<const T*>(nullptr), static_cast<const T*>(wts.data())}) {
    reinterpret_cast<attnkern::BackwardFn<T>>(bwd)(
        go.data(), nullptr, q.data(), k.data(), ekp, rows(v, c), w.data(), lse_ref.data(),
        delta_ref.data(), probs, mk, c.B, c.Tq, c.Tk, c.H, c.Dv, dq.data(), dk.data(),
        dv.data(), dw.data());
    for (auto pr : {std::make_pair(&dq, &d.dq), std::make_pair(&dk, &d.dk),
                    std::make_pair(&dv, &d.dv)})
      e = std::max(e, err(*pr.first, *pr.second));
    e = std::max(e, err(dw, d.dw));
  }
  return e;
}

// rows_linear.cpp's y = x W^T and dx = g W (float only; null on the scalar path) against a
// double reference, each over its whole range and split in two ranges at an odd point.
// Returns the worst error relative to 1 + |reference|.
double run_rows(const KernelTable& kt, int64_t M, int64_t K, int64_t N) {
  std::mt19937 gen(uint32_t(M * 131 + K * 7 + N));
  std::normal_distribution<double> nd;
  std::vector<float> x(M * K), W(N * K), g(M * N);
  for (auto* v : {&x, &W, &g})
    for (auto& e : *v) e = float(nd(gen));
  double e = 0;
  for (int split = 0; split < 2; ++split) {
    std::vector<float> y(M * N, -1.f), dx(M * K, -1.f);
    const int64_t nh = split ? N / 3 : N, kh = split ? K / 3 : K;
    kt.rows_fwd(x.data(), W.data(), M, K, N, 0, nh, y.data());
    if (nh < N) kt.rows_fwd(x.data(), W.data(), M, K, N, nh, N, y.data());
    kt.rows_bwd(g.data(), W.data(), M, N, K, 0, kh, dx.data());
    if (kh < K) kt.rows_bwd(g.data(), W.data(), M, N, K, kh, K, dx.data());
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < N; ++n) {
        double r = 0;
        for (int64_t k = 0; k < K; ++k) r += double(x[m * K + k]) * W[n * K + k];
        e = std::max(e, std::abs(y[m * N + n] - r) / (1 + std::abs(r)));
      }
      for (int64_t k = 0; k < K; ++k) {
        double r = 0;
        for (int64_t n = 0; n < N; ++n) r += double(g[m * N + n]) * W[n * K + k];
        e = std::max(e, std::abs(dx[m * K + k] - r) / (1 + std::abs(r)));
      }
    }
  }
  return e;
}

}  // namespace

int main() {
  const KernelTable* tables[] = {
      &attnkern::scalar::table,
#if defined(__aarch64__)
      &attnkern::neon::table,
#elif defined(__x86_64__)
      &attnkern::avx2::table,
#endif
  };
  // (B, Tq, Tk, H, Dv, pad, len, causal): the key block is 64, the vector 16 lanes, the
  // factorised path needs Tq >= 4; Tq = 1 is a decoder step.
  const Case cases[] = {
      {2, 3, 1, 16, 4, false, false, false},   {2, 5, 7, 5, 6, true, true, true},
      {3, 9, 33, 24, 20, true, false, false},  {1, 20, 129, 100, 8, false, true, false},
      {2, 70, 250, 40, 33, true, true, true},  {8, 12, 64, 32, 48, false, false, true},
      {2, 40, 16, 48, 16, false, false, true}, {4, 1, 37, 24, 12, true, true, false},
  };
  int failures = 0;
  for (const KernelTable* kt : tables)
    for (const Case& c : cases) {
      const Data d = make(c, uint32_t(c.B * 1000 + c.Tk));
      const double ef = run<float>(*kt, d, false), ed = run<double>(*kt, d, false);
      // with key_exp: float within the float tolerance, double within the double one
      const double ek = std::max(run<float>(*kt, d, true), run<double>(*kt, d, true) * 2e6);
      const bool ok = ef <= 2e-4 && ed <= 1e-10 && ek <= 2e-4;
      failures += !ok;
      std::printf(
          "%-7s B%ld-Tq%ld-Tk%ld-H%ld-Dv%ld pad%d len%d causal%d  float %.2e  double %.2e  "
          "key_exp %.2e  %s\n",
          kt->name, (long)c.B, (long)c.Tq, (long)c.Tk, (long)c.H, (long)c.Dv, c.pad, c.len,
          c.causal, ef, ed, ek, ok ? "ok" : "FAIL");
    }
  // (M, K, N): a decoder step's query layer, ragged everything, one row, K a vector
  const int64_t rows_cases[][3] = {{4, 1024, 128}, {3, 33, 5}, {1, 7, 3}, {5, 16, 9},
                                   {16, 40, 70}, {7, 100, 2}};
  for (const KernelTable* kt : tables) {
    if (kt->rows_fwd == nullptr) continue;
    for (const auto& rc : rows_cases) {
      const double e = run_rows(*kt, rc[0], rc[1], rc[2]);
      const bool ok = e <= 5e-5;  // float sums of up to 1024 products (|y| ~ 32)
      failures += !ok;
      std::printf("%-7s rows_linear M%ld-K%ld-N%ld  float %.2e  %s\n", kt->name, (long)rc[0],
                  (long)rc[1], (long)rc[2], e, ok ? "ok" : "FAIL");
    }
  }
  std::printf("%s\n", failures ? "FAILED" : "all ok");
  return failures ? 1 : 0;
}
