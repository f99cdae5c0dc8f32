// CPU implementations of attnkern::fwd and attnkern::bwd (the schemas are in schema.cpp).
// Every input is checked here too, so a direct torch.ops.attnkern call can never read out of
// bounds; inputs of any strides are made contiguous (except the value, whose rows are read in
// place when each row is contiguous: prep_rows), float16 and bfloat16 are computed in float32. The kernels run through the table of the ISA chosen at
// import (isa.cpp); this file is glue, built for the baseline ISA.
//
// A 2-D query (B, H) is one decoder step: the kernels see it as (B, 1, H) (the same
// contiguous memory), and the per-row tensors drop the Tq dimension: out (B, Dv), lse (B,),
// weights (B, Tk), and in bwd grad_out, grad_weights, out, lse, weights likewise.
// A decoder step thus needs no unsqueeze/squeeze (nor their autograd nodes) around the op.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_native.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"
#include "kernels/api.h"
#include "location.h"

namespace attnkern {
namespace {

using at::Tensor;

// The names the checks give the four operands: the attention's, or attnkern::
// location_attention's (whose key is processed_memory plus the location term).
struct Names {
  const char *q = "query", *k = "key", *v = "value", *w = "weight";
};

std::string shapes(const Names& n, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& w) {
  return std::string(n.q) + " " + shape(q.sizes()) + ", " + n.k + " " + shape(k.sizes()) +
         ", " + n.v + " " + shape(v.sizes()) + ", " + n.w + " " + shape(w.sizes());
}

struct Dims {
  int64_t B, Tq, Tk, H, Dv;
  bool step;  // 2-D query (B, H): Tq = 1 and no Tq dimension in the per-row tensors

  // Sizes of a per-row tensor: (B, Tq, last) or (B, last) for a step; (B, Tq) or (B,)
  // without `last`.
  c10::SmallVector<int64_t, 3> rows(std::optional<int64_t> last = std::nullopt) const {
    c10::SmallVector<int64_t, 3> s{B};
    if (!step) s.push_back(Tq);
    if (last.has_value()) s.push_back(*last);
    return s;
  }
};

// Checks query/key/value/weight and the masks; returns the sizes. Shapes and devices raise
// ValueError, dtypes TypeError (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), as in Python.
Dims check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& w, const std::optional<Tensor>& mask,
                  const std::optional<Tensor>& lengths, const Names& n = Names()) {
  const std::pair<const char*, const Tensor*> named[] = {
      {n.q, &q}, {n.k, &k}, {n.v, &v}, {n.w, &w}};
  for (const auto& [name, t] : named) {
    TORCH_CHECK_VALUE(t->defined(), op, ": ", name, " must be a tensor, got None");
  }
  TORCH_CHECK_VALUE(q.dim() == 3 || q.dim() == 2, op, ": ", n.q,
                    " must be (B, Tq, H) or (B, H), got shape ", shape(q.sizes()));
  TORCH_CHECK_VALUE(k.dim() == 3, op, ": ", n.k, " must be (B, Tk, H), got shape ",
                    shape(k.sizes()));
  TORCH_CHECK_VALUE(v.dim() == 3, op, ": ", n.v, " must be (B, Tk, Dv), got shape ",
                    shape(v.sizes()));
  TORCH_CHECK_VALUE(w.dim() == 1, op, ": ", n.w, " must be (H,), got shape ", shape(w.sizes()));
  for (const auto& [name, t] : named) {
    TORCH_CHECK_TYPE(is_float(*t), op, ": ", name,
                     " must be a floating tensor (float16, bfloat16, float32 or float64), got ",
                     dtype_name(t->scalar_type()), " of shape ", shape(t->sizes()));
  }
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type() &&
                       w.scalar_type() == q.scalar_type(),
                   op, ": ", n.q, ", ", n.k, ", ", n.v, " and ", n.w,
                   " must share one dtype, got ", n.q, "=", dtype_name(q.scalar_type()), ", ",
                   n.k, "=", dtype_name(k.scalar_type()), ", ", n.v, "=",
                   dtype_name(v.scalar_type()), ", ", n.w, "=", dtype_name(w.scalar_type()));
  for (const auto& [name, t] : named) {
    TORCH_CHECK_VALUE(t->device() == q.device(), op, ": all inputs must be on one device: ",
                      n.q, " is on ", q.device(), ", ", name, " is on ", t->device(),
                      " (shapes: ", n.q, " ", shape(q.sizes()), ", ", name, " ",
                      shape(t->sizes()), ")");
  }
  TORCH_CHECK_VALUE(q.device().is_cpu(), op, ": expected CPU tensors, got ", q.device());
  const bool step = q.dim() == 2;
  const Dims d{q.size(0), step ? 1 : q.size(1), k.size(1), q.size(-1), v.size(2), step};
  TORCH_CHECK_VALUE(k.size(0) == d.B && v.size(0) == d.B, op, ": batch sizes differ: ",
                    shapes(n, q, k, v, w));
  TORCH_CHECK_VALUE(v.size(1) == d.Tk, op, ": ", n.k, " and ", n.v,
                    " must have the same number of keys Tk: ", shapes(n, q, k, v, w));
  TORCH_CHECK_VALUE(k.size(2) == d.H && w.size(0) == d.H, op, ": ", n.q, ", ", n.k, " and ",
                    n.w, " must share the hidden size H: ", shapes(n, q, k, v, w));
  check_key_masks(op, mask, lengths, d.B, d.Tk, q.device(), n.k, k.sizes());
  return d;
}

