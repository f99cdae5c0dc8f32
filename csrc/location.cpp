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

namespace attnkern {
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
  const Tensor xc = x.contiguous();
  const int64_t B = x.size(0), C = x.size(1), T = x.size(2), W = C * taps;
  Tensor out = at::empty({B * T, W}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "location_windows", [&] {
    const scalar_t* src = xc.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * T, std::max<int64_t>(1, 16384 / std::max<int64_t>(W, 1)),
                     [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / T, t = r % T;
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

}  // namespace
}  // namespace attnkern

TORCH_LIBRARY_IMPL(attnkern, CPU, m) {
  m.impl("location_windows", &attnkern::windows_cpu);
  m.impl("location_windows_backward", &attnkern::windows_backward_cpu);
}

TORCH_LIBRARY_IMPL(attnkern, Autograd, m) {
  m.impl("location_windows", &attnkern::windows_autograd);
}
