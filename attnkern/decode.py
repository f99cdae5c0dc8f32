"""A small Tacotron-2-style greedy decoder, written so that it exports to ONNX.

Prenet-free: an attention LSTMCell takes ``(previous frame, previous context)``, the
location-sensitive attention steps on its output, a decoder LSTMCell takes ``(attention
hidden, context)``, and two linears give the next frame and the stop gate from ``(decoder
hidden, context)``. Everything per step is explicit tensors (no module state), so the same
code is

* :meth:`TinyTacotronDecoder.decode_step`: one step, all states in and out (the
  DeepLearningExamples ``decoder_iter.onnx`` contract);
* :meth:`TinyTacotronDecoder.decode`: the greedy loop, with per-item stop (an item stops
  after its first step with ``sigmoid(gate) > threshold``) and no host sync: a finished
  item's states stay frozen via ``torch.where`` and its later frames and gates are zeros;
  the loop runs ``max_steps`` iterations and never reads a tensor's value in Python;
* :class:`WhileLoopDecoder`: the same loop as ``torch._higher_order_ops.while_loop`` over
  the flattened state, which ``torch.onnx.export(..., dynamo=True)`` turns into one ONNX
  ``Loop`` (see docs/decoders.md, "Exporting a decode loop").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .modules.location import LocationSensitiveAttention, LocationState

__all__ = ["TinyTacotronDecoder", "WhileLoopDecoder"]


class TinyTacotronDecoder(nn.Module):
    """``n_mel`` frames from ``memory`` ``(B, T, embedding_dim)``.

    States per step: ``frame`` ``(B, n_mel)``, attention RNN ``(ah, ac)`` ``(B, rnn_dim)``,
    decoder RNN ``(dh, dc)`` ``(B, decoder_dim)``, ``context`` ``(B, embedding_dim)`` and
    the attention's :class:`~attnkern.LocationState`.
    """

    def __init__(self, n_mel: int = 8, embedding_dim: int = 12, rnn_dim: int = 10,
                 decoder_dim: int = 10, attention_dim: int = 16, n_filters: int = 4,
                 kernel_size: int = 5, backend: str = "auto") -> None:
        super().__init__()
        self.n_mel, self.embedding_dim = n_mel, embedding_dim
        self.rnn_dim, self.decoder_dim = rnn_dim, decoder_dim
        self.attention_rnn = nn.LSTMCell(n_mel + embedding_dim, rnn_dim)
        self.attention = LocationSensitiveAttention(rnn_dim, embedding_dim, attention_dim,
                                                    n_filters, kernel_size, backend=backend)
        self.decoder_rnn = nn.LSTMCell(rnn_dim + embedding_dim, decoder_dim)
        self.frame_projection = nn.Linear(decoder_dim + embedding_dim, n_mel)
        self.gate_layer = nn.Linear(decoder_dim + embedding_dim, 1)

    def start(self, memory: Tensor, lengths: Tensor) -> tuple[tuple[Tensor, ...], LocationState]:
        """The zero states ``(frame, ah, ac, dh, dc, context)`` and the attention's state
        for ``memory`` ``(B, T, embedding_dim)`` with ``lengths`` ``(B,)`` valid steps."""
        if memory.dim() != 3 or memory.shape[2] != self.embedding_dim:
            raise ValueError(f"memory must be (B, T, embedding_dim={self.embedding_dim}), "
                             f"got {tuple(memory.shape)}")
        batch, steps = memory.shape[:2]
        if lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.is_complex():
            raise ValueError(f"lengths must be (B={batch},) integer, got "
                             f"{tuple(lengths.shape)} {lengths.dtype}")
        mask = torch.arange(steps, device=memory.device)[None, :] >= lengths[:, None]
        state = self.attention.start(memory, key_padding_mask=mask)
        z = memory.new_zeros
        return ((z(batch, self.n_mel), z(batch, self.rnn_dim), z(batch, self.rnn_dim),
                 z(batch, self.decoder_dim), z(batch, self.decoder_dim),
                 z(batch, self.embedding_dim)), state)

    def decode_step(self, frame: Tensor, ah: Tensor, ac: Tensor, dh: Tensor, dc: Tensor,
                    context: Tensor, state: LocationState
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                               Tensor, LocationState]:
        """One step -> ``(frame (B, n_mel), gate (B,), ah, ac, dh, dc, context, weights
        (B, T), new attention state)``."""
        ah, ac = self.attention_rnn(torch.cat((frame, context), 1), (ah, ac))
        context, weights, state = self.attention.step(ah, state)
        dh, dc = self.decoder_rnn(torch.cat((ah, context), 1), (dh, dc))
        out = torch.cat((dh, context), 1)
        return (self.frame_projection(out), self.gate_layer(out).squeeze(1), ah, ac, dh, dc,
                context, weights, state)

    def loop_body(self, step: Tensor, not_finished: Tensor, decoded: Tensor, frames: Tensor,
                  gates: Tensor, states: tuple[Tensor, ...], att: LocationState,
                  threshold: float) -> tuple[Tensor, ...]:
        """One iteration of the greedy loop on fixed-shape carried tensors: ``step`` ()
        long, ``not_finished`` ``(B,)`` bool, ``decoded`` ``(B,)`` long (steps each item
        ran), ``frames`` ``(max_steps, B, n_mel)``, ``gates`` ``(max_steps, B)`` (zeros
        after an item stops). Returns them updated, then ``states`` and ``att``'s leaves."""
        frame, gate, *new, _, new_att = self.decode_step(*states, att)  # type: ignore[call-arg, arg-type]
        keep = not_finished[:, None]
        # a finished item keeps its states (so its outputs are frozen) and writes zeros
        states = tuple(torch.where(keep, n, o) for n, o in zip((frame, *new), states))
        new_att = new_att.replace(
            previous_weights=torch.where(keep, new_att.previous_weights, att.previous_weights),
            cumulative_weights=torch.where(keep, new_att.cumulative_weights,
                                           att.cumulative_weights))
        leaves = pytree.tree_leaves(new_att)
        frames = frames.index_copy(0, step[None], torch.where(keep, frame, 0.0)[None])
        gates = gates.index_copy(0, step[None], torch.where(not_finished, gate, 0.0)[None])
        decoded = decoded + not_finished.long()
        not_finished = not_finished & (torch.sigmoid(gate) <= threshold)
        return (step + 1, not_finished, decoded, frames, gates, *states, *leaves)

    def decode(self, memory: Tensor, lengths: Tensor, max_steps: int,
               threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
        """Greedy decode: ``memory`` ``(B, T, embedding_dim)``, ``lengths`` ``(B,)`` ->
        ``(frames (B, max_steps, n_mel), gates (B, max_steps), decoded (B,) long)``; an
        item's frames after its stop step are zeros. Eager Python loop of
        :meth:`loop_body` (no host sync: it runs ``max_steps`` iterations)."""
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        carried = self._initial(memory, lengths, max_steps)
        spec = pytree.tree_structure(self.start(memory, lengths)[1])
        for _ in range(max_steps):
            carried = self._body(carried, spec, threshold)
        return carried[3].transpose(0, 1), carried[4].transpose(0, 1), carried[2]

    def _initial(self, memory: Tensor, lengths: Tensor, max_steps: int) -> tuple[Tensor, ...]:
        states, att = self.start(memory, lengths)
        batch = memory.shape[0]
        return (torch.zeros((), dtype=torch.long, device=memory.device),
                torch.ones(batch, dtype=torch.bool, device=memory.device),
                torch.zeros(batch, dtype=torch.long, device=memory.device),
                memory.new_zeros(max_steps, batch, self.n_mel),
                memory.new_zeros(max_steps, batch), *states, *pytree.tree_leaves(att))

    def _body(self, carried: tuple[Tensor, ...], spec: pytree.TreeSpec,
              threshold: float) -> tuple[Tensor, ...]:
        step, nf, decoded, frames, gates = carried[:5]
        states, leaves = carried[5:11], carried[11:]
        att = pytree.tree_unflatten(list(leaves), spec)
        return self.loop_body(step, nf, decoded, frames, gates, tuple(states), att, threshold)


class WhileLoopDecoder(nn.Module):
    """``decoder.decode`` as ``torch._higher_order_ops.while_loop`` (for ONNX export):
    ``forward(memory (B, T, embedding_dim), lengths (B,) long)`` -> ``(frames (B,
    max_steps, n_mel), gates (B, max_steps), decoded (B,))``. The loop ends at
    ``max_steps`` or when every item has stopped."""

    def __init__(self, decoder: TinyTacotronDecoder, max_steps: int,
                 threshold: float = 0.5) -> None:
        super().__init__()
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        self.decoder, self.max_steps, self.threshold = decoder, max_steps, threshold

    def forward(self, memory: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        from torch._higher_order_ops.while_loop import while_loop

        dec, max_steps = self.decoder, self.max_steps
        spec = pytree.tree_structure(dec.start(memory, lengths)[1])
        # the carried values must not alias each other (start's two zero weights are one)
        carried = tuple(t.clone() for t in dec._initial(memory, lengths, max_steps))

        def cond(step: Tensor, not_finished: Tensor, *rest: Tensor) -> Tensor:
            return (step < max_steps) & not_finished.any()

        def body(*c: Tensor) -> tuple[Tensor, ...]:
            return tuple(t.clone() for t in dec._body(c, spec, self.threshold))

        out = while_loop(cond, body, carried)
        return out[3].transpose(0, 1), out[4].transpose(0, 1), out[2]
