// Weight-gradient stores of step-invariant operands (attnkern/state.py has the why): a
// decoder step y_s = a_s @ M with the same M at every step records (a_s, dy_s) in M's
// store; when autograd reaches M, one GEMM gives dM = sum_s a_s^T dy_s (or its transpose,
// dW = G^T A, for an nn.Linear weight y = a @ W^T). In C++, so that a decoder step runs no
// Python autograd code:
//
//   wgrad_store(M, linear) -> token      a 0-element tensor whose node holds M's records;
//                                        its backward returns dM
//   wgrad_record(y, a, token) -> y'      a copy of y; backward records (a, dy), passes dy on
//   wgrad_record_linear(x, W, W_t, token) -> y
//                                        y = x @ W_t (W_t = W^T contiguous); backward
//                                        dx = dy @ W, records (x, dy)
//   rows_linear(x, W) -> y               y = x @ W^T without autograd (inference steps)
//
// A step's few rows (x (M, K), M <= kRowsMax) go through kernels/rows_linear.cpp, forward
// and dx, instead of the BLAS (see there for why); more rows, or other layouts, use at::.
//
// The steps find the accumulator through the token's node, so no Python object crosses the
// dispatcher (a custom-class argument costs about 20 us per call there). Entries are tagged
// with the autograd graph task that produced them: a backward pass that stops short of M
// (torch.autograd.grad of other inputs) leaves nothing for the next one.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cstring>
#include <tuple>
#include <vector>

#include "kernels/api.h"

namespace attnkern {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct StepAccumulator : torch::CustomClassHolder {
  StepAccumulator(bool linear, bool batched) : linear(linear), batched(batched) {}

  // A batched M (B, K, N): a step's (B, K) / (B, N) rows get a row dimension. A 2-D M (a
  // weight): rows of any leading shape are flattened, (.., K) -> (rows, K).
  void add(Tensor a, Tensor grad) {
    if (batched && a.dim() == 2) {
      a = a.unsqueeze(1);
      grad = grad.unsqueeze(1);
    } else if (!batched && a.dim() != 2) {
      a = a.reshape({-1, a.size(-1)});
      grad = grad.reshape({-1, grad.size(-1)});
    }
    entries.emplace_back(torch::autograd::get_current_graph_task_id(), std::move(a),
                         std::move(grad));
  }

  // dM of this backward pass's steps, one (batched) GEMM; undefined if none.
  Tensor take() {
    const int64_t task = torch::autograd::get_current_graph_task_id();
    std::vector<Tensor> as, gs;
    std::vector<std::tuple<int64_t, Tensor, Tensor>> rest;
    for (auto& e : entries) {
      if (std::get<0>(e) == task) {
        as.push_back(std::get<1>(e));
        gs.push_back(std::get<2>(e));
      } else {
        rest.push_back(std::move(e));
      }
    }
    entries = std::move(rest);
    if (as.empty()) return Tensor();
    const Tensor a = at::cat(as, -2);                          // (.., S rows, K)
    const Tensor g = at::cat(gs, -2).to(a.scalar_type());      // (.., S rows, N)
    return linear ? at::matmul(g.mT(), a) : at::matmul(a.mT(), g);
  }

  const bool linear, batched;
  std::vector<std::tuple<int64_t, Tensor, Tensor>> entries;
};

using Acc = c10::intrusive_ptr<StepAccumulator>;

class SinkFunction : public torch::autograd::Function<SinkFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& operand, const Acc& acc) {
    ctx->saved_data["acc"] = acc;
    return at::empty({0}, operand.options());
  }
  static variable_list backward(AutogradContext* ctx, variable_list) {
    return {ctx->saved_data["acc"].toCustomClass<StepAccumulator>()->take(), Tensor()};
  }
};

Acc accumulator_of(const char* op, const Tensor& token) {
  const auto fn = token.grad_fn();  // keeps the node alive while we read it
  auto* node = dynamic_cast<torch::autograd::CppNode<SinkFunction>*>(fn.get());
  TORCH_CHECK(node != nullptr, op, ": token must be the output of attnkern::wgrad_store");
  return node->ctx_.saved_data["acc"].toCustomClass<StepAccumulator>();
}

