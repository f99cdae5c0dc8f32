// CPU implementations of attnkern::fwd and attnkern::bwd (the schema is defined once, in
// attnkern/ops.py). Every input is checked here too, so a direct torch.ops.attnkern call
// can never read out of bounds; inputs of any strides are made contiguous, float16 and
// bfloat16 are computed in float32. The kernels run through the table of the ISA chosen at
// import (isa.cpp); this file is glue, built for the baseline ISA.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kernels/api.h"

namespace attnkern {
namespace {

using at::Tensor;

bool is_float(const Tensor& t) {
  auto s = t.scalar_type();
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

struct Dims {
  int64_t B, Tq, Tk, H, Dv;
};

// Checks query/key/value/weight and the masks; returns the sizes.
Dims check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& w, const std::optional<Tensor>& mask,
                  const std::optional<Tensor>& lengths) {
  TORCH_CHECK(q.dim() == 3, op, ": query must be 3-D (B, Tq, H), got ", q.sizes());
  TORCH_CHECK(k.dim() == 3, op, ": key must be 3-D (B, Tk, H), got ", k.sizes());
  TORCH_CHECK(v.dim() == 3, op, ": value must be 3-D (B, Tk, Dv), got ", v.sizes());
  TORCH_CHECK(w.dim() == 1, op, ": weight must be 1-D (H,), got ", w.sizes());
  const Dims d{q.size(0), q.size(1), k.size(1), q.size(2), v.size(2)};
  TORCH_CHECK(k.size(0) == d.B && v.size(0) == d.B, op, ": batch sizes differ: query ",
              q.sizes(), ", key ", k.sizes(), ", value ", v.sizes());
  TORCH_CHECK(v.size(1) == d.Tk, op, ": key and value must have the same Tk: key ", k.sizes(),
              ", value ", v.sizes());
  TORCH_CHECK(k.size(2) == d.H && w.size(0) == d.H, op,
              ": query, key and weight must share H: query ", q.sizes(), ", key ", k.sizes(),
              ", weight ", w.sizes());
  TORCH_CHECK(is_float(q), op, ": query must be float16, bfloat16, float32 or float64, got ",
              q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type() &&
                  w.scalar_type() == q.scalar_type(),
              op, ": query, key, value and weight must share one dtype, got ", q.scalar_type(),
              ", ", k.scalar_type(), ", ", v.scalar_type(), ", ", w.scalar_type());
  for (const Tensor* t : {&q, &k, &v, &w}) {
    TORCH_CHECK(t->device().is_cpu(), op, ": expected CPU tensors, got ", t->device());
  }
  if (mask.has_value()) {
    const Tensor& m = *mask;
    TORCH_CHECK(m.scalar_type() == at::kBool, op, ": key_padding_mask must be bool, got ",
                m.scalar_type());
    TORCH_CHECK(m.dim() == 2 && m.size(0) == d.B && m.size(1) == d.Tk, op,
                ": key_padding_mask must be (B, Tk) = (", d.B, ", ", d.Tk, "), got ", m.sizes());
    TORCH_CHECK(m.device().is_cpu(), op, ": key_padding_mask must be on CPU, got ", m.device());
  }
  if (lengths.has_value()) {
    const Tensor& l = *lengths;
    TORCH_CHECK(l.scalar_type() == at::kLong, op, ": key_lengths must be int64, got ",
                l.scalar_type());
    TORCH_CHECK(l.dim() == 1 && l.size(0) == d.B, op, ": key_lengths must be (B,) = (", d.B,
                ",), got ", l.sizes());
    TORCH_CHECK(l.device().is_cpu(), op, ": key_lengths must be on CPU, got ", l.device());
    Tensor lc = l.contiguous();
    const int64_t* p = lc.data_ptr<int64_t>();
    for (int64_t b = 0; b < d.B; ++b) {
      TORCH_CHECK(p[b] >= 0 && p[b] <= d.Tk, op, ": key_lengths must lie in [0, Tk=", d.Tk,
                  "], got ", p[b], " at batch ", b);
    }
  }
  return d;
}

void check_bt(const char* op, const char* name, const Tensor& t, const Dims& d, int64_t last,
              bool has_last) {
  TORCH_CHECK(is_float(t), op, ": ", name, " must be a floating tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be on CPU, got ", t.device());
  if (has_last) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == d.B && t.size(1) == d.Tq && t.size(2) == last, op,
                ": ", name, " must be (", d.B, ", ", d.Tq, ", ", last, "), got ", t.sizes());
  } else {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == d.B && t.size(1) == d.Tq, op, ": ", name,
                " must be (", d.B, ", ", d.Tq, "), got ", t.sizes());
  }
}

MaskArgs make_masks(const Dims& d, const Tensor& mask, const Tensor& lengths, bool causal) {
  return MaskArgs{mask.defined() ? mask.data_ptr<bool>() : nullptr,
                  lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr, causal, d.Tq, d.Tk};
}

Tensor prep(const Tensor& t, at::ScalarType acc) { return t.to(acc).contiguous(); }