// A per-row tensor (grad_out, grad_weights, lse, out, weights): d.rows(last).
void check_rows(const char* op, const char* name, const Tensor& t, const Dims& d,
                std::optional<int64_t> last) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got None");
  TORCH_CHECK_TYPE(is_float(t), op, ": ", name,
                   " must be a floating tensor (float16, bfloat16, float32 or float64), got ",
                   dtype_name(t.scalar_type()), " of shape ", shape(t.sizes()));
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " is on ", t.device(),
                    ", the inputs are on cpu (", name, " shape ", shape(t.sizes()), ")");
  const auto want = d.rows(last);
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(want), op, ": ", name, " must be ",
                    shape(want), ", got shape ", shape(t.sizes()));
}

// The kernels' masks. With a key_padding_mask, the lengths they get are each batch's end of
// usable keys, min(key_lengths[b], one past its mask's last False), kept in `ends`: the
// kernels never read keys past a row's end, so a padded tail (batches padded to the longest
// sequence) costs nothing, mask or lengths alike. The same keys stay usable (the mask still
// removes those below the end), and the results are bitwise the same: masked keys add exact
// zeros, and the work plans depend on the shapes only.
MaskArgs make_masks(const Dims& d, const Tensor& mask, const Tensor& lengths, bool causal,
                    std::vector<int64_t>& ends) {
  const bool* pm = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  const int64_t* pl = lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
  if (pm != nullptr) {
    ends = key_ends(mask, lengths, d.B, d.Tk);
    pl = ends.data();
  }
  return MaskArgs{pm, pl, causal, d.Tq, d.Tk};
}

// No dispatcher call when there is nothing to do (the common case: float32, contiguous):
// a decoder step pays for every no-op to()/contiguous().
Tensor prep(const Tensor& t, at::ScalarType acc) {
  if (t.scalar_type() == acc && t.is_contiguous()) return t;
  return t.to(acc).contiguous();
}

// An output for the kernel to fill: at::native::empty_cpu is what at::empty dispatches to for
// CPU tensors (the deterministic NaN fill of uninitialised memory included), minus the
// dispatcher round trip, which a decoder step pays for every output.
// The value operand as the kernels take it (kernels/api.h Rows): read in place when its rows are
// contiguous in the accumulation dtype, whatever the row strides (an RNN encoder's
// batch_first output is (Tk, B)-major: a copy per decoder step would read and write it all).
Tensor prep_rows(const Tensor& t, at::ScalarType acc) {
  if (t.scalar_type() == acc && (t.stride(2) == 1 || t.size(2) <= 1)) return t;
  return prep(t, acc);
}

template <typename T>
Rows<T> rows_of(const Tensor& v) {
  return Rows<T>{v.data_ptr<T>(), v.stride(0), v.stride(1)};
}

Tensor new_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::native::empty_cpu(sizes, dtype, std::nullopt, std::nullopt, std::nullopt,
                               std::nullopt);
}