class TapFunction : public torch::autograd::Function<TapFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& y, const Tensor& a,
                        const Tensor& token, Acc acc) {
    ctx->save_for_backward({a, token});  // the token keeps the sink alive with this step
    ctx->saved_data["acc"] = acc;
    return y.clone();  // a new tensor, as the op's own output (in-place ops allowed on it)
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    ctx->saved_data["acc"].toCustomClass<StepAccumulator>()->add(saved[0], grads[0]);
    return {grads[0], Tensor(), at::empty({0}, saved[1].options()), Tensor()};
  }
};

// ------------------------------------------------------------------ a step's few rows

constexpr int64_t kRowsMax = 16;     // above this the BLAS's blocking pays
constexpr int64_t kRowsGrain = 1 << 18;  // multiply-adds per parallel chunk (~20 us)

// Whether a (M, J) with the weight W goes to the rows kernels: this ISA has them (not the
// scalar path), both on CPU and float32, plain (no neg bit), a 2-D with at most kRowsMax rows,
// W 2-D contiguous (a transposed view would cost a copy of W per step: the BLAS reads it as
// it is). forward: y = a W^T (J = K = W.size(1)); else dx = a W (J = N = W.size(0)).
bool rows_apply(const Tensor& a, const Tensor& w, bool forward = true) {
  return active_kernels().rows_fwd != nullptr && a.dim() == 2 && w.dim() == 2 &&
         w.is_contiguous() && a.size(1) == w.size(forward ? 1 : 0) && a.size(0) <= kRowsMax &&
         a.is_cpu() && w.is_cpu() && a.scalar_type() == at::kFloat &&
         w.scalar_type() == at::kFloat && !a.is_neg() && !w.is_neg();
}

// y = x W^T, x (M, K), W (N, K) -> (M, N); rows_apply(x, w) holds.
Tensor rows_forward(const Tensor& x, const Tensor& w) {
  const Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = w.size(0);
  Tensor y = at::empty({M, N}, xc.options());
  if (M * N == 0) return y;
  if (K == 0) return y.zero_();
  const int64_t grain = std::max<int64_t>(8, kRowsGrain / std::max<int64_t>(M * K, 1));
  const RowsLinearFn kernel = active_kernels().rows_fwd;
  const float *px = xc.const_data_ptr<float>(), *pw = w.const_data_ptr<float>();
  float* py = y.mutable_data_ptr<float>();
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) { kernel(px, pw, M, K, N, n0, n1, py); });
  return y;
}

// dx = g W, g (M, N), W (N, K) -> (M, K); rows_apply(g, w, false) holds.
Tensor rows_input_grad(const Tensor& g, const Tensor& w) {
  const Tensor gc = g.contiguous();
  const int64_t M = gc.size(0), N = gc.size(1), K = w.size(1);
  Tensor dx = at::empty({M, K}, gc.options());
  if (M * K == 0) return dx;
  if (N == 0) return dx.zero_();
  const int64_t grain = std::max<int64_t>(64, kRowsGrain / std::max<int64_t>(M * N, 1));
  const RowsLinearGradFn kernel = active_kernels().rows_bwd;
  const float *pg = gc.const_data_ptr<float>(), *pw = w.const_data_ptr<float>();
  float* pdx = dx.mutable_data_ptr<float>();
  at::parallel_for(0, K, grain, [&](int64_t k0, int64_t k1) { kernel(pg, pw, M, N, K, k0, k1, pdx); });
  return dx;
}

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& weight_t, const Tensor& token, Acc acc) {
    ctx->save_for_backward({x, weight, token});
    ctx->saved_data["acc"] = acc;
    return rows_apply(x, weight) ? rows_forward(x, weight) : at::matmul(x, weight_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    ctx->saved_data["acc"].toCustomClass<StepAccumulator>()->add(saved[0], grads[0]);
    Tensor dx;
    if (ctx->needs_input_grad(0)) {
      const Tensor& g = grads[0];
      const Tensor& w = saved[1];  // (N, K): dx = g W by the rows kernel when W is contiguous
      dx = rows_apply(g, w, false) ? rows_input_grad(g, w) : at::matmul(g, w);
    }
    return {dx, Tensor(), Tensor(), at::empty({0}, saved[2].options()), Tensor()};
  }
};

