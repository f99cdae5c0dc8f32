// The location layer's windows (attnkern.LocationSensitiveAttention): im2col of a 1-D
// convolution, with each channel's taps zero-padded to `taps` (a GEMM-friendly inner size),
// and its adjoint. Per decoder step these replace a pad / unfold / permute / pad / reshape
// chain whose backward (unfold_backward, pad slices) cost more than the location GEMMs.
//
//   location_windows(x (B, C, T), kernel, pad, taps) -> (B * T, C * taps)
//     out[b * T + t, c * taps + k] = x[b, c, t + k - pad] for k < kernel and
//     0 <= t + k - pad < T, else 0
//   location_windows_backward(grad (B * T, C * taps), x's (B, C, T), kernel, pad, taps)
//     -> (B, C, T), the adjoint (a sum over the windows that read each element)
//
// Schemas are defined in schema.cpp; CPU kernels and the autograd (C++, so a decoder
// step runs no Python autograd code for them) are registered here. Glue, baseline ISA: the
// loops are copies and short sums.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "kernels/api.h"
#include "location.h"

namespace attnkern {
void fill_location_windows(const at::Tensor& x, int64_t kernel, int64_t pad, int64_t taps,
                           at::Tensor& out, const int64_t* offsets) {
  const int64_t B = x.size(0), C = x.size(1), T = x.size(2), W = C * taps;
  const int64_t rows = offsets != nullptr ? offsets[B] : B * T;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "location_windows", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(W, 1)),
                     [&](int64_t r0, int64_t r1) {
      // packed rows: batch b holds rows [offsets[b], offsets[b + 1]), its steps t = 0, 1, ...
      int64_t b = 0;
      if (offsets != nullptr) b = std::upper_bound(offsets, offsets + B + 1, r0) - offsets - 1;
      for (int64_t r = r0; r < r1; ++r) {
        int64_t t;
        if (offsets != nullptr) {
          while (r >= offsets[b + 1]) ++b;
          t = r - offsets[b];
        } else {
          b = r / T, t = r % T;
        }
        // taps k in [k0, k1) read x[t + k - pad]; the rest are zero
        const int64_t k0 = std::max<int64_t>(0, pad - t);
        const int64_t k1 = std::min<int64_t>(kernel, T + pad - t);
        for (int64_t c = 0; c < C; ++c) {
          scalar_t* o = dst + r * W + c * taps;
          const scalar_t* s = src + (b * C + c) * T + (t - pad);
          for (int64_t k = 0; k < k0; ++k) o[k] = scalar_t(0);
          for (int64_t k = k0; k < k1; ++k) o[k] = s[k];
          for (int64_t k = std::max(k0, k1); k < taps; ++k) o[k] = scalar_t(0);
        }
      }
    });
  });
}

namespace {

using at::Tensor;

void check_geometry(const char* op, int64_t kernel, int64_t pad, int64_t taps) {
  TORCH_CHECK(kernel >= 1, op, ": kernel must be >= 1, got ", kernel);
  TORCH_CHECK(pad >= 0 && pad < kernel, op, ": pad must be in [0, kernel), got pad ", pad,
              " for kernel ", kernel);
  TORCH_CHECK(taps >= kernel, op, ": taps must be >= kernel, got taps ", taps, " for kernel ",
              kernel);
}

void check_float(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating tensor, got ", t.scalar_type());
}

Tensor windows_cpu(const Tensor& x, int64_t kernel, int64_t pad, int64_t taps) {
  const char* op = "attnkern::location_windows";
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D (B, C, T), got ", x.sizes());
  check_float(op, "x", x);
  check_geometry(op, kernel, pad, taps);
  Tensor out = at::empty({x.size(0) * x.size(2), x.size(1) * taps}, x.options());
  fill_location_windows(x.contiguous(), kernel, pad, taps, out);
  return out;
}

Tensor windows_backward_cpu(const Tensor& grad, at::IntArrayRef x_size, int64_t kernel,
                            int64_t pad, int64_t taps) {
  const char* op = "attnkern::location_windows_backward";
  TORCH_CHECK(x_size.size() == 3, op, ": x_size must be (B, C, T), got ", x_size);
  const int64_t B = x_size[0], C = x_size[1], T = x_size[2];
  TORCH_CHECK(B >= 0 && C >= 0 && T >= 0, op, ": x_size must be non-negative, got ", x_size);
  check_geometry(op, kernel, pad, taps);
  check_float(op, "grad", grad);
  const int64_t W = C * taps;
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == B * T && grad.size(1) == W, op,
              ": grad must be (B * T, C * taps) = (", B * T, ", ", W, "), got ", grad.sizes());
  const Tensor g = grad.contiguous();
  Tensor dx = at::empty({B, C, T}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "location_windows_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = g.const_data_ptr<scalar_t>();
    scalar_t* dst = dx.mutable_data_ptr<scalar_t>();
    // dx[b, c, s] = sum over k of grad[b * T + (s - k + pad), c * taps + k], 0 <= s-k+pad < T
    at::parallel_for(0, B * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(T * kernel, 1)),
                     [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t b = p / C, c = p % C;
        const scalar_t* gb = src + b * T * W + c * taps;
        for (int64_t s = 0; s < T; ++s) {
          const int64_t k0 = std::max<int64_t>(0, s + pad - (T - 1));
          const int64_t k1 = std::min<int64_t>(kernel, s + pad + 1);
          acc_t sum = 0;
          for (int64_t k = k0; k < k1; ++k) sum += acc_t(gb[(s - k + pad) * W + k]);
          dst[p * T + s] = scalar_t(sum);
        }
      }
    });
  });
  return dx;
}

