"""``AdditiveAttention``: the drop-in Bahdanau attention layer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._steps import StepCache, _eager, forget_on_backward, plain
from .._validation import check_backend
from ..functional import PreparedKeys, additive_attention, prepare_keys

__all__ = ["AdditiveAttention"]


def _state(source: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    return source.state_dict() if isinstance(source, nn.Module) else source


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

    def project_keys(self, keys: Tensor) -> PreparedKeys:
        """Project and prepare the keys once per sequence: ``(B, Tk, key_dim)`` ->
        :class:`attnkern.PreparedKeys` (``.key`` is the ``(B, Tk, hidden_dim)`` projection,
        through which gradients reach ``keys`` and ``key_proj``). Pass it as
        ``projected_keys=`` to every decoder step."""
        self._check_input("keys", keys, (3,), self.key_dim, "(B, Tk, key_dim={})")
        return prepare_keys(self.key_proj(keys))

    @classmethod
    def from_bahdanau_tutorial(cls, source: nn.Module | Mapping[str, Tensor],
                               **kwargs: Any) -> AdditiveAttention:
        """Load the PyTorch seq2seq tutorial's ``BahdanauAttention`` (``Wa``, ``Ua``, ``Va``).

        ``Va(tanh(Wa(q) + Ua(k)))``: both biases land in the query projection (they add
        inside the tanh), ``v = Va.weight[0]``, and ``Va.bias`` is dropped (softmax cancels a
        constant score). Use it as ``layer(query, keys, need_weights=True)`` (values default
        to the keys, as in the tutorial's ``bmm(weights, keys)``). ``source`` is the module
        or its state_dict; ``kwargs`` go to the constructor (``backend=``, ``device=``...).
        """
        sd = _state(source)
        wa, ua = sd["Wa.weight"], sd["Ua.weight"]
        layer = cls(wa.shape[1], ua.shape[1], wa.shape[0], bias=True,
                    **{"device": wa.device, "dtype": wa.dtype, **kwargs})
        with torch.no_grad():
            layer.query_proj.weight.copy_(wa)
            layer.query_proj.bias.copy_(sd["Wa.bias"] + sd["Ua.bias"])
            layer.key_proj.weight.copy_(ua)
            layer.v.copy_(sd["Va.weight"].reshape(-1))
        return layer

    @classmethod
    def from_opennmt_mlp(cls, source: nn.Module | Mapping[str, Tensor],
                         **kwargs: Any) -> AdditiveAttention:
        """Load OpenNMT-py's ``GlobalAttention(dim, attn_type="mlp")`` score parameters.

        ``linear_query`` (with bias) -> ``query_proj``, ``linear_context`` -> ``key_proj``,
        ``v.weight[0]`` -> ``v``. The layer returns OpenNMT's context ``c`` and alignment;
        its output layer ``linear_out(cat([c, source]))`` stays the caller's (as does
        ``coverage``, which this does not support). ``source`` is the module or its
        state_dict; ``kwargs`` go to the constructor.
        """
        sd = _state(source)
        wq, wc = sd["linear_query.weight"], sd["linear_context.weight"]
        layer = cls(wq.shape[1], wc.shape[1], wq.shape[0], bias=True,
                    **{"device": wq.device, "dtype": wq.dtype, **kwargs})
        with torch.no_grad():
            layer.query_proj.weight.copy_(wq)
            layer.query_proj.bias.copy_(sd["linear_query.bias"])
            layer.key_proj.weight.copy_(wc)
            layer.v.copy_(sd["v.weight"].reshape(-1))
        return layer

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any) -> None:
        # Accept v stored as an nn.Linear(H, 1).weight, (1, H), as the clients keep it.
        v = state_dict.get(prefix + "v")
        if isinstance(v, Tensor) and v.dim() == 2 and v.shape[0] == 1:
            state_dict[prefix + "v"] = v.reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args)

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
        projected_keys: PreparedKeys | Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Return ``(context, weights)``; weights is None unless ``need_weights``.

        ``projected_keys`` (what :meth:`project_keys` returns, or a plain ``(B, Tk,
        hidden_dim)`` tensor) skips the key projection and, prepared, the per-sequence
        key-side work: what a step-wise decoder wants; ``keys`` may then be None if
        ``values`` is given.
        """
        self._check_input("query", query, (2, 3), self.query_dim,
                          "(B, Tq, query_dim={0}) or (B, query_dim={0})")
        if projected_keys is None:
            if keys is None:
                raise ValueError("keys is required unless projected_keys is given")
            self._check_input("keys", keys, (3,), self.key_dim, "(B, Tk, key_dim={})")
            projected_keys = self._projected(keys)
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

    def _projected(self, keys: Tensor) -> Tensor | PreparedKeys:
        """``key_proj(keys)`` for a call without ``projected_keys``.

        A decoder that passes the same ``keys`` tensor at every step (``layer(query,
        keys)``, as the tutorial's module is called) gets the same projection back while
        ``keys`` and ``key_proj`` are unchanged and no backward pass has reached it: its
        keys are projected once per sequence, and prepared (:func:`prepare_keys`) from the
        second call on. Eager mode only, and not with hooks on ``key_proj``.
        """
        proj = self.key_proj
        if not (_eager() and plain(proj)):
            return proj(keys)
        cache = self.__dict__.get("_key_cache")
        if cache is None:  # also for modules pickled before this attribute existed
            cache = self.__dict__["_key_cache"] = StepCache()
        tensors, grad = (keys, proj.weight), torch.is_grad_enabled()
        projected = cache.lookup(tensors, grad)
        if projected is None:
            projected = cache.store(tensors, proj(keys), grad)
            forget_on_backward(projected, cache)
        elif type(projected) is not PreparedKeys:  # used a second time: prepare it once
            projected = cache.store(tensors, prepare_keys(projected), grad)
        return projected

    def extra_repr(self) -> str:
        return (
            f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}, "
            f"bias={self.query_proj.bias is not None}, normalize={self.normalize}, "
            f"backend={self.backend!r}"
        )