Tensor cast(const Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

// key_exp = exp(2 * key) (B, Tk, H) in the accumulation dtype, or undefined.
Tensor prep_key_exp(const char* op, const std::optional<Tensor>& key_exp, const Dims& d,
                    at::ScalarType acc) {
  if (!key_exp.has_value()) return Tensor();
  const Tensor& e = *key_exp;
  TORCH_CHECK_VALUE(e.device().is_cpu(), op, ": key_exp is on ", e.device(),
                    ", the inputs are on cpu (key_exp shape ", shape(e.sizes()), ")");
  TORCH_CHECK_TYPE(e.scalar_type() == acc, op, ": key_exp must be ", dtype_name(acc),
                   " (the accumulation dtype), got ", dtype_name(e.scalar_type()), " of shape ",
                   shape(e.sizes()));
  TORCH_CHECK_VALUE(e.dim() == 3 && e.size(0) == d.B && e.size(1) == d.Tk && e.size(2) == d.H,
                    op, ": key_exp must be (B, Tk, H) = (", d.B, ", ", d.Tk, ", ", d.H,
                    "), got shape ", shape(e.sizes()));
  return e.contiguous();
}

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// The accumulation type is a template parameter chosen by one branch on the input dtype
// (fwd_cpu, bwd_cpu), never a value computed from it: GCC 12.2 with Intel tuning
// (-mtune=sapphirerapids, icelake-server, skylake-avx512) miscompiled the old
// `dtype == kDouble ? kDouble : kFloat` feeding AT_DISPATCH (a cmov read the flags of an
// add scheduled after its compare), so float64 took the float branch. See docs/cpu.md.
template <typename T>
ForwardFn<T> forward_kernel(const KernelTable& kt);
template <>
ForwardFn<float> forward_kernel<float>(const KernelTable& kt) { return kt.fwd_f; }
template <>
ForwardFn<double> forward_kernel<double>(const KernelTable& kt) { return kt.fwd_d; }
template <typename T>
BackwardFn<T> backward_kernel(const KernelTable& kt);
template <>
BackwardFn<float> backward_kernel<float>(const KernelTable& kt) { return kt.bwd_f; }
template <>
BackwardFn<double> backward_kernel<double>(const KernelTable& kt) { return kt.bwd_d; }

template <typename T>
std::tuple<Tensor, Tensor, Tensor> fwd_run(const char* op, const Dims& d, const Tensor& query,
                                           const Tensor& key, const Tensor& value,
                                           const Tensor& weight,
                                           const std::optional<Tensor>& key_padding_mask,
                                           const std::optional<Tensor>& key_lengths,
                                           bool causal, bool return_weights,
                                           const std::optional<Tensor>& key_exp) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const auto dtype = query.scalar_type();
  Tensor q = prep(query, acc), k = prep(key, acc), v = prep_rows(value, acc);
  Tensor w = prep(weight, acc);
  Tensor ek = prep_key_exp(op, key_exp, d, acc);
  Tensor mask = key_padding_mask.has_value() ? key_padding_mask->contiguous() : Tensor();
  Tensor len = key_lengths.has_value() ? key_lengths->contiguous() : Tensor();
  Tensor out = new_empty(d.rows(d.Dv), acc);
  Tensor lse = new_empty(d.rows(), acc);
  Tensor wts = return_weights ? new_empty(d.rows(d.Tk), acc) : Tensor();
  std::vector<int64_t> ends;
  const MaskArgs mk = make_masks(d, mask, len, causal, ends);
  if (d.B * d.Tq > 0) {
    forward_kernel<T>(active_kernels())(
        q.data_ptr<T>(), k.data_ptr<T>(), ptr_or_null<T>(ek), rows_of<T>(v), w.data_ptr<T>(),
        mk, d.B, d.Tq, d.Tk, d.H, d.Dv, out.data_ptr<T>(), lse.data_ptr<T>(),
        ptr_or_null<T>(wts));
  }
  return {cast(out, dtype), lse,
          return_weights ? cast(wts, dtype) : new_empty({0}, dtype)};
}

std::tuple<Tensor, Tensor, Tensor> fwd_cpu(const Tensor& query, const Tensor& key,
                                           const Tensor& value, const Tensor& weight,
                                           const std::optional<Tensor>& key_padding_mask,
                                           const std::optional<Tensor>& key_lengths,
                                           bool causal, bool return_weights,
                                           const std::optional<Tensor>& key_exp) {
  const char* op = "attnkern::fwd";
  const Dims d = check_inputs(op, query, key, value, weight, key_padding_mask, key_lengths);
  if (query.scalar_type() == at::kDouble)
    return fwd_run<double>(op, d, query, key, value, weight, key_padding_mask, key_lengths,
                           causal, return_weights, key_exp);
  return fwd_run<float>(op, d, query, key, value, weight, key_padding_mask, key_lengths, causal,
                        return_weights, key_exp);
}

