// The one autograd route of attnkern::fwd, registered for every device
// (TORCH_LIBRARY_IMPL(attnkern, Autograd)): a decoder step then runs no Python autograd code,
// on CPU (C++ kernels) and CUDA (Triton kernels) alike. Forward redispatches attnkern::fwd
// below autograd; backward calls attnkern::bwd through the dispatcher with the saved out
// (and weights), from which the device kernel computes the delta pre-pass itself (the C++
// CPU kernel in one pass over each row, the Triton launcher with torch ops); every backend
// (and fake/meta tensors under torch.compile) takes this path.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace attnkern {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;

using FwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                  const Tensor&, const OptTensor&,
                                                  const OptTensor&, bool, bool,
                                                  const OptTensor&);
using BwdSig = std::tuple<Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, bool,
    const OptTensor&, const OptTensor&, bool);

// Looked up once (the schemas are in schema.cpp).
const c10::TypedOperatorHandle<FwdSig>& fwd_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("attnkern::fwd", "").typed<FwdSig>();
  return op;
}

const c10::TypedOperatorHandle<BwdSig>& bwd_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("attnkern::bwd", "").typed<BwdSig>();
  return op;
}

OptTensor optional_of(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

class FwdFunction : public torch::autograd::Function<FwdFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& query, const Tensor& key,
                               const Tensor& value, const Tensor& weight,
                               const OptTensor& key_padding_mask, const OptTensor& key_lengths,
                               bool causal, bool return_weights, const OptTensor& key_exp) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // No zero tensors for the gradients nobody sends (lse, unused weights): backward
    // handles undefined gradients itself.
    ctx->set_materialize_grads(false);
    auto [out, lse, weights] = fwd_op().call(query, key, value, weight, key_padding_mask,
                                             key_lengths, causal, return_weights, key_exp);
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["return_weights"] = return_weights;
    ctx->save_for_backward({query, key, value, weight, key_padding_mask.value_or(Tensor()),
                            key_lengths.value_or(Tensor()), key_exp.value_or(Tensor()), out,
                            lse, return_weights ? weights : Tensor()});
    // One call: each mark_non_differentiable replaces the previous set.
    if (return_weights) {
      ctx->mark_non_differentiable({lse});
    } else {
      ctx->mark_non_differentiable({lse, weights});
    }
    return {out, lse, weights};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &query = saved[0], &key = saved[1], &value = saved[2], &weight = saved[3];
    const Tensor &out = saved[7], &lse = saved[8], &weights = saved[9];
    const bool causal = ctx->saved_data["causal"].toBool();
    const bool return_weights = ctx->saved_data["return_weights"].toBool();
    // The loss may not use out (only the weights): the kernel needs some grad_out.
    Tensor grad_out = grads[0].defined() ? grads[0] : at::zeros_like(out);
    OptTensor grad_weights;
    if (return_weights && grads[2].defined()) grad_weights = grads[2];
    // delta = rowsum(out * grad_out) + rowsum(weights * grad_weights): computed by bwd. The
    // weights are passed whenever the forward returned them: in the accumulation dtype
    // (float32 and float64 inputs) the CPU kernel reads p from them instead of recomputing
    // the scores. A value that takes no gradient (e.g. attnkern's step-invariant values,
    // whose gradient is one GEMM per sequence in a weight-gradient store, attnkern/state.py)
    // costs no dv pass.
    const bool value_grad = ctx->needs_input_grad(2);
    auto [dq, dk, dv, dw] =
        bwd_op().call(grad_out, grad_weights, query, key, value, weight, out, lse,
                      optional_of(saved[4]), optional_of(saved[5]), causal,
                      optional_of(saved[6]),
                      return_weights ? OptTensor(weights) : std::nullopt, value_grad);
    // One gradient per forward input: none for the masks, flags and key_exp (a function
    // of key computed without grad; key's gradient comes through key itself).
    return {dq, dk, value_grad ? dv : Tensor(), dw, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor> fwd_autograd(const Tensor& query, const Tensor& key,
                                                const Tensor& value, const Tensor& weight,
                                                const OptTensor& key_padding_mask,
                                                const OptTensor& key_lengths, bool causal,
                                                bool return_weights, const OptTensor& key_exp) {
  // Inference (no_grad, or nothing requires grad): straight to the kernel, no graph node.
  if (!at::GradMode::is_enabled() || !(query.requires_grad() || key.requires_grad() ||
                                       value.requires_grad() || weight.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return fwd_op().call(query, key, value, weight, key_padding_mask, key_lengths, causal,
                         return_weights, key_exp);
  }
  auto res = FwdFunction::apply(query, key, value, weight, key_padding_mask, key_lengths,
                                causal, return_weights, key_exp);
  return {res[0], res[1], res[2]};
}

// attnkern::bwd has no derivative of its own. Where one could be asked for (grad mode on
// and an input that requires grad: a backward pass with create_graph=True), say so, rather
// than let PyTorch's fallback for ops without autograd treat it as a constant (silently
// wrong second derivatives, with only a warning).
std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_autograd(
    const Tensor& grad_out, const OptTensor& grad_weights, const Tensor& query,
    const Tensor& key, const Tensor& value, const Tensor& weight, const Tensor& out,
    const Tensor& lse, const OptTensor& key_padding_mask, const OptTensor& key_lengths,
    bool causal, const OptTensor& key_exp, const OptTensor& weights, bool value_grad) {
  if (at::GradMode::is_enabled()) {
    auto needs = [](const OptTensor& t) { return t.has_value() && t->requires_grad(); };
    TORCH_CHECK(!(grad_out.requires_grad() || needs(grad_weights) || query.requires_grad() ||
                  key.requires_grad() || value.requires_grad() || weight.requires_grad() ||
                  out.requires_grad() || needs(weights)),
                "attnkern: gradients of gradients (backward with create_graph=True, "
                "double backward) are not supported by the fused op; backend='reference' "
                "supports them");
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  return bwd_op().call(grad_out, grad_weights, query, key, value, weight, out, lse,
                       key_padding_mask, key_lengths, causal, key_exp, weights, value_grad);
}

// ------------------------------------------------------------------ fused energies

using ScoresSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                         const OptTensor&, bool, const OptTensor&);
using ScoresBwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                        const Tensor&, const Tensor&,
                                                        const OptTensor&, const OptTensor&,
                                                        bool, const OptTensor&);

const c10::TypedOperatorHandle<ScoresSig>& scores_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attnkern::scores", "")
                             .typed<ScoresSig>();
  return op;
}

