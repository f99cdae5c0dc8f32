"""The toolkit drop-ins against the real toolkits' modules (ESPnet, SpeechBrain, OpenNMT-py).

Each test builds the toolkit's own module (seeded random init), converts it with
``attnkern.from_module`` / ``attnkern.replace_attention``, and runs both through the same
multi-step decoder loop with the toolkit's own protocol (ESPnet: ``reset()`` and
``att_prev`` fed back; SpeechBrain: ``reset()``, ``prev_attn`` kept inside; two utterances
with different padded lengths), comparing every step's outputs and weights and the
gradients of the inputs and of every parameter, in float32 (1e-5) and float64. Then the
toolkits' own decoders (ESPnet's RNN ``Decoder``, SpeechBrain's ``AttentionalRNNDecoder``)
with their attention replaced. Skipped where a toolkit is not installed
(``scripts/install_toolkits.sh``).
"""

from __future__ import annotations

import copy

import pytest
import toolkits
import torch
from torch import nn

import attnkern
import attnkern._registry
from attnkern.modules import espnet as ak_espnet
from attnkern.modules import opennmt as ak_opennmt
from attnkern.modules import speechbrain as ak_speechbrain

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-11)}
B, T, E, D, A = 3, 23, 12, 10, 8
LENGTHS = ([23, 15, 6], [17, 17, 9])  # two utterances (T_max = max length each)
STEPS = 6

ESPNET = {
    "AttAdd": (E, D, A),
    "AttLoc": (E, D, A, 4, 5),
    "AttCov": (E, D, A),
    "AttCovLoc": (E, D, A, 4, 5),
    "AttLocRec": (E, D, A, 4, 3),
    "AttMultiHeadAdd": (E, D, 3, A, 7),
}


def _close(a, b, dtype, what):
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def _compare(orig: nn.Module, ours: nn.Module, run, dtype):
    """run(module) -> list of outputs, after which the loss's gradients are read."""
    results = []
    for m in (orig, ours):
        torch.manual_seed(7)
        outs, inputs = run(m)
        g = torch.Generator().manual_seed(3)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=dtype)).sum() for o in outs)
        loss.backward()
        results.append((outs, [x.grad for x in inputs],
                        {n: p.grad for n, p in m.named_parameters()}))
    (o1, g1, p1), (o2, g2, p2) = results
    assert len(o1) == len(o2)
    for i, (a, b) in enumerate(zip(o1, o2)):
        _close(b, a, dtype, f"output {i}")
    for i, (a, b) in enumerate(zip(g1, g2)):
        _close(b, a, dtype, f"input gradient {i}")
    assert p1.keys() == p2.keys()
    for n in p1:
        assert p2[n] is not None, f"{n} has no gradient"
        _close(p2[n], p1[n] if p1[n] is not None else torch.zeros_like(p2[n]), dtype,
               f"gradient of {n}")


def _strict_both_ways(orig: nn.Module, ours: nn.Module):
    assert list(orig.state_dict()) == list(ours.state_dict())
    for (k, a), b in zip(orig.state_dict().items(), ours.state_dict().values()):
        assert a.shape == b.shape, k
    copy.deepcopy(orig).load_state_dict(ours.state_dict(), strict=True)
    copy.deepcopy(ours).load_state_dict(orig.state_dict(), strict=True)


# ---------------------------------------------------------------- ESPnet

def _espnet_initial(name, lengths, steps, dtype, batch):
    """ESPnet's own initialisation (None) in float32; in float64 an explicit uniform one
    (ESPnet's AttCov/AttCovLoc/AttLocRec build theirs in float32, which their float64
    layers then reject)."""
    if dtype == torch.float32 or name in ("AttAdd", "AttMultiHeadAdd"):
        return None
    valid = (torch.arange(steps) < torch.tensor(lengths).unsqueeze(1)).to(dtype)
    uniform = valid / torch.tensor(lengths, dtype=dtype).unsqueeze(1)
    if name in ("AttCov", "AttCovLoc"):
        return [uniform]
    if name == "AttLocRec":
        zeros = torch.zeros(batch, A, dtype=dtype)
        return (uniform, (zeros, zeros))
    return uniform


