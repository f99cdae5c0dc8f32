"""The attention family's drop-ins against the real toolkit modules: ESPnet ``AttForward``
/ ``AttForwardTA`` and Coqui TTS ``OriginalAttention`` in every configuration (outputs,
weights, gradients of the inputs and every parameter, strict state_dict loads both ways,
``replace_attention``), and their explicit start/step states. Skips where a toolkit is not
installed (``pip install --no-deps espnet coqui-tts==0.28.0``)."""

from __future__ import annotations

import copy
import itertools

import pytest
import toolkits_family as tk
import torch
from torch import nn

import attnkern
from attnkern.modules.coqui import _FILTER_SLOT, OriginalAttention
from attnkern.modules.forward import AttForward, AttForwardTA

ESPNET = tk.espnet_attentions()
COQUI = tk.coqui_attentions()
need_espnet = pytest.mark.skipif(ESPNET is None, reason="espnet not installed")
need_coqui = pytest.mark.skipif(COQUI is None, reason="coqui-tts not installed")

ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _close(a: torch.Tensor | None, b: torch.Tensor | None, dtype: torch.dtype,
           what: str) -> None:
    """Equal within tolerance; a missing gradient counts as zeros (a parameter whose
    gradient is analytically zero, e.g. a bias a softmax cancels)."""
    if a is None and b is None:
        return
    ref = a if a is not None else torch.zeros_like(b)  # type: ignore[arg-type]
    got = b if b is not None else torch.zeros_like(a)  # type: ignore[arg-type]
    torch.testing.assert_close(got, ref, atol=ATOL[dtype], rtol=ATOL[dtype], msg=what)


class _Holder(nn.Module):
    """A model that holds an attention module (what replace_attention walks)."""

    def __init__(self, att: nn.Module) -> None:
        super().__init__()
        self.att = att


def _replaced(orig: nn.Module, expect: type) -> nn.Module:
    model = _Holder(copy.deepcopy(orig))
    report = attnkern.replace_attention(model)
    assert [(name, new) for name, _, new in report] == [("att", expect)]
    new = model.att
    # strict loads both ways
    new.load_state_dict(orig.state_dict(), strict=True)
    back = copy.deepcopy(orig)
    back.load_state_dict(new.state_dict(), strict=True)
    assert set(new.state_dict()) == set(orig.state_dict())
    for k, v in orig.state_dict().items():
        assert new.state_dict()[k].shape == v.shape, k
    return new


# ------------------------------------------------------------------------------------
# ESPnet AttForward / AttForwardTA