const c10::TypedOperatorHandle<ScoresBwdSig>& scores_bwd_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attnkern::scores_backward", "")
                             .typed<ScoresBwdSig>();
  return op;
}

class ScoresFunction : public torch::autograd::Function<ScoresFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& query, const Tensor& key,
                        const Tensor& weight, const OptTensor& key_padding_mask,
                        const OptTensor& key_lengths, bool causal, const OptTensor& key_exp) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["causal"] = causal;
    ctx->save_for_backward({query, key, weight, key_padding_mask.value_or(Tensor()),
                            key_lengths.value_or(Tensor()), key_exp.value_or(Tensor())});
    return scores_op().call(query, key, weight, key_padding_mask, key_lengths, causal,
                            key_exp);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [dq, dk, dw] = scores_bwd_op().call(
        grads[0], saved[0], saved[1], saved[2], optional_of(saved[3]), optional_of(saved[4]),
        ctx->saved_data["causal"].toBool(), optional_of(saved[5]));
    return {dq, dk, dw, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor scores_autograd(const Tensor& query, const Tensor& key, const Tensor& weight,
                       const OptTensor& key_padding_mask, const OptTensor& key_lengths,
                       bool causal, const OptTensor& key_exp) {
  if (!at::GradMode::is_enabled() ||
      !(query.requires_grad() || key.requires_grad() || weight.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return scores_op().call(query, key, weight, key_padding_mask, key_lengths, causal,
                            key_exp);
  }
  return ScoresFunction::apply(query, key, weight, key_padding_mask, key_lengths, causal,
                               key_exp);
}

// No derivative of its own (as bwd): say so where one could be asked for.
std::tuple<Tensor, Tensor, Tensor> scores_backward_autograd(
    const Tensor& grad, const Tensor& query, const Tensor& key, const Tensor& weight,
    const OptTensor& key_padding_mask, const OptTensor& key_lengths, bool causal,
    const OptTensor& key_exp) {
  TORCH_CHECK(!at::GradMode::is_enabled() ||
                  !(grad.requires_grad() || query.requires_grad() || key.requires_grad() ||
                    weight.requires_grad()),
              "attnkern: gradients of gradients (backward with create_graph=True, double "
              "backward) are not supported by the fused op; backend='reference' supports "
              "them");
  at::AutoDispatchBelowADInplaceOrView guard;
  return scores_bwd_op().call(grad, query, key, weight, key_padding_mask, key_lengths, causal,
                              key_exp);
}

// attnkern::location_attention, location1_attention and rows_linear have no backward: they
// refuse what would need one instead of returning outputs that silently take no gradient.
// `instead`: what to use with grad.
void refuse_grad(const char* op,
                 std::initializer_list<std::pair<const char*, const Tensor*>> named,
                 const char* instead = "use the differentiable step (the location-aware "
                                       "modules do so by themselves)") {
  if (!at::GradMode::is_enabled()) return;
  for (const auto& [name, t] : named) {
    TORCH_CHECK_VALUE(!(t->defined() && t->requires_grad()), op, ": ", name,
                      " requires grad, and this op is for inference only (no backward): "
                      "call it under torch.no_grad(), or ", instead);
  }
}

using LocSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                          const Tensor&, const Tensor&, const Tensor&,
                                          const OptTensor&, const OptTensor&, int64_t, int64_t);

std::tuple<Tensor, Tensor> location_attention_autograd(
    const Tensor& query, const Tensor& processed_memory, const Tensor& attention_weights_cat,
    const Tensor& location_filter, const Tensor& memory, const Tensor& weight,
    const OptTensor& key_padding_mask, const OptTensor& key_lengths, int64_t kernel,
    int64_t pad) {
  refuse_grad("attnkern::location_attention",
              {{"query", &query}, {"processed_memory", &processed_memory},
               {"attention_weights_cat", &attention_weights_cat},
               {"location_filter", &location_filter}, {"memory", &memory}, {"weight", &weight}});
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attnkern::location_attention", "")
                             .typed<LocSig>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(query, processed_memory, attention_weights_cat, location_filter, memory,
                 weight, key_padding_mask, key_lengths, kernel, pad);
}

using Loc1Sig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const OptTensor&, const OptTensor&);