// ---------------------------------------------------------------- attnkern::location_attention
//
// One inference step of location-sensitive attention (tacotron2's), the location term and
// the attention in one call: keys = processed_memory + windows(cat) @ location_filter^T
// (location.cpp's windows, one GEMM), then the fused forward on those keys. Everything per
// step that is not an output (windows (B * T, C * taps), keys (B * T, A)) lives in
// per-thread scratch, not in tensors: a fresh half-megabyte tensor per step (tacotron2's B8
// T120) is memory the allocator maps and unmaps again, ~100 page faults a step at ~2 us each,
// and the step's working set stays in cache. No autograd (autograd.cpp refuses inputs that
// require grad): the differentiable step is the location term plus attnkern::fwd.

// A buffer kept by one thread between calls: its contents never outlive the call that
// fills it (no state, only mapped pages). At most kKeepBytes; bigger requests get a tensor.
class Scratch {
 public:
  static constexpr size_t kKeepBytes = size_t(16) << 20;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }

  // A contiguous (sizes) tensor of dtype over the buffer, valid until this thread's next call.
  Tensor view(at::IntArrayRef sizes, at::ScalarType dtype) {
    const size_t bytes = size_t(c10::multiply_integers(sizes)) * c10::elementSize(dtype);
    if (bytes > kKeepBytes) return new_empty(sizes, dtype);
    if (p_ == nullptr || bytes > bytes_) {
      std::free(p_);
      bytes_ = std::max<size_t>(64, (bytes + 63) / 64 * 64);
      p_ = std::aligned_alloc(64, bytes_);
      TORCH_CHECK(p_ != nullptr, "attnkern: out of memory allocating ", bytes_, " bytes");
    }
    return at::from_blob(p_, sizes, at::TensorOptions().dtype(dtype));
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// The attention step of both location ops on the keys `build(mk, keys)` writes: keys
// (B * T, A) in scratch, of which only rows t < mk.len[b] (every row without lengths) need
// be written: each row's usable keys end there (make_masks) and the kernel reads no further.
template <typename T, typename Build>
std::tuple<Tensor, Tensor> location_step(const Dims& d, const Tensor& query,
                                         const Tensor& memory, const Tensor& weight,
                                         const std::optional<Tensor>& key_padding_mask,
                                         const std::optional<Tensor>& key_lengths,
                                         Build&& build) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  static thread_local Scratch keys_scratch;
  Tensor mask = key_padding_mask.has_value() ? key_padding_mask->contiguous() : Tensor();
  Tensor len = key_lengths.has_value() ? key_lengths->contiguous() : Tensor();
  std::vector<int64_t> ends;
  const MaskArgs mk = make_masks(d, mask, len, false, ends);
  Tensor keys = keys_scratch.view({d.B * d.Tk, d.H}, acc);
  build(mk, keys);
  Tensor q = prep(query, acc), v = prep_rows(memory, acc), w = prep(weight, acc);
  Tensor out = new_empty({d.B, d.Dv}, acc);
  Tensor lse = new_empty({d.B}, acc);
  Tensor wts = new_empty({d.B, d.Tk}, acc);
  if (d.B > 0) {
    forward_kernel<T>(active_kernels())(q.data_ptr<T>(), keys.data_ptr<T>(), nullptr,
                                        rows_of<T>(v), w.data_ptr<T>(), mk, d.B, 1, d.Tk, d.H,
                                        d.Dv, out.data_ptr<T>(), lse.data_ptr<T>(),
                                        wts.data_ptr<T>());
  }
  const auto dtype = query.scalar_type();
  return {cast(out, dtype), cast(wts, dtype)};
}

// location_attention's keys: processed_memory + windows(cat) @ filter^T, the windows and
// their product only for the rows a step reads (packed, batch b's from offsets[b]).
template <typename T>
std::tuple<Tensor, Tensor> location_run(const Dims& d, const Tensor& query,
                                        const Tensor& processed_memory, const Tensor& cat,
                                        const Tensor& filter, const Tensor& memory,
                                        const Tensor& weight,
                                        const std::optional<Tensor>& key_padding_mask,
                                        const std::optional<Tensor>& key_lengths,
                                        int64_t kernel, int64_t pad) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  return location_step<T>(d, query, memory, weight, key_padding_mask, key_lengths,
                          [&](const MaskArgs& mk, Tensor& keys) {
    static thread_local Scratch windows_scratch, term_scratch;
    const int64_t B = d.B, Tk = d.Tk, A = d.H, C = cat.size(1), W = filter.size(1);
    std::vector<int64_t> offsets(B + 1, 0);
    for (int64_t b = 0; b < B; ++b) offsets[b + 1] = offsets[b] + (mk.len ? mk.len[b] : Tk);
    const int64_t rows = offsets[B];
    Tensor windows = windows_scratch.view({rows, W}, acc);
    Tensor term = term_scratch.view({rows, A}, acc);
    fill_location_windows(prep(cat, acc), kernel, pad, W / C, windows, offsets.data());
    at::mm_out(term, windows, prep(filter, acc).t());
    const Tensor base = prep(processed_memory, acc);
    add_packed_rows(base.data_ptr<T>(), term.data_ptr<T>(), offsets.data(), B, Tk, A,
                    keys.data_ptr<T>(), false);  // the rows past each end are never read
  });
}