Tensor wgrad_store(const Tensor& operand, bool linear) {
  TORCH_CHECK(operand.dim() == 2 || operand.dim() == 3,
              "attnkern::wgrad_store: the operand must ",
              "be 2-D (a weight) or 3-D (batched), got ", operand.sizes());
  return SinkFunction::apply(operand, c10::make_intrusive<StepAccumulator>(linear,
                                                                           operand.dim() == 3));
}

Tensor wgrad_record(const Tensor& y, const Tensor& a, const Tensor& token) {
  TORCH_CHECK(y.dim() >= 2 && y.dim() == a.dim() && y.size(0) == a.size(0),
              "attnkern::wgrad_record: y and a must have the same rank (>= 2) and batch, got ",
              y.sizes(), " and ", a.sizes());
  return TapFunction::apply(y, a, token, accumulator_of("attnkern::wgrad_record", token));
}

Tensor wgrad_record_linear(const Tensor& x, const Tensor& weight, const Tensor& weight_t,
                   const Tensor& token) {
  TORCH_CHECK(weight.dim() == 2 && weight_t.dim() == 2 && weight_t.size(0) == weight.size(1) &&
                  weight_t.size(1) == weight.size(0) && x.size(-1) == weight.size(1),
              "attnkern::wgrad_record_linear: x (.., K), weight (N, K), weight_t (K, N) "
              "expected, got ",
              x.sizes(), ", ", weight.sizes(), ", ", weight_t.sizes());
  return LinearFunction::apply(x, weight, weight_t, token,
                               accumulator_of("attnkern::wgrad_record_linear", token));
}

// rows_linear(x, W): y = x W^T for inference steps (no autograd: autograd.cpp refuses inputs
// that require grad), the rows kernels for up to kRowsMax rows, at::matmul above.
Tensor rows_linear(const Tensor& x, const Tensor& weight) {
  const char* op = "attnkern::rows_linear";
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be (M, K), got shape ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == x.size(1), op,
                    ": weight must be (N, K=", x.size(1), ") (an nn.Linear weight), got shape ",
                    weight.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == weight.scalar_type() &&
                       (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
                   op, ": x and weight must both be float32 or both float64, got ",
                   x.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu() && weight.device().is_cpu(), op,
                    ": x and weight must be on cpu, got ", x.device(), " and ", weight.device());
  return rows_apply(x, weight) ? rows_forward(x, weight) : at::matmul(x, weight.t());
}

// same_bytes(a, b): every pair has the same dtype, shape and bytes. The modules' call
// protocols check with it, at every call, that a kept state was made from the tensors they
// see now (an edit through .data bumps no version counter): memcmp reads 512 KB in about
// 8 us where torch.equal takes about 70 us (one thread). Bitwise, so a NaN equals itself.
bool same_bytes(const at::TensorList a, const at::TensorList b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor &x = a[i], &y = b[i];
    if (x.scalar_type() != y.scalar_type() || x.sizes() != y.sizes() ||
        x.device() != y.device()) {
      return false;
    }
    if (x.is_cpu() && x.is_contiguous() && y.is_contiguous() && !x.is_neg() && !y.is_neg() &&
        !x.is_conj() && !y.is_conj()) {
      const size_t bytes = static_cast<size_t>(x.numel()) * x.element_size();
      if (bytes != 0 && std::memcmp(x.const_data_ptr(), y.const_data_ptr(), bytes) != 0) {
        return false;
      }
    } else if (!at::equal(x, y)) {
      return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace attnkern

// Registered so that the accumulator can live in an IValue (the sink node's saved_data).
static const auto step_accumulator_class =
    torch::class_<attnkern::StepAccumulator>("attnkern", "StepAccumulator");

// Schemas in schema.cpp. Each builds its own autograd node (torch::autograd::Function), so
// it sits above autograd.
TORCH_LIBRARY_IMPL(attnkern, CompositeImplicitAutograd, m) {
  m.impl("wgrad_store", &attnkern::wgrad_store);
  m.impl("wgrad_record", &attnkern::wgrad_record);
  m.impl("wgrad_record_linear", &attnkern::wgrad_record_linear);
  m.impl("same_bytes", &attnkern::same_bytes);
}

TORCH_LIBRARY_IMPL(attnkern, CPU, m) { m.impl("rows_linear", &attnkern::rows_linear); }
