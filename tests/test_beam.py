"""Beam search on shared keys: ``state.reorder(index)`` keeps the key side of a content-based
state (keys, their prepared form, values, mask, lengths) at the ``B`` source rows and maps
the ``B * beam`` hypotheses to them (``state.rows``); a grouped layout runs as one call with
the beam as query rows, any other selection gathers.

Judged against a reference beam search whose state holds copied keys (the memory tiled per
beam, OpenNMT-py's way): the same hypotheses and scores, the same gradients, and no
key-side tensor that grows with the beam. OpenNMT-py's real ``GlobalAttention`` (where
installed) on its tiled memory bank is the reference for the OpenNMT drop-in.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnkern
from attnkern import ops
from attnkern.modules._family import beam_groups

pytestmark = pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")

B, T, BEAM, VOCAB, STEPS = 3, 9, 4, 11, 6
LENGTHS = torch.tensor([9, 5, 2])
QD, KD, AD, HID = 7, 6, 8, 10


class _Toy(nn.Module):
    """A tiny attentional decoder: GRU cell, attention, output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.att = attnkern.AdditiveAttention(QD, KD, AD)
        self.emb = nn.Embedding(VOCAB, HID)
        self.cell = nn.GRUCell(HID + KD, QD)
        self.out = nn.Linear(QD + KD, VOCAB)

    def step(self, tok, h, ctx, state):
        h = self.cell(torch.cat([self.emb(tok), ctx], -1), h)
        ctx, _, state = self.att.step(h, state)
        return torch.log_softmax(self.out(torch.cat([h, ctx], -1)), -1), h, ctx, state


def _beam_search(model: _Toy, memory: torch.Tensor, shared: bool):
    """A plain beam search (length-unnormalised scores); shared: one state at the B source
    rows, reordered; else the memory tiled per beam and every field copied per step."""
    n = B * BEAM
    expand = torch.arange(B).repeat_interleave(BEAM)
    if shared:
        state = model.att.start(memory, key_lengths=LENGTHS).reorder(expand)
    else:
        state = model.att.start(memory[expand], key_lengths=LENGTHS[expand])
    h = torch.zeros(n, QD)
    ctx = torch.zeros(n, KD)
    tok = torch.zeros(n, dtype=torch.long)
    score = torch.full((B, BEAM), float("-inf"))
    score[:, 0] = 0  # one live hypothesis per source at the start
    score = score.view(-1)
    hyps = torch.zeros(n, 0, dtype=torch.long)
    states = [state]
    for _ in range(STEPS):
        logp, h, ctx, state = model.step(tok, h, ctx, state)
        total = (score.unsqueeze(1) + logp).view(B, BEAM * VOCAB)
        score, flat = total.topk(BEAM, dim=1)
        src = torch.div(flat, VOCAB, rounding_mode="floor")
        index = (torch.arange(B).unsqueeze(1) * BEAM + src).view(-1)
        tok = (flat % VOCAB).view(-1)
        score = score.view(-1)
        hyps = torch.cat([hyps[index], tok.unsqueeze(1)], 1)
        h, ctx = h[index], ctx[index]
        state = state.reorder(index)
        states.append(state)
    return hyps, score, states


def test_beam_search_on_shared_keys_equals_copied_keys():
    torch.manual_seed(0)
    model = _Toy()
    memory = torch.randn(B, T, KD)
    with torch.no_grad():
        h1, s1, states = _beam_search(model, memory, shared=True)
        h2, s2, _ = _beam_search(model, memory, shared=False)
    assert torch.equal(h1, h2)
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)
    # no key-side copy: every reordered state holds the start's tensors, B rows each
    first = states[0]
    for st in states:
        for name in ("projected_keys", "values", "keys_exp", "key_lengths"):
            a, b = getattr(st, name), getattr(first, name)
            assert a is b and a.shape[0] == B, name
        assert st.rows.shape == (B * BEAM,)
        assert beam_groups(st.rows, B) == BEAM  # within-source picks keep the grouped layout