def _espnet_run(name, dtype):
    def run(m):
        outs, inputs = [], []
        for lengths in LENGTHS:
            steps = max(lengths)
            h = torch.randn(B, steps, E, dtype=dtype, requires_grad=True)
            z = torch.randn(STEPS, B, D, dtype=dtype, requires_grad=True)
            inputs += [h, z]
            m.reset()
            att = _espnet_initial(name, lengths, steps, dtype, B)
            for s in range(STEPS):
                c, att = m(h, lengths, z[s] if s else None, att)  # step 0: dec_z None
                outs.append(c)
                if isinstance(att, list) and name == "AttMultiHeadAdd":
                    outs += att
                elif isinstance(att, list):
                    outs.append(att[-1])
                elif isinstance(att, tuple):
                    outs += [att[0], *att[1]]
                else:
                    outs.append(att)
        return outs, inputs

    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(ESPNET))
def test_espnet_matches_real_module(name, dtype):
    mod = toolkits.espnet_attentions()
    torch.manual_seed(0)
    orig = getattr(mod, name)(*ESPNET[name]).to(dtype)
    assert type(orig).__module__ == toolkits.ESPNET_ATTENTIONS
    ours = attnkern.from_module(orig)
    assert type(ours).__name__ == name and isinstance(ours, nn.Module)
    assert type(ours).__module__ == "attnkern.modules.espnet"
    _strict_both_ways(orig, ours)
    _compare(orig, ours, _espnet_run(name, dtype), dtype)


@pytest.mark.parametrize("name", ["AttAdd", "AttLoc"])
def test_espnet_replace_attention_in_a_model(name):
    mod = toolkits.espnet_attentions()
    torch.manual_seed(0)
    model = nn.ModuleDict({"att": nn.ModuleList([getattr(mod, name)(*ESPNET[name])]),
                           "out": nn.Linear(E, 2)})
    reference = copy.deepcopy(model)
    report = attnkern.replace_attention(model)
    assert report == [("att.0", getattr(mod, name), getattr(ak_espnet, name))]
    assert isinstance(model["out"], nn.Linear)
    _compare(reference["att"][0], model["att"][0], _espnet_run(name, torch.float32),
             torch.float32)


def test_espnet_same_init_when_seeded():
    mod = toolkits.espnet_attentions()
    for name, args in ESPNET.items():
        torch.manual_seed(1)
        a = getattr(mod, name)(*args)
        torch.manual_seed(1)
        b = getattr(ak_espnet, name)(*args)
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=f"{name}.{k}")


def test_espnet_protocol_keeps_utterance_until_reset():
    """ESPnet's rule: the encoder states of the first call after reset() are used until the
    next reset() (the drop-in does as the original, not better)."""
    mod = toolkits.espnet_attentions()
    torch.manual_seed(0)
    orig = mod.AttAdd(E, D, A)
    ours = attnkern.from_module(orig)
    h1, h2 = torch.randn(B, T, E), torch.randn(B, T, E)
    z = torch.randn(B, D)
    for m in (orig, ours):
        m.reset()
        m(h1, [T] * B, z, None)
    c_orig, _ = orig(h2, [T] * B, z, None)
    c_ours, _ = ours(h2, [T] * B, z, None)
    torch.testing.assert_close(c_ours, c_orig)
    ours.reset()
    orig.reset()
    torch.testing.assert_close(ours(h2, [T] * B, z, None)[0], orig(h2, [T] * B, z, None)[0])
    assert ours.pre_compute_enc_h is not None and ours.mask.shape == (B, T)