// key_exp = exp(2 * key) (B, Tk, H) in the accumulation dtype, or undefined.
Tensor prep_key_exp(const char* op, const std::optional<Tensor>& key_exp, const Dims& d,
                    at::ScalarType acc) {
  if (!key_exp.has_value()) return Tensor();
  const Tensor& e = *key_exp;
  TORCH_CHECK(e.device().is_cpu(), op, ": key_exp must be on CPU, got ", e.device());
  TORCH_CHECK(e.scalar_type() == acc, op, ": key_exp must be ", acc, " (the accumulation dtype), got ",
              e.scalar_type());
  TORCH_CHECK(e.dim() == 3 && e.size(0) == d.B && e.size(1) == d.Tk && e.size(2) == d.H, op,
              ": key_exp must be (B, Tk, H) = (", d.B, ", ", d.Tk, ", ", d.H, "), got ", e.sizes());
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
  const auto opts = query.options().dtype(acc);
  Tensor q = prep(query, acc), k = prep(key, acc), v = prep(value, acc), w = prep(weight, acc);
  Tensor ek = prep_key_exp(op, key_exp, d, acc);
  Tensor mask = key_padding_mask.has_value() ? key_padding_mask->contiguous() : Tensor();
  Tensor len = key_lengths.has_value() ? key_lengths->contiguous() : Tensor();
  Tensor out = at::empty({d.B, d.Tq, d.Dv}, opts);
  Tensor lse = at::empty({d.B, d.Tq}, opts);
  Tensor wts = return_weights ? at::empty({d.B, d.Tq, d.Tk}, opts) : Tensor();
  const MaskArgs mk = make_masks(d, mask, len, causal);
  if (d.B * d.Tq > 0) {
    forward_kernel<T>(active_kernels())(
        q.data_ptr<T>(), k.data_ptr<T>(), ptr_or_null<T>(ek), v.data_ptr<T>(), w.data_ptr<T>(),
        mk, d.B, d.Tq, d.Tk, d.H, d.Dv, out.data_ptr<T>(), lse.data_ptr<T>(),
        ptr_or_null<T>(wts));
  }
  return {out.to(dtype), lse, return_weights ? wts.to(dtype) : at::empty({0}, query.options())};
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

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_run(
    const char* op, const Dims& d, const Tensor& grad_out,
    const std::optional<Tensor>& grad_weights, const Tensor& query, const Tensor& key,
    const Tensor& value, const Tensor& weight, const Tensor& lse, const Tensor& delta,
    const std::optional<Tensor>& key_padding_mask, const std::optional<Tensor>& key_lengths,
    bool causal, const std::optional<Tensor>& key_exp, const std::optional<Tensor>& probs) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const auto dtype = query.scalar_type();
  const auto opts = query.options().dtype(acc);
  Tensor q = prep(query, acc), k = prep(key, acc), v = prep(value, acc), w = prep(weight, acc);
  Tensor pr;
  if (probs.has_value()) {
    check_bt(op, "probs", *probs, d, d.Tk, true);
    TORCH_CHECK(probs->scalar_type() == acc, op, ": probs must be ", acc,
                " (the accumulation dtype), got ", probs->scalar_type());
    pr = probs->contiguous();
  }
  Tensor go = prep(grad_out, acc), ls = prep(lse, acc), dl = prep(delta, acc);
  Tensor gw = grad_weights.has_value() ? prep(*grad_weights, acc) : Tensor();
  Tensor ek = prep_key_exp(op, key_exp, d, acc);
  Tensor mask = key_padding_mask.has_value() ? key_padding_mask->contiguous() : Tensor();
  Tensor len = key_lengths.has_value() ? key_lengths->contiguous() : Tensor();
  Tensor dq = at::empty({d.B, d.Tq, d.H}, opts), dk = at::empty({d.B, d.Tk, d.H}, opts);
  Tensor dv = at::empty({d.B, d.Tk, d.Dv}, opts), dw = at::empty({d.H}, opts);
  const MaskArgs mk = make_masks(d, mask, len, causal);
  backward_kernel<T>(active_kernels())(
      go.data_ptr<T>(), ptr_or_null<T>(gw), q.data_ptr<T>(), k.data_ptr<T>(), ptr_or_null<T>(ek),
      v.data_ptr<T>(), w.data_ptr<T>(), ls.data_ptr<T>(), dl.data_ptr<T>(), ptr_or_null<T>(pr),
      mk, d.B, d.Tq, d.Tk,
      d.H, d.Dv, dq.data_ptr<T>(), dk.data_ptr<T>(), dv.data_ptr<T>(), dw.data_ptr<T>());
  return {dq.to(dtype), dk.to(dtype), dv.to(dtype), dw.to(dtype)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_cpu(
    const Tensor& grad_out, const std::optional<Tensor>& grad_weights, const Tensor& query,
    const Tensor& key, const Tensor& value, const Tensor& weight, const Tensor& lse,
    const Tensor& delta, const std::optional<Tensor>& key_padding_mask,
    const std::optional<Tensor>& key_lengths, bool causal,
    const std::optional<Tensor>& key_exp, const std::optional<Tensor>& probs) {
  const char* op = "attnkern::bwd";
  const Dims d = check_inputs(op, query, key, value, weight, key_padding_mask, key_lengths);
  check_bt(op, "grad_out", grad_out, d, d.Dv, true);
  if (grad_weights.has_value()) check_bt(op, "grad_weights", *grad_weights, d, d.Tk, true);
  check_bt(op, "lse", lse, d, 0, false);
  check_bt(op, "delta", delta, d, 0, false);
  if (query.scalar_type() == at::kDouble)
    return bwd_run<double>(op, d, grad_out, grad_weights, query, key, value, weight, lse, delta,
                           key_padding_mask, key_lengths, causal, key_exp, probs);
  return bwd_run<float>(op, d, grad_out, grad_weights, query, key, value, weight, lse, delta,
                        key_padding_mask, key_lengths, causal, key_exp, probs);
}

}  // namespace
}  // namespace attnkern

TORCH_LIBRARY_IMPL(attnkern, CPU, m) {
  m.impl("fwd", &attnkern::fwd_cpu);
  m.impl("bwd", &attnkern::bwd_cpu);
}