using BwdSig = Tensor(const Tensor&, at::IntArrayRef, int64_t, int64_t, int64_t);
using FwdSig = Tensor(const Tensor&, int64_t, int64_t, int64_t);

class WindowsFunction : public torch::autograd::Function<WindowsFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, int64_t kernel,
                        int64_t pad, int64_t taps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("attnkern::location_windows", "")
                               .typed<FwdSig>();
    ctx->saved_data["x_size"] = x.sizes().vec();
    ctx->saved_data["geometry"] = std::vector<int64_t>{kernel, pad, taps};
    return op.call(x, kernel, pad, taps);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("attnkern::location_windows_backward", "")
                               .typed<BwdSig>();
    const auto size = ctx->saved_data["x_size"].toIntVector();
    const auto geo = ctx->saved_data["geometry"].toIntVector();
    return {op.call(grads[0], size, geo[0], geo[1], geo[2]), Tensor(), Tensor(), Tensor()};
  }
};

Tensor windows_autograd(const Tensor& x, int64_t kernel, int64_t pad, int64_t taps) {
  return WindowsFunction::apply(x, kernel, pad, taps);
}

// ---------------------------------------------------------------- one-channel location term
//
//   location1_keys(base (B, T, A), prev (B, T), conv_weight (C, K), dense_weight (A, C))
//     -> base + dense(conv(prev)): conv with K = 2P + 1 taps (odd), P zeros each side, no
//     biases (ESPnet AttLoc / AttCovLoc, SpeechBrain LocationAwareAttention)
//   location1_keys_backward(grad (B, T, A), prev, conv_weight, dense_weight, prev_grad)
//     -> (grad_prev (B, T), or (0,) when not prev_grad; grad_conv_weight; grad_dense_weight)
// The kernels are per ISA (kernels/location1.cpp); float16 / bfloat16 run in float.

struct Loc1Dims {
  int64_t B, T, A, C, K;
};

Loc1Dims check_location1(const char* op, const Tensor& base, const Tensor& prev,
                         const Tensor& conv_weight, const Tensor& dense_weight,
                         const char* base_name) {
  TORCH_CHECK(base.dim() == 3, op, ": ", base_name, " must be 3-D (B, T, A), got ",
              base.sizes());
  const int64_t B = base.size(0), T = base.size(1), A = base.size(2);
  TORCH_CHECK(prev.dim() == 2 && prev.size(0) == B && prev.size(1) == T, op,
              ": prev must be (B, T) = (", B, ", ", T, "), got ", prev.sizes());
  TORCH_CHECK(conv_weight.dim() == 2, op, ": conv_weight must be 2-D (C, K), got ",
              conv_weight.sizes());
  const int64_t C = conv_weight.size(0), K = conv_weight.size(1);
  TORCH_CHECK(K % 2 == 1, op, ": conv_weight must have an odd number of taps K = 2P + 1 "
              "(the output keeps length T), got ", conv_weight.sizes());
  TORCH_CHECK(dense_weight.dim() == 2 && dense_weight.size(0) == A &&
                  dense_weight.size(1) == C,
              op, ": dense_weight must be (A, C) = (", A, ", ", C, "), got ",
              dense_weight.sizes());
  for (const Tensor* t : {&base, &prev, &conv_weight, &dense_weight}) {
    check_float(op, "every input", *t);
    TORCH_CHECK(t->scalar_type() == base.scalar_type(), op,
                ": every input must have ", base_name, "'s dtype ", base.scalar_type(),
                ", got ", t->scalar_type());
    TORCH_CHECK(t->device().is_cpu(), op, ": every input must be a CPU tensor, got ",
                t->device());
  }
  return {B, T, A, C, K};
}

// The accumulation type as a template parameter picked by one branch (see ops.cpp on GCC
// 12's miscompile of a computed dtype).
template <typename T>
struct Loc1Kernels;
template <>
struct Loc1Kernels<float> {
  static Location1FwdFn<float> fwd() { return active_kernels().loc1_fwd_f; }
  static Location1BwdFn<float> bwd() { return active_kernels().loc1_bwd_f; }
};
template <>
struct Loc1Kernels<double> {
  static Location1FwdFn<double> fwd() { return active_kernels().loc1_fwd_d; }
  static Location1BwdFn<double> bwd() { return active_kernels().loc1_bwd_d; }
};

Tensor acc_contig(const Tensor& t, at::ScalarType acc) {
  return t.to(acc).contiguous();
}