// location1_attention's keys: the one-channel location kernel (kernels/location1.cpp), each
// batch's rows up to its end.
template <typename T>
std::tuple<Tensor, Tensor> location1_attention_run(const Dims& d, const Tensor& query,
                                                   const Tensor& base, const Tensor& prev,
                                                   const Tensor& conv_weight,
                                                   const Tensor& dense_weight,
                                                   const Tensor& memory, const Tensor& weight,
                                                   const std::optional<Tensor>& mask,
                                                   const std::optional<Tensor>& lengths) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  return location_step<T>(d, query, memory, weight, mask, lengths,
                          [&](const MaskArgs& mk, Tensor& keys) {
    const Tensor b = prep(base, acc), p = prep(prev, acc), c = prep(conv_weight, acc),
                 w = prep(dense_weight, acc);
    if (d.B * d.Tk == 0) return;
    Loc1Kernels<T>::fwd()(b.data_ptr<T>(), p.data_ptr<T>(), c.data_ptr<T>(), w.data_ptr<T>(),
                          d.B, d.Tk, d.H, c.size(0), c.size(1), mk.len, keys.data_ptr<T>());
  });
}

// The names of the location ops' own arguments, checked for dtype and device like the rest.
void check_more(const char* op, const Tensor& query,
                std::initializer_list<std::pair<const char*, const Tensor*>> named) {
  for (const auto& [name, t] : named) {
    TORCH_CHECK_TYPE(t->scalar_type() == query.scalar_type(), op, ": ", name,
                     " must have query's dtype ", dtype_name(query.scalar_type()), ", got ",
                     dtype_name(t->scalar_type()), " of shape ", shape(t->sizes()));
    TORCH_CHECK_VALUE(t->device().is_cpu(), op, ": ", name, " is on ", t->device(),
                      ", the inputs are on cpu (", name, " shape ", shape(t->sizes()), ")");
  }
}

std::tuple<Tensor, Tensor> location_attention_cpu(
    const Tensor& query, const Tensor& processed_memory, const Tensor& attention_weights_cat,
    const Tensor& location_filter, const Tensor& memory, const Tensor& weight,
    const std::optional<Tensor>& key_padding_mask, const std::optional<Tensor>& key_lengths,
    int64_t kernel, int64_t pad) {
  const char* op = "attnkern::location_attention";
  const Tensor& cat = attention_weights_cat;
  const Tensor& filt = location_filter;
  TORCH_CHECK_VALUE(query.dim() == 2, op, ": query must be (B, attention_dim), got shape ",
                    shape(query.sizes()));
  const Dims d = check_inputs(op, query, processed_memory, memory, weight, key_padding_mask,
                              key_lengths, Names{"query", "processed_memory", "memory", "weight"});
  check_more(op, query, {{"attention_weights_cat", &cat}, {"location_filter", &filt}});
  check_location_geometry(op, "attention_weights_cat", cat, "location_filter", filt, d.B,
                          d.Tk, "attention_dim", d.H, "processed_memory", kernel, pad);
  if (query.scalar_type() == at::kDouble)
    return location_run<double>(d, query, processed_memory, cat, filt, memory, weight,
                                key_padding_mask, key_lengths, kernel, pad);
  return location_run<float>(d, query, processed_memory, cat, filt, memory, weight,
                             key_padding_mask, key_lengths, kernel, pad);
}

