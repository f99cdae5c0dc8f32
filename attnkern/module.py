"""``AdditiveAttention``: the drop-in Bahdanau attention layer."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._validation import check_backend
from .functional import additive_attention

__all__ = ["AdditiveAttention"]


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau / feedforward / concat / MLP) attention.

    ``score(s_i, h_j) = v . tanh(W_q s_i + b + W_k h_j)``, softmax over the usable keys,
    context = weighted average of the values. The middle is one fused kernel
    (:func:`attnkern.additive_attention`); the projections are plain GEMMs.

    Args:
        query_dim: size of the decoder state ``s`` (the query).
        key_dim: size of the encoder states ``h`` (the keys).
        hidden_dim: size ``H`` of the attention MLP.
        bias: learn the bias ``b`` inside the tanh (on the query projection).
        normalize: weight-normalised score vector ``g * v / ||v||`` with a learned scalar
            ``g`` (as TF-Addons ``BahdanauAttention(normalize=True)``); implies the bias.
        backend: passed to :func:`attnkern.additive_attention`.

    Shapes:
        query ``(B, Tq, query_dim)`` or ``(B, query_dim)``; keys ``(B, Tk, key_dim)``;
        values ``(B, Tk, Dv)`` (default: the keys); context ``(B, Tq, Dv)`` or ``(B, Dv)``;
        weights ``(B, Tq, Tk)`` or ``(B, Tk)``.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden_dim: int,
        *,
        bias: bool = True,
        normalize: bool = False,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("query_dim", query_dim), ("key_dim", key_dim),
                          ("hidden_dim", hidden_dim)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        factory = {"device": device, "dtype": dtype}
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.normalize = normalize
        self.backend = check_backend(backend)
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=bias or normalize, **factory)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False, **factory)
        self.v = nn.Parameter(torch.empty(hidden_dim, device=device, dtype=dtype))
        if normalize:
            self.g = nn.Parameter(torch.empty((), device=device, dtype=dtype))
        else:
            self.register_parameter("g", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Linear-style init for the projections and ``v``; ``g = 1/sqrt(H)``, bias 0."""
        self.query_proj.reset_parameters()
        self.key_proj.reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_dim)
        nn.init.uniform_(self.v, -bound, bound)
        if self.g is not None:
            nn.init.constant_(self.g, bound)
            if self.query_proj.bias is not None:
                nn.init.zeros_(self.query_proj.bias)

    def score_vector(self) -> Tensor:
        """The score vector ``v`` of shape ``(H,)`` as used by the kernel."""
        if self.g is None:
            return self.v
        return self.g * self.v / self.v.norm()

    def project_keys(self, keys: Tensor) -> Tensor:
        """``(B, Tk, key_dim) -> (B, Tk, hidden_dim)``: do this once per sequence."""
        self._check_input("keys", keys, (3,), self.key_dim, "(B, Tk, key_dim={})")
        return self.key_proj(keys)

    def _check_input(self, name: str, x: object, ranks: tuple[int, ...], dim: int,
                     form: str) -> None:
        """Fail before nn.Linear does, with the argument's name and what was seen."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in ranks or x.shape[-1] != dim:
            raise ValueError(f"{name} must be {form.format(dim)}, got shape {tuple(x.shape)}")
        param = self.key_proj.weight
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
        if x.device != param.device:
            raise ValueError(
                f"{name} is on {x.device}, the layer's parameters are on {param.device}"
            )
        if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"{name} has dtype {x.dtype}, the layer's parameters are {param.dtype} "
                "(convert the layer with .to(dtype) or use torch.autocast)"
            )

    def forward(
        self,
        query: Tensor,
        keys: Tensor | None,
        values: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        key_lengths: Tensor | None = None,
        causal: bool = False,
        projected_keys: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Return ``(context, weights)``; weights is None unless ``need_weights``.

        ``projected_keys`` (from :meth:`project_keys`) skips the key projection, which is
        what a step-wise decoder wants; ``keys`` may then be None if ``values`` is given.
        """
        self._check_input("query", query, (2, 3), self.query_dim,
                          "(B, Tq, query_dim={0}) or (B, query_dim={0})")
        if projected_keys is None:
            if keys is None:
                raise ValueError("keys is required unless projected_keys is given")
            projected_keys = self.project_keys(keys)
        if values is None:
            if keys is None:
                raise ValueError("values (or keys, its default) is required")
            values = keys
        result = additive_attention(
            self.query_proj(query), projected_keys, values, self.score_vector(),
            key_padding_mask=key_padding_mask, key_lengths=key_lengths, causal=causal,
            return_weights=need_weights, backend=self.backend,
        )
        if need_weights:
            context, weights = result
            return context, weights
        assert isinstance(result, Tensor)
        return result, None

    def extra_repr(self) -> str:
        return (
            f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}, "
            f"bias={self.query_proj.bias is not None}, normalize={self.normalize}, "
            f"backend={self.backend!r}"
        )