def _espnet_loop(m: nn.Module, enc: torch.Tensor, lens: list[int], steps: int, ta: bool,
                 seed: int, scaling: float, dec_none_first: bool,
                 last_idx: int | None = None) -> tuple[list, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    m.reset()
    att, loss, outs = None, enc.new_zeros(()), []
    batch = enc.shape[0]
    for s in range(steps):
        dec_z = None if (dec_none_first and s == 0) else torch.randn(
            batch, m.dunits, generator=gen, dtype=enc.dtype)
        kw = {"scaling": scaling}
        if last_idx is not None:
            kw.update(last_attended_idx=last_idx + s // 2, backward_window=1, forward_window=3)
        if ta:
            out_prev = torch.randn(batch, m.mlp_ta.in_features - m.eunits - m.dunits,
                                   generator=gen, dtype=enc.dtype)
            c, w = m(enc, lens, dec_z, att, out_prev, **kw)
        else:
            c, w = m(enc, lens, dec_z, att, **kw)
        att = w
        outs.append((c, w))
        loss = loss + (c * torch.randn(c.shape, generator=gen, dtype=enc.dtype)).sum() \
            + (w * torch.randn(w.shape, generator=gen, dtype=enc.dtype)).sum()
    return outs, loss


@need_espnet
@pytest.mark.parametrize("ta", [False, True], ids=["AttForward", "AttForwardTA"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["B3-pad", "B1", "B2-scale-zfirst"])
def test_espnet_forward_attention_matches(ta: bool, dtype: torch.dtype, case: str) -> None:
    torch.manual_seed(0)
    batch, steps_t, eprojs, dunits, att_dim, chans, filts, odim = 3, 17, 12, 10, 8, 4, 3, 5
    lens = [17, 12, 9]
    if case == "B1":
        batch, lens = 1, [17]
    elif case.startswith("B2"):
        batch, lens = 2, [17, 15]
    scaling = 1.7 if "scale" in case else 1.0
    assert ESPNET is not None
    orig = (ESPNET.AttForwardTA(eprojs, dunits, att_dim, chans, filts, odim) if ta
            else ESPNET.AttForward(eprojs, dunits, att_dim, chans, filts)).to(dtype)
    new = _replaced(orig, AttForwardTA if ta else AttForward)
    enc = torch.randn(batch, steps_t, eprojs, dtype=dtype, requires_grad=True)
    results = []
    for m in (orig, new):
        outs, loss = _espnet_loop(m, enc, lens, 7, ta, 1, scaling, "zfirst" in case)
        grads = torch.autograd.grad(loss, [enc, *m.parameters()], allow_unused=True)
        results.append((outs, grads))
    for (c0, w0), (c1, w1) in zip(results[0][0], results[1][0]):
        _close(c0, c1, dtype, "context")
        _close(w0, w1, dtype, "weights")
    names = ["enc_hs_pad"] + [n for n, _ in orig.named_parameters()]
    for name, g0, g1 in zip(names, results[0][1], results[1][1]):
        _close(g0, g1, dtype, f"grad {name}")


@need_espnet
@pytest.mark.parametrize("ta", [False, True], ids=["AttForward", "AttForwardTA"])
def test_espnet_attention_constraint(ta: bool) -> None:
    """last_attended_idx (ESPnet: batch 1 only) equals ESPnet's; per item for B > 1."""
    torch.manual_seed(1)
    assert ESPNET is not None
    orig = (ESPNET.AttForwardTA(6, 5, 4, 2, 2, 3) if ta else ESPNET.AttForward(6, 5, 4, 2, 2))
    new = attnkern.from_module(orig)
    enc = torch.randn(1, 15, 6)
    with torch.no_grad():
        a, _ = _espnet_loop(orig, enc, [15], 6, ta, 3, 1.0, False, last_idx=2)
        b, _ = _espnet_loop(new, enc, [15], 6, ta, 3, 1.0, False, last_idx=2)
    for (c0, w0), (c1, w1) in zip(a, b):
        _close(c0, c1, torch.float32, "context")
        _close(w0, w1, torch.float32, "weights")
    # per item: a (B,) index tensor gives each item what a batch of one gives
    enc2 = torch.randn(2, 15, 6)
    z = torch.randn(2, 5)
    extra = (torch.randn(2, 3),) if ta else ()
    state = new.start(enc2)
    _, w, _ = new.step(z, state, *extra, last_attended_idx=torch.tensor([3, 8]))
    for b_, idx in enumerate((3, 8)):
        s1 = new.start(enc2[b_:b_ + 1])
        _, w1, _ = new.step(z[b_:b_ + 1], s1, *(e[b_:b_ + 1] for e in extra),
                            last_attended_idx=idx)
        _close(w1, w[b_:b_ + 1], torch.float32, "per-item constraint")


@pytest.mark.parametrize("ta", [False, True], ids=["AttForward", "AttForwardTA"])
def test_forward_start_step_is_the_protocol(ta: bool) -> None:
    """forward() is start + step; step mutates neither the module nor the state; reorder
    picks hypotheses; reset() starts a new utterance."""
    torch.manual_seed(2)
    m = AttForwardTA(6, 5, 4, 2, 2, 3) if ta else AttForward(6, 5, 4, 2, 2)
    enc = torch.randn(3, 9, 6)
    lens = torch.tensor([9, 7, 4])
    zs = [torch.randn(3, 5) for _ in range(4)]
    extra = [(torch.randn(3, 3),) if ta else () for _ in range(4)]
    m.reset()
    att, proto = None, []
    for z, e in zip(zs, extra):
        c, att = m(enc, lens, z, att, *e)
        proto.append((c, att))
    state = m.start(enc, lens)
    assert state.att_prev[:, 0].eq(1).all() and state.att_prev[:, 1:].eq(0).all()
    before = state.att_prev.clone()
    for (c0, w0), z, e in zip(proto, zs, extra):
        c, w, new_state = m.step(z, state, *e)
        torch.testing.assert_close(c, c0)
        torch.testing.assert_close(w, w0)
        assert torch.equal(state.att_prev, before)  # the old state is unchanged
        state, before = new_state, new_state.att_prev.clone()
    # padding gets the clamp's floor only (ESPnet's semantics), never more
    assert state.att_prev[2, 4:].max() < 1e-4
    index = torch.tensor([2, 0, 0])
    picked = state.reorder(index)
    torch.testing.assert_close(picked.att_prev, state.att_prev[index])
    assert picked.keys.shape == state.keys.shape
    m.reset()
    assert m.enc_h is None and m.pre_compute_enc_h is None and m.mask is None


def test_forward_bad_inputs() -> None:
    m = AttForward(6, 5, 4, 2, 2)
    with pytest.raises(ValueError, match="memory"):
        m.start(torch.randn(2, 9, 7))
    state = m.start(torch.randn(2, 9, 6))
    with pytest.raises(ValueError, match="dec_z"):
        m.step(torch.randn(2, 4), state)
    with pytest.raises(ValueError, match="lengths"):
        m.start(torch.randn(2, 9, 6), [9])
    ta = AttForwardTA(6, 5, 4, 2, 2, 3)
    with pytest.raises(ValueError, match="out_prev"):
        ta.step(torch.randn(2, 5), ta.start(torch.randn(2, 9, 6)))


def test_registered_names() -> None:
    names = attnkern._registry.supported()
    for base in ("espnet.nets.pytorch_backend.rnn.attentions",
                 "espnet2.legacy.nets.pytorch_backend.rnn.attentions"):
        assert f"{base}.AttForward" in names and f"{base}.AttForwardTA" in names
    assert "TTS.tts.layers.tacotron.attentions.OriginalAttention" in names


# ------------------------------------------------------------------------------------
# Coqui OriginalAttention

CONFIGS = [
    c for c in itertools.product([False, True], [0, 4], ["softmax", "sigmoid"],
                                 [False, True], [False, True], [False, True])
    if c[3] or not (c[4] or c[5])  # trans_agent / forward_attn_mask need forward_attn
]


def _cfg_id(c: tuple) -> str:
    loc, win, norm, fwd, ta, fmask = c
    return "-".join(x for x in (
        "loc" if loc else "noloc", f"win{win}", norm, "fwd" if fwd else "",
        "ta" if ta else "", "fmask" if fmask else "") if x)


def _coqui_pair(cfg: tuple, dims: tuple[int, int, int] = (10, 12, 8), kernel: int = 7,
                dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    loc, win, norm, fwd, ta, fmask = cfg
    assert COQUI is not None
    orig = COQUI.OriginalAttention(*dims, loc, 4, kernel, win, norm, fwd, ta, fmask)
    with torch.no_grad():  # a visible v bias (it matters for sigmoid)
        orig.v.linear_layer.bias.fill_(0.3)
    orig = orig.to(dtype)
    return orig, _replaced(orig, OriginalAttention)


def _coqui_loop(m: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None, steps: int,
                seed: int) -> tuple[list, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    m.init_states(inputs)
    processed = m.preprocess_inputs(inputs)
    outs, loss = [], inputs.new_zeros(())
    batch, t = inputs.shape[:2]
    for _ in range(steps):
        query = 2 * torch.randn(batch, m.query_layer.linear_layer.in_features, generator=gen,
                                dtype=inputs.dtype)
        c = m(query, inputs, processed, mask)
        w = m.attention_weights
        outs.append((c, w))
        loss = loss + (c * torch.randn(c.shape, generator=gen, dtype=inputs.dtype)).sum() \
            + (w * torch.randn(w.shape, generator=gen, dtype=inputs.dtype)).sum()
    return outs, loss


@need_coqui
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
def test_coqui_matches(cfg: tuple, training: bool) -> None:
    """B = 1 (Coqui's windowing reads item 0), padding at the end; outputs, weights, the
    attributes, and all gradients (where Coqui's own backward runs: its eval-mode
    windowing writes in place into a tensor autograd saved, so it has none there)."""
    torch.manual_seed(3)
    orig, new = _coqui_pair(cfg)
    orig.train(training)
    new.train(training)
    inputs = torch.randn(1, 19, 12, requires_grad=True)
    mask = torch.ones(1, 19, dtype=torch.bool)
    mask[:, 16:] = False
    res = []
    for m in (orig, new):
        outs, loss = _coqui_loop(m, inputs, mask, 9, 4)
        try:
            grads = torch.autograd.grad(loss, [inputs, *m.parameters()], allow_unused=True)
        except RuntimeError:
            assert m is orig and not training and cfg[1]
            grads = None
        res.append((outs, grads))
    for (c0, w0), (c1, w1) in zip(res[0][0], res[1][0]):
        assert torch.isfinite(c1).all()
        _close(c0, c1, torch.float32, "context")
        _close(w0, w1, torch.float32, "attention_weights")
    for attr in ("attention_weights_cum", "alpha", "u"):
        a, b = getattr(orig, attr, None), getattr(new, attr)
        if a is not None:
            _close(a, b, torch.float32, attr)
    if cfg[1] and not training:
        assert int(new.win_idx[0]) == orig.win_idx
    if res[0][1] is not None:
        names = ["inputs"] + [n for n, _ in orig.named_parameters()]
        for name, g0, g1 in zip(names, res[0][1], res[1][1]):
            _close(g0, g1, torch.float32, f"grad {name}")


@need_coqui
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if not c[1]], ids=_cfg_id)
def test_coqui_batch_float64(cfg: tuple) -> None:
    """B = 3 with padding (no windowing: Coqui's is item 0's), float64, train and eval.
    Coqui builds its states in the default dtype, so the original runs under a float64
    default dtype."""
    torch.manual_seed(5)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        orig, new = _coqui_pair(cfg, dtype=torch.float64)
        for training in (True, False):
            orig.train(training)
            new.train(training)
            inputs = torch.randn(3, 13, 12, requires_grad=True)
            mask = torch.arange(13)[None, :] < torch.tensor([13, 10, 6])[:, None]
            res = []
            for m in (orig, new):
                outs, loss = _coqui_loop(m, inputs, mask, 6, 7)
                grads = torch.autograd.grad(loss, [inputs, *m.parameters()], allow_unused=True)
                res.append((outs, grads))
            for (c0, w0), (c1, w1) in zip(res[0][0], res[1][0]):
                _close(c0, c1, torch.float64, "context")
                _close(w0, w1, torch.float64, "attention_weights")
            for g0, g1 in zip(res[0][1], res[1][1]):
                _close(g0, g1, torch.float64, "grad")
    finally:
        torch.set_default_dtype(old)


@need_coqui
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[1]], ids=_cfg_id)
def test_coqui_windowing_is_per_item(cfg: tuple) -> None:
    """For B > 1 each item is windowed around its own last attended position: item b of a
    batch gives what Coqui gives for that item alone (eval mode, no_grad)."""
    torch.manual_seed(6)
    orig, new = _coqui_pair(cfg)
    orig.eval()
    new.eval()
    inputs = torch.randn(3, 15, 12)
    mask = torch.arange(15)[None, :] < torch.tensor([15, 12, 9])[:, None]
    with torch.no_grad():
        batched, _ = _coqui_loop(new, inputs, mask, 7, 8)
        wins = new.win_idx.clone()
        for b in range(3):
            gen = torch.Generator().manual_seed(8)
            orig.init_states(inputs[b:b + 1])
            processed = orig.preprocess_inputs(inputs[b:b + 1])
            for s in range(7):
                query = 2 * torch.randn(3, 10, generator=gen)
                c = orig(query[b:b + 1], inputs[b:b + 1], processed, mask[b:b + 1])
                _close(c, batched[s][0][b:b + 1], torch.float32, f"context item {b} step {s}")
                _close(orig.attention_weights, batched[s][1][b:b + 1], torch.float32,
                       f"weights item {b} step {s}")
                torch.randn(3, 12, generator=gen)  # the batched loop's cotangent draws
                torch.randn(3, 15, generator=gen)
            assert int(wins[b]) == orig.win_idx


@need_coqui
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coqui_location_inference_steps_match(dtype: torch.dtype) -> None:
    """Location attention with softmax under no_grad (one C++ op a step on CPU), batched
    with padding at the end: the original's outputs and weights."""
    torch.manual_seed(11)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # Coqui's init_states makes its zeros in the default dtype
    try:
        orig, new = _coqui_pair((True, 0, "softmax", False, False, False), dtype=dtype)
        inputs = torch.randn(3, 15, 12, dtype=dtype)
        mask = torch.arange(15)[None, :] < torch.tensor([15, 11, 6])[:, None]
        with torch.no_grad():
            got, _ = _coqui_loop(new, inputs, mask, 6, 3)
            want, _ = _coqui_loop(orig, inputs, mask, 6, 3)
    finally:
        torch.set_default_dtype(old)
    for s, ((c, w), (c0, w0)) in enumerate(zip(got, want)):
        _close(c, c0, dtype, f"context step {s}")
        _close(w, w0, dtype, f"weights step {s}")


def test_coqui_sigmoid_uses_v_bias() -> None:
    """Sigmoid normalisation depends on v's bias (kept in the state_dict); softmax does
    not (its gradient there is zero)."""
    torch.manual_seed(9)
    inputs = torch.randn(2, 8, 6)
    query = torch.randn(2, 5)
    for norm, depends in (("sigmoid", True), ("softmax", False)):
        m = OriginalAttention(5, 6, 4, False, 4, 7, 0, norm, False, False, False)
        assert "v.linear_layer.bias" in m.state_dict()
        state = m.start(inputs)
        c0, _, _ = m.step(query, state)
        with torch.no_grad():
            m.v.linear_layer.bias.add_(1.0)
        c1, _, _ = m.step(query, state)
        assert (not torch.allclose(c0, c1)) == depends
        c1.sum().backward()
        grad = m.v.linear_layer.bias.grad
        assert grad is not None and (grad.abs().item() > 0) == depends


def test_coqui_protocol_and_errors() -> None:
    m = OriginalAttention(5, 6, 4, True, 4, 7, 1, "softmax", True, True, True)
    inputs = torch.randn(2, 8, 6)
    with pytest.raises(RuntimeError, match="init_states"):
        m(torch.randn(2, 5), inputs, m.preprocess_inputs(inputs), None)
    m.init_states(inputs)
    assert m.alpha is not None and torch.equal(m.alpha[:, 0], torch.ones(2))
    assert torch.equal(m.u, torch.full((2, 1), 0.5))
    assert torch.equal(m.win_idx, torch.full((2,), -1))
    m.eval()
    m(torch.randn(2, 5), inputs, m.preprocess_inputs(inputs), None)
    assert m.win_idx.dtype == torch.long and (m.win_idx >= 0).all()
    m.init_win_idx()
    assert torch.equal(m.win_idx, torch.full((2,), -1))
    with pytest.raises(ValueError, match="norm"):
        OriginalAttention(5, 6, 4, False, 4, 7, 0, "relu", False, False, False)
    with pytest.raises(ValueError, match="odd"):
        OriginalAttention(5, 6, 4, True, 4, 8, 0, "softmax", False, False, False)
    # start/step == the protocol; reorder selects hypotheses
    state = m.start(inputs)
    m.init_states(inputs)
    q = torch.randn(2, 5)
    c_proto = m(q, inputs, m.preprocess_inputs(inputs), None)
    c, w, state2 = m.step(q, state)
    torch.testing.assert_close(c, c_proto)
    torch.testing.assert_close(w, m.attention_weights)
    assert torch.equal(state.previous_weights, torch.zeros(2, 8))  # old state unchanged
    picked = state2.reorder(torch.tensor([1, 1]))
    torch.testing.assert_close(picked.alpha, state2.alpha[[1, 1]])
    torch.testing.assert_close(picked.win_idx, state2.win_idx[[1, 1]])


def test_bench_family_smoke() -> None:
    """bench/family.py --smoke runs (tiny shapes; figures not checked) and its loops agree."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "bench/family.py", "--smoke", "--threads", "1"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert any("monotonic" in r for r in rows)
    for row in rows:
        assert float(row.rstrip(" |").split("|")[-1]) < 1e-4, row


@need_coqui
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_coqui_kept_filter_follows_the_weights(grad: bool) -> None:
    """The call protocol keeps the folded location filter between calls: a ``.data`` edit
    of the conv or dense weight mid-utterance, an optimizer-style in-place update between
    utterances and a backward pass are all seen at the next call (against Coqui's own module
    given the same edits), and a copy of the module after a backward pass works. Gradients
    are compared for the utterance without a mid-utterance edit (autograd's saved tensors
    see a ``.data`` edit in the original and not in a filter folded before it)."""
    cfg = (True, 0, "softmax", False, False, False)
    orig, ours = _coqui_pair(cfg)
    inputs = torch.randn(2, 12, 12)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    gen = torch.Generator().manual_seed(5)
    edits = {0: lambda m: m.location_layer.location_conv1d.weight.data.mul_(1.5),
             2: lambda m: m.location_layer.location_dense.linear_layer.weight.data.add_(0.1)}
    for utterance in range(3):
        for m in (orig, ours):
            m.init_states(inputs)
        processed = [m.preprocess_inputs(inputs) for m in (orig, ours)]
        for s in range(4):
            q = torch.randn(2, 10, generator=gen)
            with torch.set_grad_enabled(grad):
                outs = [m(q, inputs, p, mask) for m, p in zip((orig, ours), processed)]
            _close(outs[1], outs[0], torch.float32, f"utterance {utterance} step {s}")
            _close(ours.attention_weights, orig.attention_weights, torch.float32, "weights")
            if s == 1 and utterance in edits:
                for m in (orig, ours):
                    edits[utterance](m)
        if grad:
            for m in (orig, ours):
                m.zero_grad()
            for o in outs:
                o.square().sum().backward()
            if utterance not in edits:
                for (name, a), (_, b) in zip(orig.named_parameters(), ours.named_parameters()):
                    _close(b.grad, a.grad, torch.float32, name)
            ours.init_states(inputs)  # a fresh protocol state; the kept filter has a graph
            assert _FILTER_SLOT not in copy.deepcopy(ours).__dict__  # and does not travel
        with torch.no_grad():  # an optimizer step between utterances
            for m in (orig, ours):
                m.location_layer.location_conv1d.weight.sub_(0.01)