template <typename T>
Tensor location1_run(const Loc1Dims& d, const Tensor& base, const Tensor& prev,
                     const Tensor& cw, const Tensor& dw) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Tensor b = acc_contig(base, acc), p = acc_contig(prev, acc), c = acc_contig(cw, acc),
               w = acc_contig(dw, acc);
  Tensor out = at::empty({d.B, d.T, d.A}, b.options());
  if (out.numel() > 0) {
    Loc1Kernels<T>::fwd()(b.data_ptr<T>(), p.data_ptr<T>(), c.data_ptr<T>(), w.data_ptr<T>(),
                          d.B, d.T, d.A, d.C, d.K, nullptr, out.data_ptr<T>());
  }
  return out.to(base.scalar_type());
}

Tensor location1_cpu(const Tensor& base, const Tensor& prev, const Tensor& conv_weight,
                     const Tensor& dense_weight) {
  const Loc1Dims d = check_location1("attnkern::location1_keys", base, prev, conv_weight,
                                     dense_weight, "base");
  if (base.scalar_type() == at::kDouble)
    return location1_run<double>(d, base, prev, conv_weight, dense_weight);
  return location1_run<float>(d, base, prev, conv_weight, dense_weight);
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor> location1_backward_run(const Loc1Dims& d, const Tensor& grad,
                                                          const Tensor& prev, const Tensor& cw,
                                                          const Tensor& dw, bool prev_grad) {
  constexpr at::ScalarType acc = c10::CppTypeToScalarType<T>::value;
  const Tensor g = acc_contig(grad, acc), p = acc_contig(prev, acc), c = acc_contig(cw, acc),
               w = acc_contig(dw, acc);
  Tensor gprev = prev_grad ? at::zeros({d.B, d.T}, g.options()) : at::empty({0}, g.options());
  Tensor gcw = at::zeros({d.C, d.K}, g.options());
  Tensor gdw = at::zeros({d.A, d.C}, g.options());
  if (d.B * d.T > 0 && d.C > 0) {
    Loc1Kernels<T>::bwd()(g.data_ptr<T>(), p.data_ptr<T>(), c.data_ptr<T>(), w.data_ptr<T>(),
                          d.B, d.T, d.A, d.C, d.K, prev_grad ? gprev.data_ptr<T>() : nullptr,
                          gcw.data_ptr<T>(), gdw.data_ptr<T>());
  }
  const auto dtype = grad.scalar_type();
  return {gprev.to(dtype), gcw.to(dtype), gdw.to(dtype)};
}

std::tuple<Tensor, Tensor, Tensor> location1_backward_cpu(const Tensor& grad,
                                                          const Tensor& prev,
                                                          const Tensor& conv_weight,
                                                          const Tensor& dense_weight,
                                                          bool prev_grad) {
  const Loc1Dims d = check_location1("attnkern::location1_keys_backward", grad, prev,
                                     conv_weight, dense_weight, "grad");
  if (grad.scalar_type() == at::kDouble)
    return location1_backward_run<double>(d, grad, prev, conv_weight, dense_weight, prev_grad);
  return location1_backward_run<float>(d, grad, prev, conv_weight, dense_weight, prev_grad);
}

using Loc1Sig = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&);
using Loc1BwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                      const Tensor&, const Tensor&, bool);

class Location1Function : public torch::autograd::Function<Location1Function> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& base,
                        const Tensor& prev, const Tensor& conv_weight,
                        const Tensor& dense_weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("attnkern::location1_keys", "")
                               .typed<Loc1Sig>();
    ctx->save_for_backward({prev, conv_weight, dense_weight});
    return op.call(base, prev, conv_weight, dense_weight);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("attnkern::location1_keys_backward", "")
                               .typed<Loc1BwdSig>();
    const auto saved = ctx->get_saved_variables();
    const bool prev_grad = ctx->needs_input_grad(1);
    const bool weight_grads = ctx->needs_input_grad(2) || ctx->needs_input_grad(3);
    Tensor gprev, gcw, gdw;
    if (prev_grad || weight_grads) {
      std::tie(gprev, gcw, gdw) = op.call(grads[0], saved[0], saved[1], saved[2], prev_grad);
    }
    return {ctx->needs_input_grad(0) ? grads[0] : Tensor(), prev_grad ? gprev : Tensor(), ctx->needs_input_grad(2) ? gcw : Tensor(),
            ctx->needs_input_grad(3) ? gdw : Tensor()};
  }
};

Tensor location1_autograd(const Tensor& base, const Tensor& prev, const Tensor& conv_weight,
                          const Tensor& dense_weight) {
  return Location1Function::apply(base, prev, conv_weight, dense_weight);
}

}  // namespace
}  // namespace attnkern

TORCH_LIBRARY_IMPL(attnkern, CPU, m) {
  m.impl("location_windows", &attnkern::windows_cpu);
  m.impl("location_windows_backward", &attnkern::windows_backward_cpu);
  m.impl("location1_keys", &attnkern::location1_cpu);
  m.impl("location1_keys_backward", &attnkern::location1_backward_cpu);
}

TORCH_LIBRARY_IMPL(attnkern, Autograd, m) {
  m.impl("location_windows", &attnkern::windows_autograd);
  m.impl("location1_keys", &attnkern::location1_autograd);
}
