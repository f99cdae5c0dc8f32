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
#include <cstring>
#include <optional>
#include <vector>
#include <tuple>

#include "checks.h"
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

void adjoint_location_windows(const at::Tensor& grad, int64_t kernel, int64_t pad, int64_t taps,
                              const int64_t* offsets, at::Tensor& dx) {
  const int64_t B = dx.size(0), C = dx.size(1), T = dx.size(2), W = C * taps;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "location_windows_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = grad.const_data_ptr<scalar_t>();
    scalar_t* dst = dx.mutable_data_ptr<scalar_t>();
    // dx[b, c, s] = sum over k of grad[row(b, s - k + pad), c * taps + k] over the rows
    // 0 <= s - k + pad < n_b that exist (n_b = T, or batch b's packed rows), as a scatter
    // from each row's taps (read contiguously) into one (c)'s T sums
    at::parallel_for(0, B * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(T * kernel, 1)),
                     [&](int64_t p0, int64_t p1) {
      std::vector<acc_t> sum(T + kernel);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t b = p / C, c = p % C;
        const int64_t first = offsets != nullptr ? offsets[b] : b * T;
        const int64_t n = offsets != nullptr ? offsets[b + 1] - offsets[b] : T;
        const scalar_t* gb = src + first * W + c * taps;
        std::fill(sum.begin(), sum.end(), acc_t(0));
        // row t's tap k lands on s = t + k - pad: sum[s + pad] (inside [0, T + kernel - 1))
        for (int64_t t = 0; t < n; ++t) {
          const scalar_t* g = gb + t * W;
          acc_t* o = sum.data() + t;
          for (int64_t k = 0; k < kernel; ++k) o[k] += acc_t(g[k]);
        }
        for (int64_t s = 0; s < T; ++s) dst[p * T + s] = scalar_t(sum[s + pad]);
      }
    });
  });
}

std::vector<int64_t> key_ends(const at::Tensor& mask, const at::Tensor& lengths, int64_t B,
                              int64_t T) {
  std::vector<int64_t> ends(B, T);
  const bool* pm = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;
  const int64_t* pl = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    int64_t e = pl != nullptr ? std::min(std::max<int64_t>(pl[b], 0), T) : T;
    if (pm != nullptr)
      while (e > 0 && pm[b * T + e - 1]) --e;
    ends[b] = e;
  }
  return ends;
}