def test_espnet_step_and_reorder():
    torch.manual_seed(0)
    att = ak_espnet.AttLoc(E, D, A, 4, 5)
    h = torch.randn(B, T, E)
    state = att.start(h, key_lengths=[T, 12, 4])
    z = torch.randn(B, D)
    c, w, state2 = att.step(z, state)
    assert c.shape == (B, E) and w.shape == (B, T) and state2.prev is w
    idx = torch.tensor([2, 0])
    c_r, w_r, _ = att.step(z[idx], state2.reorder(idx))
    c_f, w_f, _ = att.step(z, state2)
    torch.testing.assert_close(c_r, c_f[idx])
    torch.testing.assert_close(w_r, w_f[idx])
    mh = ak_espnet.AttMultiHeadAdd(E, D, 3, A, 7)
    st = mh.start(h, key_lengths=[T, 12, 4])
    c, ws, _ = mh.step(z, st)
    c_r, ws_r, _ = mh.step(z[idx], st.reorder(idx))
    torch.testing.assert_close(c_r, c[idx])
    torch.testing.assert_close(ws_r[1], ws[1][idx])


def test_espnet_both_module_paths_registered():
    names = attnkern._registry.supported()
    for cls in ESPNET:
        for path in (toolkits.ESPNET_ATTENTIONS, toolkits.ESPNET2_LEGACY_ATTENTIONS):
            assert f"{path}.{cls}" in names


def test_espnet_decoder_with_attention_replaced():
    decoders = toolkits.espnet_decoders()
    mod = toolkits.espnet_attentions()
    odim, dunits = 7, D
    for name in ("AttLoc", "AttAdd", "AttCovLoc"):
        torch.manual_seed(0)
        att = getattr(mod, name)(E, dunits, A, *ESPNET[name][3:])
        dec = decoders.Decoder(E, odim, "lstm", 1, dunits, odim - 1, odim - 1,
                               nn.ModuleList([att]))
        ours = copy.deepcopy(dec)
        report = attnkern.replace_attention(ours)
        assert [r[0] for r in report] == ["att.0"]
        torch.manual_seed(5)
        hs = torch.randn(B, T, E)
        hlens = torch.tensor([T, 15, 6])
        ys = [torch.randint(0, odim - 1, (n,)) for n in (5, 3, 4)]
        grads = []
        losses = []
        for m in (dec, ours):
            h = hs.clone().requires_grad_()
            loss, _, _ = m(h, hlens, ys)
            loss.backward()
            losses.append(loss)
            grads.append((h.grad, {n: p.grad for n, p in m.named_parameters()}))
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
        for n, g in grads[0][1].items():
            other = grads[1][1][n]
            if g is None:
                assert other is None or not other.abs().gt(1e-6).any(), n
                continue
            torch.testing.assert_close(other, g, rtol=1e-5, atol=1e-5,
                                       msg=lambda m, n=n: f"{n}: {m}")