std::tuple<Tensor, Tensor> location1_attention_cpu(
    const Tensor& query, const Tensor& base, const Tensor& prev, const Tensor& conv_weight,
    const Tensor& dense_weight, const Tensor& memory, const Tensor& weight,
    const std::optional<Tensor>& key_padding_mask, const std::optional<Tensor>& key_lengths) {
  const char* op = "attnkern::location1_attention";
  TORCH_CHECK_VALUE(query.dim() == 2, op, ": query must be (B, attention_dim), got shape ",
                    shape(query.sizes()));
  const Dims d = check_inputs(op, query, base, memory, weight, key_padding_mask, key_lengths,
                              Names{"query", "base", "memory", "weight"});
  check_more(op, query, {{"prev", &prev}, {"conv_weight", &conv_weight},
                         {"dense_weight", &dense_weight}});
  check_location1_operands(op, prev, conv_weight, dense_weight, d.B, d.Tk, "attention_dim",
                           d.H, "base");
  if (query.scalar_type() == at::kDouble)
    return location1_attention_run<double>(d, query, base, prev, conv_weight, dense_weight,
                                           memory, weight, key_padding_mask, key_lengths);
  return location1_attention_run<float>(d, query, base, prev, conv_weight, dense_weight,
                                        memory, weight, key_padding_mask, key_lengths);
}

// Sum of a[i] * b[i] in double, four independent chains (the glue is built for the
// baseline ISA: no vector reduction, so break the add latency instead).
template <typename T>
double dot(const T* a, const T* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += double(a[i]) * double(b[i]);
    s1 += double(a[i + 1]) * double(b[i + 1]);
    s2 += double(a[i + 2]) * double(b[i + 2]);
    s3 += double(a[i + 3]) * double(b[i + 3]);
  }
  for (; i < n; ++i) s0 += double(a[i]) * double(b[i]);
  return (s0 + s1) + (s2 + s3);
}

// The delta pre-pass in one pass over each row: delta = rowsum(out * grad_out)
// (+ rowsum(weights * grad_weights)), B * Tq values in T written to `delta` (scratch the
// caller owns: no tensor, no dispatcher call); every input contiguous, in T.
template <typename T>
void row_delta(const Dims& d, const Tensor& out, const Tensor& go, const Tensor& wts,
               const Tensor& gw, T* delta) {
  const int64_t rows = d.B * d.Tq;
  const T *o = out.data_ptr<T>(), *g = go.data_ptr<T>();
  const T *pw = ptr_or_null<T>(wts), *pg = ptr_or_null<T>(gw);
  const int64_t width = d.Dv + (pw != nullptr ? d.Tk : 0);
  at::parallel_for(0, rows, std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(width, 1)),
                   [&](int64_t r0, int64_t r1) {
                     for (int64_t r = r0; r < r1; ++r) {
                       double s = dot(o + r * d.Dv, g + r * d.Dv, d.Dv);
                       if (pw != nullptr) s += dot(pw + r * d.Tk, pg + r * d.Tk, d.Tk);
                       delta[r] = T(s);
                     }
                   });
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_run(
    const char* op, const Dims& d, const Tensor& grad_out,
    const std::optional<Tensor>& grad_weights, const Tensor& query, const Tensor& key,
    const Tensor& value, const Tensor& weight, const Tensor& out, const Tensor& lse,
    const std::optional<Tensor>& key_padding_mask, const std::optional<Tensor>& key_lengths,
    bool causal, const std::optional<Tensor>& key_exp, const std::optional<Tensor>& weights,
    bool value_grad) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const auto dtype = query.scalar_type();
  Tensor q = prep(query, acc), k = prep(key, acc), v = prep_rows(value, acc);
  Tensor w = prep(weight, acc);
  // weights: the forward's exp(s - lse); in T the kernel reads p from them instead of
  // recomputing the scores (a backward then evaluates tanh once per element, not twice).
  Tensor pr;
  if (weights.has_value() && weights->scalar_type() == acc) pr = prep(*weights, acc);
  Tensor go = prep(grad_out, acc), ls = prep(lse, acc);
  Tensor gw = grad_weights.has_value() ? prep(*grad_weights, acc) : Tensor();
  // The delta pre-pass, here: a decoder step's few rows, scratch on the stack.
  c10::SmallVector<T, 64> dl(d.B * d.Tq);
  // weights in T: pr already holds them (prepared once for both uses)
  const Tensor wts = !gw.defined() ? Tensor() : pr.defined() ? pr : prep(*weights, acc);
  row_delta<T>(d, prep(out, acc), go, wts, gw, dl.data());
  Tensor ek = prep_key_exp(op, key_exp, d, acc);
  Tensor mask = key_padding_mask.has_value() ? key_padding_mask->contiguous() : Tensor();
  Tensor len = key_lengths.has_value() ? key_lengths->contiguous() : Tensor();
  Tensor dq = new_empty(query.sizes(), acc), dk = new_empty({d.B, d.Tk, d.H}, acc);
  // value_grad false: the caller takes no value gradient; dv is an empty (0,) tensor.
  Tensor dv = value_grad ? new_empty({d.B, d.Tk, d.Dv}, acc) : Tensor();
  Tensor dw = new_empty({d.H}, acc);
  std::vector<int64_t> ends;
  const MaskArgs mk = make_masks(d, mask, len, causal, ends);
  backward_kernel<T>(active_kernels())(
      go.data_ptr<T>(), ptr_or_null<T>(gw), q.data_ptr<T>(), k.data_ptr<T>(), ptr_or_null<T>(ek),
      rows_of<T>(v), w.data_ptr<T>(), ls.data_ptr<T>(), dl.data(), ptr_or_null<T>(pr), mk, d.B,
      d.Tq, d.Tk, d.H, d.Dv, dq.data_ptr<T>(), dk.data_ptr<T>(), ptr_or_null<T>(dv),
      dw.data_ptr<T>());
  return {cast(dq, dtype), cast(dk, dtype),
          value_grad ? cast(dv, dtype) : new_empty({0}, dtype), cast(dw, dtype)};
}