namespace {

using at::Tensor;

void check_geometry(const char* op, int64_t kernel, int64_t pad, int64_t taps) {
  TORCH_CHECK_VALUE(kernel >= 1, op, ": kernel must be >= 1, got ", kernel);
  TORCH_CHECK_VALUE(pad >= 0 && pad < kernel, op, ": pad must be in [0, kernel), got pad ", pad,
                    " for kernel ", kernel);
  TORCH_CHECK_VALUE(taps >= kernel, op, ": taps must be >= kernel, got taps ", taps,
                    " for kernel ", kernel);
}

void check_float(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK_TYPE(is_float(t), op, ": ", name,
                   " must be a floating tensor (float16, bfloat16, float32 or float64), got ",
                   dtype_name(t.scalar_type()), " of shape ", shape(t.sizes()));
}

Tensor windows_cpu(const Tensor& x, int64_t kernel, int64_t pad, int64_t taps) {
  const char* op = "attnkern::location_windows";
  TORCH_CHECK_VALUE(x.dim() == 3, op, ": x must be 3-D (B, C, T), got shape ",
                    shape(x.sizes()));
  check_float(op, "x", x);
  check_geometry(op, kernel, pad, taps);
  Tensor out = at::empty({x.size(0) * x.size(2), x.size(1) * taps}, x.options());
  fill_location_windows(x.contiguous(), kernel, pad, taps, out);
  return out;
}

Tensor windows_backward_cpu(const Tensor& grad, at::IntArrayRef x_size, int64_t kernel,
                            int64_t pad, int64_t taps) {
  const char* op = "attnkern::location_windows_backward";
  TORCH_CHECK_VALUE(x_size.size() == 3, op, ": x_size must be (B, C, T), got ", x_size);
  const int64_t B = x_size[0], C = x_size[1], T = x_size[2];
  TORCH_CHECK_VALUE(B >= 0 && C >= 0 && T >= 0, op, ": x_size must be non-negative, got ",
                    x_size);
  check_geometry(op, kernel, pad, taps);
  check_float(op, "grad", grad);
  const int64_t W = C * taps;
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == B * T && grad.size(1) == W, op,
                    ": grad must be (B * T, C * taps) = (", B * T, ", ", W, "), got shape ",
                    shape(grad.sizes()));
  Tensor dx = at::empty({B, C, T}, grad.options());
  adjoint_location_windows(grad.contiguous(), kernel, pad, taps, nullptr, dx);
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

// ---------------------------------------------------------------- the location keys
//
//   location_keys(base (B, T, A), x (B, C, T), filter (A, C * taps), key_padding_mask?,
//                 key_lengths?, kernel, pad) -> keys (B, T, A)
//     keys[b, t] = base[b, t] + windows(x)[b * T + t] @ filter^T for t < end_b, base[b, t]
//     past it, end_b = min(key_lengths[b], one past the mask's last False) (T without them):
//     the location term only where an attention step can use the keys, so that the windows,
//     the GEMM and their backward's two GEMMs skip a batch's padded tail. The rows past an
//     end are masked for the attention (which never reads them), so its results and
//     gradients are those of the full keys.
// Differentiable in base, x and filter (C++ autograd below).

struct KeysGeometry {
  int64_t B, C, T, A, W, taps;
};

// Every operand of one dtype (a floating one) on the CPU; `first` names the one whose dtype
// the others must have.
void check_same_float_cpu(const char* op, const char* first,
                          std::initializer_list<std::pair<const char*, const Tensor*>> named) {
  const Tensor& t0 = *named.begin()->second;
  for (const auto& [name, t] : named) {
    TORCH_CHECK_TYPE(is_float(*t), op, ": ", name,
                     " must be a floating tensor (float16, bfloat16, float32 or float64), got ",
                     dtype_name(t->scalar_type()), " of shape ", shape(t->sizes()));
    TORCH_CHECK_TYPE(t->scalar_type() == t0.scalar_type(), op, ": ", name, " must have ", first,
                     "'s dtype ", dtype_name(t0.scalar_type()), ", got ",
                     dtype_name(t->scalar_type()), " of shape ", shape(t->sizes()));
    TORCH_CHECK_VALUE(t->device().is_cpu(), op, ": ", name, " is on ", t->device(),
                      ", expected a CPU tensor (", name, " shape ", shape(t->sizes()), ")");
  }
}

KeysGeometry check_location_keys(const char* op, const Tensor& base, const Tensor& x,
                                 const Tensor& filter, int64_t kernel, int64_t pad) {
  TORCH_CHECK_VALUE(base.dim() == 3, op, ": base must be (B, T, A), got shape ",
                    shape(base.sizes()));
  const int64_t B = base.size(0), T = base.size(1), A = base.size(2);
  const int64_t taps =
      check_location_geometry(op, "x", x, "filter", filter, B, T, "A", A, "base", kernel, pad);
  check_same_float_cpu(op, "base", {{"base", &base}, {"x", &x}, {"filter", &filter}});
  return {B, x.size(1), T, A, filter.size(1), taps};
}

// Each batch's end of usable keys (key_ends), the masks checked first.
std::vector<int64_t> checked_ends(const char* op, const std::optional<Tensor>& mask,
                                  const std::optional<Tensor>& lengths, const Tensor& base) {
  const int64_t B = base.size(0), T = base.size(1);
  check_key_masks(op, mask, lengths, B, T, base.device(), "base", base.sizes());
  return key_ends(mask.has_value() ? mask->contiguous() : Tensor(),
                  lengths.has_value() ? lengths->contiguous() : Tensor(), B, T);
}

// Packed row offsets of the ends: batch b's rows at [offsets[b], offsets[b + 1]).
std::vector<int64_t> packed_offsets(const std::vector<int64_t>& ends) {
  std::vector<int64_t> offsets(ends.size() + 1, 0);
  for (size_t b = 0; b < ends.size(); ++b) offsets[b + 1] = offsets[b] + ends[b];
  return offsets;
}

// keys = base, plus the packed term rows added to their batch's first rows: one pass
Tensor keys_from(const Tensor& base_in, const Tensor& term, const std::vector<int64_t>& offsets) {
  const Tensor base = base_in.contiguous();
  Tensor keys = at::empty(base.sizes(), base.options());
  const int64_t B = base.size(0), T = base.size(1), A = base.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, base.scalar_type(), "location_keys", [&] {
    add_packed_rows(base.const_data_ptr<scalar_t>(), term.const_data_ptr<scalar_t>(),
                    offsets.data(), B, T, A, keys.mutable_data_ptr<scalar_t>(), true);
  });
  return keys;
}

// the windows (packed rows) of x
Tensor packed_windows(const KeysGeometry& g, const Tensor& x,
                      const std::vector<int64_t>& offsets, int64_t kernel, int64_t pad) {
  Tensor windows = at::empty({offsets.back(), g.W}, x.options());
  fill_location_windows(x.contiguous(), kernel, pad, g.taps, windows, offsets.data());
  return windows;
}