def test_espnet_bad_input_names_the_argument():
    torch.manual_seed(0)
    att = ak_espnet.AttLoc(E, D, A, 4, 5)
    h = torch.randn(B, T, E)
    with pytest.raises(ValueError, match="enc_hs_pad"):
        att(torch.randn(B, T), [T] * B, None, None)
    att.reset()
    with pytest.raises(ValueError, match="enc_hs_len"):
        att(h, [T + 1, 3, 3], None, None)
    att.reset()
    with pytest.raises(ValueError, match="enc_hs_len"):
        att(h, [T, 3], None, None)
    att.reset()
    with pytest.raises(ValueError, match="dec_z"):
        att(h, [T] * B, torch.randn(B, D + 1), None)
    with pytest.raises(ValueError, match="att_prev"):
        att(h, [T] * B, torch.randn(B, D), torch.randn(B, T - 1))
    cov = ak_espnet.AttCov(E, D, A)
    with pytest.raises(TypeError, match="att_prev_list"):
        cov(h, [T] * B, None, [])
    with pytest.raises(NotImplementedError, match="Batch attention constraining"):
        att(h, [T] * B, None, None, last_attended_idx=3)  # ESPnet's: batch 1 only
    one = ak_espnet.AttLoc(E, D, A, 4, 5)
    one(h[:1], [T], None, None)
    with pytest.raises(ValueError, match="last_attended_idx"):
        one(h[:1], [T], None, None, last_attended_idx=2.5)
    with pytest.raises(ValueError, match="forward_window"):
        one(h[:1], [T], None, None, last_attended_idx=2, forward_window=None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_espnet_attloc_attention_constraint(dtype):
    """AttLoc's last_attended_idx (ESPnet's monotonic constraint, batch 1) against
    ESPnet's own module: a TTS-style loop whose index follows the argmax, windows at the
    start, the middle and past the end; gradients included. Per item for B > 1 (step)."""
    mod = toolkits.espnet_attentions()
    torch.manual_seed(0)
    orig = mod.AttLoc(E, D, A, 4, 5).to(dtype)
    ours = attnkern.from_module(orig)

    def run(m):
        h = torch.randn(1, T, E, dtype=dtype, requires_grad=True)
        z = torch.randn(STEPS + 2, 1, D, dtype=dtype, requires_grad=True)
        m.reset()
        att, outs, idx = None, [], 0
        for s in range(STEPS + 2):
            c, att = m(h, [T], z[s], att, last_attended_idx=idx,
                       backward_window=1 + s % 2, forward_window=3 + s % 3)
            outs += [c, att]
            idx = int(att.argmax()) if s < STEPS else T - 2  # the end: a clipped window
        return outs, [h, z]

    _compare(orig, ours, run, dtype)
    # per item: a (B,) index tensor gives each item what a batch of one gives
    h = torch.randn(2, T, E, dtype=dtype)
    z = torch.randn(2, D, dtype=dtype)
    _, w, _ = ours.step(z, ours.start(h), last_attended_idx=torch.tensor([3, 12]))
    for b, idx in enumerate((3, 12)):
        _, w1, _ = ours.step(z[b:b + 1], ours.start(h[b:b + 1]), last_attended_idx=idx)
        _close(w[b:b + 1], w1, dtype, "per-item constraint")
        assert (w1[0, :max(idx - 1, 0)] == 0).all() and (w1[0, idx + 3:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, args, op", [
    ("AttLoc", (E, D, 64, 4, 5), "location1_attention"),  # the op beats the folded filter
    ("AttLoc", (E, D, A, 4, 5), "location_attention"),  # the folded filter (C = 1) wins
    ("AttCov", (E, D, A), "location1_attention"),
    ("AttCovLoc", (E, D, 64, 4, 5), "location1_attention"),
])
def test_espnet_inference_steps_are_one_op(monkeypatch, name, args, op, dtype):
    """Under no_grad each step of a location module is one C++ op (location1_attention, or
    location_attention with the folded filter, by location_keys' rule): ESPnet's outputs."""
    mod = toolkits.espnet_attentions()
    torch.manual_seed(0)
    orig = getattr(mod, name)(*args).to(dtype)
    _inference_one_op(monkeypatch, op, orig, _espnet_run(name, dtype), dtype)


def _inference_one_op(monkeypatch, op, orig, run, dtype):
    """``run`` (the toolkit's loop) under no_grad on ``orig`` and its drop-in: the same
    outputs, and one call of ``attnkern.ops.<op>`` a step."""
    ours = attnkern.from_module(orig)
    calls = []
    real = getattr(attnkern.ops, op)
    monkeypatch.setattr(attnkern.ops, op, lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        torch.manual_seed(7)
        want, _ = run(orig)
        torch.manual_seed(7)
        got, _ = run(ours)
    assert len(calls) == STEPS * len(LENGTHS)
    for i, (a, b) in enumerate(zip(want, got)):
        _close(b, a, dtype, f"output {i}")


# ---------------------------------------------------------------- SpeechBrain

SB = {"ContentBasedAttention": (E, D, A, 5), "LocationAwareAttention": (E, D, A, 5, 4, 3)}


def _sb_run(dtype):
    def run(m):
        outs, inputs = [], []
        for lengths in LENGTHS:
            steps = max(lengths)
            h = torch.randn(B, steps, E, dtype=dtype, requires_grad=True)
            z = torch.randn(STEPS, B, D, dtype=dtype, requires_grad=True)
            inputs += [h, z]
            # SpeechBrain: float64 lengths so its prev_attn is float64 (as its float64 conv needs)
            enc_len = torch.tensor(lengths, dtype=torch.long if dtype == torch.float32 else dtype)
            m.reset()
            for s in range(STEPS):
                c, w = m(h, enc_len, z[s])
                outs += [c, w]
        return outs, inputs

    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("scaling", [1.0, 2.0])
@pytest.mark.parametrize("name", list(SB))
def test_speechbrain_matches_real_module(name, scaling, dtype):
    mod = toolkits.speechbrain_attention()
    torch.manual_seed(0)
    orig = getattr(mod, name)(*SB[name], scaling=scaling).to(dtype)
    assert type(orig).__module__ == toolkits.SPEECHBRAIN_ATTENTION
    ours = attnkern.from_module(orig)
    assert type(ours).__module__ == "attnkern.modules.speechbrain"
    assert ours.scaling == scaling
    _strict_both_ways(orig, ours)
    _compare(orig, ours, _sb_run(dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("attn_dim, op", [(64, "location1_attention"), (4, "location_attention")])
def test_speechbrain_location_inference_steps_are_one_op(monkeypatch, attn_dim, op, dtype):
    mod = toolkits.speechbrain_attention()
    torch.manual_seed(0)
    orig = mod.LocationAwareAttention(E, D, attn_dim, 5, 4, 3).to(dtype)
    _inference_one_op(monkeypatch, op, orig, _sb_run(dtype), dtype)


def test_speechbrain_prev_attn_is_read_and_written():
    mod = toolkits.speechbrain_attention()
    torch.manual_seed(0)
    orig = mod.LocationAwareAttention(*SB["LocationAwareAttention"])
    ours = attnkern.from_module(orig)
    h, z = torch.randn(B, T, E), torch.randn(B, D)
    enc_len = torch.tensor([T, 12, 5])
    for m in (orig, ours):
        m.reset()
        m(h, enc_len, z)
    torch.testing.assert_close(ours.prev_attn, orig.prev_attn)
    idx = torch.tensor([2, 2, 0])
    for m in (orig, ours):  # what a beam search does with it
        m.prev_attn = m.prev_attn[idx].flip(1)
    torch.testing.assert_close(ours(h, enc_len, z)[0], orig(h, enc_len, z)[0])
    with pytest.raises(ValueError, match="prev_attn"):
        ours.prev_attn = torch.zeros(B, T + 1)


@pytest.mark.parametrize("attn_type", ["location", "content"])
def test_speechbrain_decoder_with_attention_replaced(attn_type):
    rnn = toolkits.speechbrain_rnn()
    torch.manual_seed(0)
    dec = rnn.AttentionalRNNDecoder(rnn_type="lstm", attn_type=attn_type, hidden_size=D,
                                    attn_dim=A, num_layers=1, enc_dim=E, input_size=6,
                                    channels=4, kernel_size=3, scaling=2.0)
    ours = copy.deepcopy(dec)
    report = attnkern.replace_attention(ours)
    assert [r[0] for r in report] == ["attn"]
    torch.manual_seed(1)
    inp, enc = torch.randn(B, 5, 6), torch.randn(B, T, E)
    wav_len = torch.tensor([1.0, 0.7, 0.3])
    res = []
    for m in (dec, ours):
        x, h = inp.clone().requires_grad_(), enc.clone().requires_grad_()
        out, attn = m(x, h, wav_len)
        (out.square().sum() + attn.sum()).backward()
        res.append((out, attn, x.grad, h.grad, {n: p.grad for n, p in m.named_parameters()}))
    for a, b in zip(res[0][:4], res[1][:4]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for n, g in res[0][4].items():
        torch.testing.assert_close(res[1][4][n], g, rtol=1e-5, atol=1e-5,
                                   msg=lambda m, n=n: f"{n}: {m}")


def test_speechbrain_bad_input_names_the_argument():
    att = ak_speechbrain.LocationAwareAttention(*SB["LocationAwareAttention"])
    with pytest.raises(ValueError, match="enc_states"):
        att(torch.randn(B, T), torch.tensor([T] * B), torch.randn(B, D))
    with pytest.raises(ValueError, match="enc_len"):
        att(torch.randn(B, T, E), torch.tensor([T] * (B + 1)), torch.randn(B, D))
    with pytest.raises(ValueError, match="dec_states"):
        att(torch.randn(B, T, E), torch.tensor([T] * B), torch.randn(B, D + 2))


# ---------------------------------------------------------------- OpenNMT-py

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["steps", "steps-nolen", "tgt-seq"])
def test_opennmt_matches_real_module(mode, dtype):
    mod = toolkits.opennmt_global_attention()
    dim = 12
    torch.manual_seed(0)
    orig = mod.GlobalAttention(dim, attn_type="mlp").to(dtype)
    assert type(orig).__module__ == toolkits.OPENNMT_GLOBAL_ATTENTION
    ours = attnkern.from_module(orig)
    assert type(ours).__module__ == "attnkern.modules.opennmt"
    _strict_both_ways(orig, ours)

    def run(m):
        outs, inputs = [], []
        for lengths in LENGTHS:
            enc = torch.randn(B, max(lengths), dim, dtype=dtype, requires_grad=True)
            src_len = None if mode == "steps-nolen" else torch.tensor(lengths)
            if mode == "tgt-seq":
                q = torch.randn(B, 4, dim, dtype=dtype, requires_grad=True)
                outs += list(m(q, enc, src_len=src_len))
            else:
                q = torch.randn(STEPS, B, dim, dtype=dtype, requires_grad=True)
                for s in range(STEPS):
                    outs += list(m(q[s], enc, src_len=src_len))
            inputs += [enc, q]
        return outs, inputs

    _compare(orig, ours, run, dtype)


def test_opennmt_other_configs_left_alone():
    mod = toolkits.opennmt_global_attention()
    model = nn.ModuleList([mod.GlobalAttention(8, attn_type="dot"),
                           mod.GlobalAttention(8, attn_type="mlp")])
    report = attnkern.replace_attention(model)
    assert [r[0] for r in report] == ["1"]
    assert type(model[0]).__module__ == toolkits.OPENNMT_GLOBAL_ATTENTION
    with pytest.raises(TypeError, match="no attnkern drop-in"):
        attnkern.from_module(model[0])


def test_opennmt_reuse_rule_sees_new_memory_and_weights():
    torch.manual_seed(0)
    att = ak_opennmt.GlobalAttention(8, attn_type="mlp")
    enc, q = torch.randn(2, 5, 8), torch.randn(2, 8)
    first, _ = att(q, enc)
    with torch.no_grad():
        enc.mul_(2)  # in place: a new version
    second, _ = att(q, enc)
    fresh = ak_opennmt.GlobalAttention(8, attn_type="mlp")
    fresh.load_state_dict(att.state_dict())
    torch.testing.assert_close(second, fresh(q, enc)[0])
    assert not torch.allclose(first, second)
    with torch.no_grad():
        att.linear_context.weight.mul_(-1)
    # the held keys were built from the old weight: the rule starts afresh
    torch.testing.assert_close(att(q, enc)[0], att.step(q, att.start(enc))[0])
    # a backward pass through the held keys, then the same memory again
    enc2 = torch.randn(2, 5, 8, requires_grad=True)
    att(q, enc2)[0].sum().backward()
    att(q, enc2)[0].sum().backward()


def test_opennmt_bad_input_names_the_argument():
    att = ak_opennmt.GlobalAttention(8, attn_type="mlp")
    with pytest.raises(ValueError, match="attn_type"):
        ak_opennmt.GlobalAttention(8)
    with pytest.raises(ValueError, match="enc_out"):
        att(torch.randn(2, 8), torch.randn(2, 5))
    with pytest.raises(ValueError, match="src_len"):
        att(torch.randn(2, 8), torch.randn(2, 5, 8), src_len=torch.tensor([5]))
    with pytest.raises(ValueError, match="src"):
        att(torch.randn(3, 8), torch.randn(2, 5, 8))