// delta = rowsum(out * grad_out) (+ rowsum(weights * grad_weights)) is computed here, in one
// pass (what the autograd backward relies on). weights, when given in the accumulation dtype,
// are also the kernel's p (see bwd_run).
std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_cpu(
    const Tensor& grad_out, const std::optional<Tensor>& grad_weights, const Tensor& query,
    const Tensor& key, const Tensor& value, const Tensor& weight, const Tensor& out,
    const Tensor& lse, const std::optional<Tensor>& key_padding_mask,
    const std::optional<Tensor>& key_lengths, bool causal,
    const std::optional<Tensor>& key_exp, const std::optional<Tensor>& weights,
    bool value_grad) {
  const char* op = "attnkern::bwd";
  const Dims d = check_inputs(op, query, key, value, weight, key_padding_mask, key_lengths);
  check_rows(op, "grad_out", grad_out, d, d.Dv);
  if (grad_weights.has_value()) check_rows(op, "grad_weights", *grad_weights, d, d.Tk);
  check_rows(op, "out", out, d, d.Dv);
  check_rows(op, "lse", lse, d, std::nullopt);
  if (weights.has_value()) check_rows(op, "weights", *weights, d, d.Tk);
  TORCH_CHECK_VALUE(!grad_weights.has_value() || weights.has_value(), op,
                    ": grad_weights is given, so weights must be given too (delta = "
                    "rowsum(out * grad_out) + rowsum(weights * grad_weights))");
  if (query.scalar_type() == at::kDouble)
    return bwd_run<double>(op, d, grad_out, grad_weights, query, key, value, weight, out, lse,
                           key_padding_mask, key_lengths, causal, key_exp, weights, value_grad);
  return bwd_run<float>(op, d, grad_out, grad_weights, query, key, value, weight, out, lse,
                        key_padding_mask, key_lengths, causal, key_exp, weights, value_grad);
}

// ------------------------------------------------------------------ fused energies
//
// scores / scores_backward: the checks of fwd with no value (a (B, Tk, 0) stand-in, so
// every message about query, key, weight and the masks reads as fwd's).

Dims check_scores(const char* op, const Tensor& q, const Tensor& k, const Tensor& w,
                  const std::optional<Tensor>& mask, const std::optional<Tensor>& lengths) {
  const Tensor none = k.defined() && k.dim() == 3 ? k.new_empty({k.size(0), k.size(1), 0}) : k;
  return check_inputs(op, q, k, none, w, mask, lengths);
}

template <typename T>
ScoresFwdFn<T> scores_kernel(const KernelTable& kt);
template <>
ScoresFwdFn<float> scores_kernel<float>(const KernelTable& kt) { return kt.scores_fwd_f; }
template <>
ScoresFwdFn<double> scores_kernel<double>(const KernelTable& kt) { return kt.scores_fwd_d; }
template <typename T>
ScoresBwdFn<T> scores_backward_kernel(const KernelTable& kt);
template <>
ScoresBwdFn<float> scores_backward_kernel<float>(const KernelTable& kt) {
  return kt.scores_bwd_f;
}
template <>
ScoresBwdFn<double> scores_backward_kernel<double>(const KernelTable& kt) {
  return kt.scores_bwd_d;
}