std::tuple<Tensor, Tensor> location1_attention_autograd(
    const Tensor& query, const Tensor& base, const Tensor& prev, const Tensor& conv_weight,
    const Tensor& dense_weight, const Tensor& memory, const Tensor& weight,
    const OptTensor& key_padding_mask, const OptTensor& key_lengths) {
  refuse_grad("attnkern::location1_attention",
              {{"query", &query}, {"base", &base}, {"prev", &prev},
               {"conv_weight", &conv_weight}, {"dense_weight", &dense_weight},
               {"memory", &memory}, {"weight", &weight}});
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attnkern::location1_attention", "")
                             .typed<Loc1Sig>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(query, base, prev, conv_weight, dense_weight, memory, weight,
                 key_padding_mask, key_lengths);
}

Tensor rows_linear_autograd(const Tensor& x, const Tensor& weight) {
  refuse_grad("attnkern::rows_linear", {{"x", &x}, {"weight", &weight}},
              "use F.linear (the modules do so by themselves)");
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("attnkern::rows_linear", "")
                             .typed<Tensor(const Tensor&, const Tensor&)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, weight);
}

}  // namespace
}  // namespace attnkern

TORCH_LIBRARY_IMPL(attnkern, Autograd, m) {
  m.impl("location_attention", &attnkern::location_attention_autograd);
  m.impl("location1_attention", &attnkern::location1_attention_autograd);
  m.impl("rows_linear", &attnkern::rows_linear_autograd);
  m.impl("fwd", &attnkern::fwd_autograd);
  m.impl("bwd", &attnkern::bwd_autograd);
  m.impl("scores", &attnkern::scores_autograd);
  m.impl("scores_backward", &attnkern::scores_backward_autograd);
}
