// See checks.h.
#include "checks.h"

#include <algorithm>

namespace attnkern {

using at::Tensor;

bool is_float(const Tensor& t) {
  auto s = t.scalar_type();
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

std::string shape(at::IntArrayRef sizes) {
  std::string s = "(";
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(sizes[i]);
  }
  return s + (sizes.size() == 1 ? ",)" : ")");
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(t);
  }
}

void check_key_masks(const char* op, const std::optional<Tensor>& mask,
                     const std::optional<Tensor>& lengths, int64_t B, int64_t Tk,
                     const at::Device& device, const char* key_name,
                     at::IntArrayRef key_sizes) {
  if (mask.has_value()) {
    const Tensor& m = *mask;
    TORCH_CHECK_TYPE(m.scalar_type() == at::kBool, op,
                     ": key_padding_mask must be a bool tensor (True = padding), got ",
                     dtype_name(m.scalar_type()), " of shape ", shape(m.sizes()));
    TORCH_CHECK_VALUE(m.dim() == 2 && m.size(0) == B && m.size(1) == Tk, op,
                      ": key_padding_mask must be (B, Tk) = (", B, ", ", Tk, "), got shape ",
                      shape(m.sizes()));
    TORCH_CHECK_VALUE(m.device() == device, op, ": key_padding_mask is on ", m.device(),
                      ", the inputs are on ", device, " (key_padding_mask shape ",
                      shape(m.sizes()), ")");
  }
  if (lengths.has_value()) {
    const Tensor& l = *lengths;
    TORCH_CHECK_TYPE(l.scalar_type() == at::kLong, op,
                     ": key_lengths must be an int64 tensor, got ", dtype_name(l.scalar_type()),
                     " of shape ", shape(l.sizes()));
    TORCH_CHECK_VALUE(l.dim() == 1 && l.size(0) == B, op, ": key_lengths must be (B,) = (", B,
                      ",), got shape ", shape(l.sizes()));
    TORCH_CHECK_VALUE(l.device() == device, op, ": key_lengths is on ", l.device(),
                      ", the inputs are on ", device, " (key_lengths shape ", shape(l.sizes()),
                      ")");
    if (B > 0) {
      const Tensor lc = l.contiguous();
      const int64_t* p = lc.const_data_ptr<int64_t>();
      const auto [lo, hi] = std::minmax_element(p, p + B);
      TORCH_CHECK_VALUE(*lo >= 0 && *hi <= Tk, op, ": key_lengths must lie in [0, Tk=", Tk,
                        "] (", key_name, " shape ", shape(key_sizes),
                        "), got values in [", *lo, ", ", *hi, "]");
    }
  }
}

int64_t check_location_geometry(const char* op, const char* x_name, const Tensor& x,
                                const char* filter_name, const Tensor& filter, int64_t B,
                                int64_t T, const char* a_name, int64_t A, const char* of,
                                int64_t kernel, int64_t pad) {
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(0) == B && x.size(1) >= 1 && x.size(2) == T, op, ": ",
                    x_name, " must be (B, C, T) = (", B, ", C >= 1, ", T, ") (B, T of ", of,
                    "), got shape ", shape(x.sizes()));
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(kernel >= 1 && pad >= 0 && pad < kernel, op,
                    ": kernel must be >= 1 and pad in [0, kernel), got kernel ", kernel,
                    ", pad ", pad);
  TORCH_CHECK_VALUE(filter.dim() == 2 && filter.size(0) == A && filter.size(1) % C == 0 &&
                        filter.size(1) / C >= kernel,
                    op, ": ", filter_name, " must be (", a_name, ", C * taps) = (", A, ", ", C,
                    " * taps) with taps >= kernel = ", kernel,
                    " (fold_location_filter), got shape ", shape(filter.sizes()));
  return filter.size(1) / C;
}

void check_location1_operands(const char* op, const Tensor& prev, const Tensor& conv_weight,
                              const Tensor& dense_weight, int64_t B, int64_t T,
                              const char* a_name, int64_t A, const char* of) {
  TORCH_CHECK_VALUE(prev.dim() == 2 && prev.size(0) == B && prev.size(1) == T, op,
                    ": prev must be (B, T) = (", B, ", ", T, ") (B, T of ", of,
                    "), got shape ", shape(prev.sizes()));
  TORCH_CHECK_VALUE(conv_weight.dim() == 2 && conv_weight.size(1) % 2 == 1, op,
                    ": conv_weight must be (C, K) with an odd number of taps K = 2P + 1, got "
                    "shape ", shape(conv_weight.sizes()));
  TORCH_CHECK_VALUE(dense_weight.dim() == 2 && dense_weight.size(0) == A &&
                        dense_weight.size(1) == conv_weight.size(0),
                    op, ": dense_weight must be (", a_name, ", C) = (", A, ", ",
                    conv_weight.size(0), ") (C of conv_weight), got shape ",
                    shape(dense_weight.sizes()));
}

}  // namespace attnkern