template <typename T>
Tensor scores_run(const char* op, const Dims& d, const Tensor& query, const Tensor& key,
                  const Tensor& weight, const std::optional<Tensor>& key_padding_mask,
                  const std::optional<Tensor>& key_lengths, bool causal,
                  const std::optional<Tensor>& key_exp) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  Tensor q = prep(query, acc), k = prep(key, acc), w = prep(weight, acc);
  Tensor ek = prep_key_exp(op, key_exp, d, acc);
  Tensor mask = key_padding_mask.has_value() ? key_padding_mask->contiguous() : Tensor();
  Tensor len = key_lengths.has_value() ? key_lengths->contiguous() : Tensor();
  Tensor out = new_empty(d.rows(d.Tk), acc);
  std::vector<int64_t> ends;
  const MaskArgs mk = make_masks(d, mask, len, causal, ends);
  if (d.B * d.Tq * d.Tk > 0) {
    scores_kernel<T>(active_kernels())(q.data_ptr<T>(), k.data_ptr<T>(), ptr_or_null<T>(ek),
                                       w.data_ptr<T>(), mk, d.B, d.Tq, d.Tk, d.H,
                                       out.data_ptr<T>());
  }
  return cast(out, query.scalar_type());
}

Tensor scores_cpu(const Tensor& query, const Tensor& key, const Tensor& weight,
                  const std::optional<Tensor>& key_padding_mask,
                  const std::optional<Tensor>& key_lengths, bool causal,
                  const std::optional<Tensor>& key_exp) {
  const char* op = "attnkern::scores";
  const Dims d = check_scores(op, query, key, weight, key_padding_mask, key_lengths);
  if (query.scalar_type() == at::kDouble)
    return scores_run<double>(op, d, query, key, weight, key_padding_mask, key_lengths, causal,
                              key_exp);
  return scores_run<float>(op, d, query, key, weight, key_padding_mask, key_lengths, causal,
                           key_exp);
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor> scores_backward_run(
    const char* op, const Dims& d, const Tensor& grad, const Tensor& query, const Tensor& key,
    const Tensor& weight, const std::optional<Tensor>& key_padding_mask,
    const std::optional<Tensor>& key_lengths, bool causal,
    const std::optional<Tensor>& key_exp) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const auto dtype = query.scalar_type();
  Tensor g = prep(grad, acc), q = prep(query, acc), k = prep(key, acc), w = prep(weight, acc);
  Tensor ek = prep_key_exp(op, key_exp, d, acc);
  Tensor mask = key_padding_mask.has_value() ? key_padding_mask->contiguous() : Tensor();
  Tensor len = key_lengths.has_value() ? key_lengths->contiguous() : Tensor();
  Tensor dq = new_empty(query.sizes(), acc), dk = new_empty({d.B, d.Tk, d.H}, acc);
  Tensor dw = new_empty({d.H}, acc);
  std::vector<int64_t> ends;
  const MaskArgs mk = make_masks(d, mask, len, causal, ends);
  scores_backward_kernel<T>(active_kernels())(
      g.data_ptr<T>(), q.data_ptr<T>(), k.data_ptr<T>(), ptr_or_null<T>(ek), w.data_ptr<T>(),
      mk, d.B, d.Tq, d.Tk, d.H, dq.data_ptr<T>(), dk.data_ptr<T>(), dw.data_ptr<T>());
  return {cast(dq, dtype), cast(dk, dtype), cast(dw, dtype)};
}

std::tuple<Tensor, Tensor, Tensor> scores_backward_cpu(
    const Tensor& grad, const Tensor& query, const Tensor& key, const Tensor& weight,
    const std::optional<Tensor>& key_padding_mask, const std::optional<Tensor>& key_lengths,
    bool causal, const std::optional<Tensor>& key_exp) {
  const char* op = "attnkern::scores_backward";
  const Dims d = check_scores(op, query, key, weight, key_padding_mask, key_lengths);
  check_rows(op, "grad", grad, d, d.Tk);
  if (query.scalar_type() == at::kDouble)
    return scores_backward_run<double>(op, d, grad, query, key, weight, key_padding_mask,
                                       key_lengths, causal, key_exp);
  return scores_backward_run<float>(op, d, grad, query, key, weight, key_padding_mask,
                                    key_lengths, causal, key_exp);
}

}  // namespace
}  // namespace attnkern

TORCH_LIBRARY_IMPL(attnkern, CPU, m) {
  m.impl("fwd", &attnkern::fwd_cpu);
  m.impl("bwd", &attnkern::bwd_cpu);
  m.impl("scores", &attnkern::scores_cpu);
  m.impl("scores_backward", &attnkern::scores_backward_cpu);
  m.impl("location_attention", &attnkern::location_attention_cpu);
  m.impl("location1_attention", &attnkern::location1_attention_cpu);
}