// keys from the windows: one addmm onto base when every row has its term, else the term's
// rows then one pass adding them to base (keys_from)
Tensor keys_of(const KeysGeometry& g, const Tensor& base, const Tensor& windows,
               const Tensor& filter, const std::vector<int64_t>& offsets) {
  if (offsets.back() == g.B * g.T)
    return at::addmm(base.reshape({g.B * g.T, g.A}), windows, filter.t()).view({g.B, g.T, g.A});
  return keys_from(base, at::mm(windows, filter.t()), offsets);
}

Tensor location_keys_cpu(const Tensor& base, const Tensor& x, const Tensor& filter,
                         const std::optional<Tensor>& key_padding_mask,
                         const std::optional<Tensor>& key_lengths, int64_t kernel, int64_t pad) {
  const char* op = "attnkern::location_keys";
  const KeysGeometry g = check_location_keys(op, base, x, filter, kernel, pad);
  const auto offsets = packed_offsets(checked_ends(op, key_padding_mask, key_lengths, base));
  return keys_of(g, base, packed_windows(g, x, offsets, kernel, pad), filter, offsets);
}

class LocationKeysFunction : public torch::autograd::Function<LocationKeysFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& base,
                        const Tensor& x, const Tensor& filter,
                        const std::optional<Tensor>& key_padding_mask,
                        const std::optional<Tensor>& key_lengths, int64_t kernel, int64_t pad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const char* op = "attnkern::location_keys";
    const KeysGeometry g = check_location_keys(op, base, x, filter, kernel, pad);
    const auto offsets =
        packed_offsets(checked_ends(op, key_padding_mask, key_lengths, base));
    const Tensor windows = packed_windows(g, x, offsets, kernel, pad);
    ctx->save_for_backward({windows, filter});
    ctx->saved_data["offsets"] = offsets;
    ctx->saved_data["x_size"] = x.sizes().vec();
    ctx->saved_data["geometry"] = std::vector<int64_t>{kernel, pad, g.taps};
    return keys_of(g, base, windows, filter, offsets);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &windows = saved[0], &filter = saved[1];
    const auto offsets = ctx->saved_data["offsets"].toIntVector();
    const auto size = ctx->saved_data["x_size"].toIntVector();
    const auto geo = ctx->saved_data["geometry"].toIntVector();
    const int64_t B = size[0], T = size[2], rows = offsets.back();
    const Tensor grad = grads[0].contiguous();
    Tensor gx, gfilter;
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      // the gradient of the term's rows, packed as the windows are
      Tensor gterm;
      if (rows == B * T) {
        gterm = grad.view({rows, grad.size(2)});
      } else {
        gterm = at::empty({rows, grad.size(2)}, grad.options());
        const int64_t rb = grad.size(2) * grad.element_size();
        const char* src = static_cast<const char*>(grad.const_data_ptr());
        char* dst = static_cast<char*>(gterm.mutable_data_ptr());
        for (int64_t b = 0; b < B; ++b)
          std::memcpy(dst + offsets[b] * rb, src + b * T * rb,
                      (offsets[b + 1] - offsets[b]) * rb);
      }
      if (ctx->needs_input_grad(2)) gfilter = at::mm(gterm.t(), windows);
      if (ctx->needs_input_grad(1)) {
        gx = at::empty(size, grad.options());
        adjoint_location_windows(at::mm(gterm, filter), geo[0], geo[1], geo[2],
                                 offsets.data(), gx);
      }
    }
    return {ctx->needs_input_grad(0) ? grads[0] : Tensor(), gx, gfilter, Tensor(), Tensor(),
            Tensor(), Tensor()};
  }
};

Tensor location_keys_autograd(const Tensor& base, const Tensor& x, const Tensor& filter,
                              const std::optional<Tensor>& key_padding_mask,
                              const std::optional<Tensor>& key_lengths, int64_t kernel,
                              int64_t pad) {
  return LocationKeysFunction::apply(base, x, filter, key_padding_mask, key_lengths, kernel, pad);
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
  TORCH_CHECK_VALUE(base.dim() == 3, op, ": ", base_name, " must be (B, T, A), got shape ",
                    shape(base.sizes()));
  const int64_t B = base.size(0), T = base.size(1), A = base.size(2);
  check_location1_operands(op, prev, conv_weight, dense_weight, B, T, "A", A, base_name);
  check_same_float_cpu(op, base_name, {{base_name, &base}, {"prev", &prev},
                                       {"conv_weight", &conv_weight},
                                       {"dense_weight", &dense_weight}});
  return {B, T, A, conv_weight.size(0), conv_weight.size(1)};
}

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
  m.impl("location_keys", &attnkern::location_keys_cpu);
  m.impl("location1_keys_backward", &attnkern::location1_backward_cpu);
}

TORCH_LIBRARY_IMPL(attnkern, Autograd, m) {
  m.impl("location_windows", &attnkern::windows_autograd);
  m.impl("location1_keys", &attnkern::location1_autograd);
  m.impl("location_keys", &attnkern::location_keys_autograd);
}
