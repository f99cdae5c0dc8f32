// The glue's input checks that more than one op makes (ops.cpp's attention ops, location.cpp's
// location ops): one wording for each. Shapes raise ValueError, dtypes TypeError
// (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), as the Python checks do.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

namespace attnkern {

bool is_float(const at::Tensor& t);  // float16, bfloat16, float32 or float64

// Shapes and dtypes spelled as Python spells them ("(2, 3)", "(4,)", "torch.float32"), so
// that these messages read word for word as the Triton op's and the fake kernels' (the one
// Python check in attnkern/_validation.py: check_op_inputs, check_op_rows).
std::string shape(at::IntArrayRef sizes);
std::string dtype_name(at::ScalarType t);

// key_padding_mask (B, Tk) bool (True = padding) and key_lengths (B,) int64 in [0, Tk], each
// optional, on `device`. `key_name` and `key_sizes`: the tensor whose Tk it is, for the range
// message ("key shape (2, 9, 8)").
void check_key_masks(const char* op, const std::optional<at::Tensor>& mask,
                     const std::optional<at::Tensor>& lengths, int64_t B, int64_t Tk,
                     const at::Device& device, const char* key_name, at::IntArrayRef key_sizes);

// A location term's geometry: x (B, C, T) with C >= 1 (`x_name`; `of` says whose B, T),
// kernel >= 1 with pad in [0, kernel), filter (A, C * taps) with taps >= kernel (`filter_name`,
// `a_name` the name of A). Returns taps.
int64_t check_location_geometry(const char* op, const char* x_name, const at::Tensor& x,
                                const char* filter_name, const at::Tensor& filter, int64_t B,
                                int64_t T, const char* a_name, int64_t A, const char* of,
                                int64_t kernel, int64_t pad);

// The one-channel term's operands: prev (B, T), conv_weight (C, K) with K odd, dense_weight
// (A, C) (`a_name` the name of A; `of` says whose B, T).
void check_location1_operands(const char* op, const at::Tensor& prev,
                              const at::Tensor& conv_weight, const at::Tensor& dense_weight,
                              int64_t B, int64_t T, const char* a_name, int64_t A,
                              const char* of);

}  // namespace attnkern