def test_shared_keys_gradients_equal_copied_keys():
    """The grouped call's gradients (keys, values, parameters) sum over the hypotheses of
    each source as the copied keys' do."""
    torch.manual_seed(1)
    layer = attnkern.AdditiveAttention(QD, KD, AD)
    keys = torch.randn(B, T, KD, requires_grad=True)
    values = torch.randn(B, T, 5, requires_grad=True)
    query = torch.randn(B * BEAM, QD, requires_grad=True)
    expand = torch.arange(B).repeat_interleave(BEAM)
    grads = []
    for shared in (True, False):
        if shared:
            state = layer.start(keys, values, key_lengths=LENGTHS).reorder(expand)
        else:
            state = layer.start(keys[expand], values[expand], key_lengths=LENGTHS[expand])
        c, w, _ = layer.step(query, state)
        g = torch.Generator().manual_seed(2)
        loss = (c * torch.randn(c.shape, generator=g)).sum() + \
            (w * torch.randn(w.shape, generator=g)).sum()
        grads.append(torch.autograd.grad(loss, [keys, values, query, *layer.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index", [[2, 0, 1], [1, 1, 0, 2, 2], [0, 1, 2, 0, 1, 2]],
                         ids=["permuted", "uneven", "interleaved"])
def test_any_selection_gathers(index):
    """A selection that is not the grouped layout (pruned or interleaved hypotheses) is
    still right: the key side is gathered for it."""
    torch.manual_seed(3)
    layer = attnkern.AdditiveAttention(QD, KD, AD)
    keys = torch.randn(B, T, KD)
    idx = torch.tensor(index)
    query = torch.randn(len(index), QD)
    state = layer.start(keys, key_lengths=LENGTHS).reorder(idx)
    assert beam_groups(state.rows, B) == 0 or index == [0, 1, 2]
    c, w, _ = layer.step(query, state)
    c2, w2, _ = layer.step(query, layer.start(keys[idx], key_lengths=LENGTHS[idx]))
    torch.testing.assert_close(c, c2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w, w2, rtol=1e-5, atol=1e-5)


def test_reordered_state_bad_query_names_it():
    layer = attnkern.AdditiveAttention(QD, KD, AD)
    state = layer.start(torch.randn(B, T, KD)).reorder(torch.arange(B).repeat_interleave(2))
    with pytest.raises(ValueError, match="rows"):
        layer.step(torch.randn(B, QD), state)  # 3 rows for 6 hypotheses
    with pytest.raises(ValueError, match="one step"):
        layer.step(torch.randn(2 * B, 2, QD), state)


def test_tutorial_bahdanau_reordered():
    torch.manual_seed(4)
    layer = attnkern.BahdanauAttention(KD)
    keys = torch.randn(B, T, KD)
    expand = torch.arange(B).repeat_interleave(BEAM)
    q = torch.randn(B * BEAM, 1, KD)
    c, w, _ = layer.step(q, layer.start(keys).reorder(expand))
    c2, w2, _ = layer.step(q, layer.start(keys[expand]))
    assert c.shape == (B * BEAM, 1, KD) and w.shape == (B * BEAM, 1, T)
    torch.testing.assert_close(c, c2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w, w2, rtol=1e-5, atol=1e-5)


def test_opennmt_beam_on_shared_memory_equals_its_tiled_memory_bank():
    """OpenNMT-py's beam search tiles the memory bank per beam (``tile``) and calls
    GlobalAttention on it each step; the drop-in's reordered state keeps it at B rows."""
    toolkits = pytest.importorskip("toolkits")
    try:
        mod = toolkits.opennmt_global_attention()
    except BaseException as e:  # pytest.skip's exception: not installed here
        if isinstance(e, KeyboardInterrupt):
            raise
        pytest.skip(str(e))
    torch.manual_seed(5)
    d = 8
    orig = mod.GlobalAttention(d, attn_type="mlp")
    ours = attnkern.from_module(orig)
    enc = torch.randn(B, T, d)
    expand = torch.arange(B).repeat_interleave(BEAM)
    state = ours.start(enc, LENGTHS).reorder(expand)
    tiled, tiled_len = enc[expand], LENGTHS[expand]
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for _ in range(4):
            src = torch.randn(B * BEAM, d, generator=g)
            want_h, want_a = orig(src, tiled, src_len=tiled_len)
            got_h, got_a, state = ours.step(src, state)
            torch.testing.assert_close(got_h, want_h, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got_a, want_a, rtol=1e-5, atol=1e-5)
            pick = torch.randint(0, BEAM, (B, BEAM), generator=g)
            index = (torch.arange(B).unsqueeze(1) * BEAM + pick).view(-1)
            state = state.reorder(index)  # OpenNMT reorders its decoder state, not the bank
    assert state.memory is enc and state.keys.shape[0] == B
