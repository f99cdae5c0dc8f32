// The op contract of the attnkern namespace: every schema, written once, here. The kernels
// are registered elsewhere per dispatch key (TORCH_LIBRARY_IMPL: CPU in ops.cpp and
// location.cpp, Autograd in autograd.cpp and location.cpp, CompositeImplicitAutograd in
// steps.cpp); attnkern/ops.py adds the CUDA (Triton) kernels and the fake kernels. What the
// arguments and outputs mean is documented in attnkern/ops.py's docstring.
//
// Without this extension there are no attnkern ops at all: the package then runs the
// PyTorch reference (attnkern/functional.py's resolve_backend).
#include <torch/library.h>

TORCH_LIBRARY(attnkern, m) {
  // The fused forward. query (B, Tq, H) or (B, H) for one decoder step, key (B, Tk, H),
  // value (B, Tk, Dv), weight (H,) -> out, lse, weights (an empty (0,) tensor unless
  // return_weights). key_exp = exp(2 * key), prepared once per sequence (attnkern.prepare_keys).
  m.def(
      "fwd(Tensor query, Tensor key, Tensor value, Tensor weight, Tensor? key_padding_mask, "
      "Tensor? key_lengths, bool causal, bool return_weights, Tensor? key_exp=None) "
      "-> (Tensor, Tensor, Tensor)");
  // Its backward: delta = rowsum(out * grad_out) (+ rowsum(weights * grad_weights)) is
  // computed by the kernel from `out` (and `weights`, needed when grad_weights is given).
  // value_grad=False: grad_value is an empty (0,) tensor and no value-gradient pass runs.
  m.def(
      "bwd(Tensor grad_out, Tensor? grad_weights, Tensor query, Tensor key, Tensor value, "
      "Tensor weight, Tensor out, Tensor lse, Tensor? key_padding_mask, Tensor? key_lengths, "
      "bool causal, Tensor? key_exp=None, Tensor? weights=None, bool value_grad=True) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Fused energies e = weight . tanh(query_i + key_j), (B, Tq, Tk) or (B, Tk) for a 2-D
  // query, -inf where a key is masked (csrc/kernels/scores.cpp); key_exp as for fwd. Its
  // backward from grad (e's shape; masked entries ignored) -> (grad_query, grad_key,
  // grad_weight).
  m.def(
      "scores(Tensor query, Tensor key, Tensor weight, Tensor? key_padding_mask, "
      "Tensor? key_lengths, bool causal, Tensor? key_exp=None) -> Tensor");
  m.def(
      "scores_backward(Tensor grad, Tensor query, Tensor key, Tensor weight, "
      "Tensor? key_padding_mask, Tensor? key_lengths, bool causal, Tensor? key_exp=None) "
      "-> (Tensor, Tensor, Tensor)");
  // The location layer's windows (csrc/location.cpp): im2col of a 1-D convolution with
  // each channel's taps zero-padded to `taps`, (B, C, T) -> (B * T, C * taps), and its
  // adjoint.
  m.def("location_windows(Tensor x, int kernel, int pad, int taps) -> Tensor");
  m.def(
      "location_windows_backward(Tensor grad, int[] x_size, int kernel, int pad, int taps) "
      "-> Tensor");
  // The location keys (csrc/location.cpp): base (B, T, A) + windows(x (B, C, T)) @ filter^T
  // (A, C * taps), the term added only up to each batch's end of usable keys (key_lengths
  // and the mask's padded tail; past it the keys are base): differentiable.
  m.def(
      "location_keys(Tensor base, Tensor x, Tensor filter, Tensor? key_padding_mask, "
      "Tensor? key_lengths, int kernel, int pad) -> Tensor");
  // The one-channel location term (csrc/location.cpp): base + dense(conv(prev)) with an odd
  // number of taps K = 2P + 1 and P zeros each side; base (B, T, A), prev (B, T),
  // conv_weight (C, K), dense_weight (A, C). Its backward's grad_prev is (0,) unless
  // prev_grad; grad_base is the incoming grad itself.
  m.def("location1_keys(Tensor base, Tensor prev, Tensor conv_weight, Tensor dense_weight) "
        "-> Tensor");
  m.def("location1_keys_backward(Tensor grad, Tensor prev, Tensor conv_weight, "
        "Tensor dense_weight, bool prev_grad) -> (Tensor, Tensor, Tensor)");
  // One inference step of location-sensitive attention (ops.cpp): keys = processed_memory
  // (B, T, A) + windows(attention_weights_cat (B, C, T), kernel, pad) @ location_filter^T
  // (A, C * taps), then fwd's step on them with query (B, A), value memory (B, T, Dv) and
  // weight (A,) -> (context (B, Dv), weights (B, T)). No autograd (inputs requiring grad
  // under grad mode raise).
  m.def(
      "location_attention(Tensor query, Tensor processed_memory, Tensor attention_weights_cat, "
      "Tensor location_filter, Tensor memory, Tensor weight, Tensor? key_padding_mask, "
      "Tensor? key_lengths, int kernel, int pad) -> (Tensor, Tensor)");
  // The same with the one-channel location term (ops.cpp; location1_keys's): keys = base
  // (B, T, A) + dense_weight (A, C) . conv(prev (B, T), conv_weight (C, K)), K odd.
  m.def(
      "location1_attention(Tensor query, Tensor base, Tensor prev, Tensor conv_weight, "
      "Tensor dense_weight, Tensor memory, Tensor weight, Tensor? key_padding_mask, "
      "Tensor? key_lengths) -> (Tensor, Tensor)");
  // Weight-gradient stores of step-invariant operands (csrc/steps.cpp).
  m.def("wgrad_store(Tensor operand, bool linear) -> Tensor");
  m.def("wgrad_record(Tensor y, Tensor a, Tensor token) -> Tensor");
  m.def("wgrad_record_linear(Tensor x, Tensor weight, Tensor weight_t, Tensor token) -> Tensor");
  // y = x @ weight^T for an inference step's few rows of x (M, K), weight (N, K) (an
  // nn.Linear's), no autograd: inputs requiring grad under grad mode raise (csrc/steps.cpp,
  // kernels/rows_linear.cpp; the guard in csrc/autograd.cpp).
  m.def("rows_linear(Tensor x, Tensor weight) -> Tensor");
  // The call protocols' check that a kept decoding state still matches (csrc/steps.cpp).
  m.def("same_bytes(Tensor[] a, Tensor[] b) -> bool");
}
