"""Real decoders: the three clients of bench/decoders.py (the PyTorch tutorial's
BahdanauAttention, tacotron2's location-sensitive Attention with its alignment feedback,
OpenNMT-py's mlp GlobalAttention) against attnkern's drop-in and module variants, over a
multi-step loop: every output and weight, every input gradient and every parameter
gradient at 1e-5 (float32, the C++ backend); plus tacotron2 checkpoints loading strictly.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

import attnkern
from attnkern import ops

pytestmark = pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "decoders.py")
_spec = importlib.util.spec_from_file_location("bench_decoders", _PATH)
decoders = importlib.util.module_from_spec(_spec)
sys.modules["bench_decoders"] = decoders  # dataclasses look their module up there
_spec.loader.exec_module(decoders)

STEPS = 6
ATOL = RTOL = 1e-5
SMALL = {
    "tutorial": dict(B=3, T=7, H=16),
    "tacotron2": dict(B=3, T=11, attention_dim=16, embedding_dim=12, rnn_dim=10,
                      n_filters=4, kernel=5),
    "opennmt": dict(B=3, S=7, d=16),
}

# Parameter of each variant -> the original's parameter(s) whose gradient it must equal
# (the tutorial's two biases add inside the tanh: one combined bias gets their gradient).
_TUTORIAL = {"query_proj.weight": ["Wa.weight"], "query_proj.bias": ["Wa.bias", "Ua.bias"],
             "key_proj.weight": ["Ua.weight"], "v": ["Va.weight"]}
_OPENNMT = {"query_proj.weight": ["linear_query.weight"],
            "query_proj.bias": ["linear_query.bias"],
            "key_proj.weight": ["linear_context.weight"], "v": ["v.weight"]}
PARAM_MAP = {
    "tutorial": {"module": _TUTORIAL, "module, keys per call": _TUTORIAL, "state": _TUTORIAL},
    "opennmt": {"module": _OPENNMT, "module, keys per call": _OPENNMT},
}


def _run(client, name, x):
    for t in x.values():
        t.grad = None
    for p in client.params[name].parameters():
        p.grad = None
    outs = client.variants[name](x, STEPS)
    g = torch.Generator().manual_seed(11)
    torch.autograd.backward(outs, [torch.randn(o.shape, generator=g) for o in outs])
    grads = {k: t.grad.clone() for k, t in x.items() if t.requires_grad}
    # A parameter the fused path does not use (the tutorial's Va.bias) has gradient 0.
    params = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
              for n, p in client.params[name].named_parameters()}
    return [o.detach() for o in outs], grads, params


def _close(a, b, what):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("key", list(SMALL))
def test_client_variants_match_the_original(key):
    client = decoders.CLIENTS[key](**SMALL[key])
    x = client.make_inputs()
    ref_outs, ref_grads, ref_params = _run(client, "original", x)
    assert ref_grads and all(g.abs().sum() > 0 for g in ref_grads.values())
    for name in client.variants:
        if name == "original":
            continue
        outs, grads, params = _run(client, name, x)
        assert len(outs) == len(ref_outs) == 2 * STEPS
        for i, (a, b) in enumerate(zip(outs, ref_outs)):
            assert a.shape == b.shape, (name, i)
            _close(a, b, f"{name} step {i // 2} {'weights' if i % 2 else 'output'}")
        for k in ref_grads:
            _close(grads[k], ref_grads[k], f"{name} grad of input {k}")
        mapping = PARAM_MAP.get(key, {}).get(name)
        if mapping is None:  # same module layout: same parameter names
            assert params.keys() == ref_params.keys()
            mapping = {n: [n] for n in params}
        for n, sources in mapping.items():
            for s in sources:
                _close(params[n].reshape(ref_params[s].shape), ref_params[s],
                       f"{name} grad of {n} vs original {s}")
    if key == "tutorial":  # the score bias the recipe drops: softmax cancels it exactly
        assert ref_params["Va.bias"].abs().max() < 1e-5


def test_tacotron2_checkpoint_loads_strictly_both_ways():
    args = (10, 12, 16, 4, 5)
    torch.manual_seed(0)
    orig = decoders.Tacotron2Attention(*args)
    lsa = attnkern.LocationSensitiveAttention(*args, backend="cpp")
    want = {k: tuple(v.shape) for k, v in orig.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in lsa.state_dict().items()} == want
    lsa.load_state_dict(orig.state_dict(), strict=True)
    decoders.Tacotron2Attention(*args).load_state_dict(lsa.state_dict(), strict=True)
    # the decoder's own use: processed_memory from memory_layer, then one step
    memory = torch.randn(2, 9, 12)
    pm_o, pm_l = orig.memory_layer(memory), lsa.memory_layer(memory)
    _close(pm_l, pm_o, "processed_memory")
    cat = torch.rand(2, 2, 9)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 6:] = True
    h = torch.randn(2, 10)
    (c_o, w_o), (c_l, w_l) = orig(h, memory, pm_o, cat, mask), lsa(h, memory, pm_l, cat, mask)
    _close(c_l, c_o, "context")
    _close(w_l, w_o, "weights")
    assert (w_l[1, 6:] == 0).all()


def test_tacotron2_location_keys_equal_conv_then_dense():
    torch.manual_seed(1)
    lsa = attnkern.LocationSensitiveAttention(10, 12, 16, 4, 7)
    pm, cat = torch.randn(3, 13, 16), torch.rand(3, 2, 13)
    loc = lsa.location_layer(cat)  # the tacotron2 route: conv, transpose, dense
    _close(lsa.location_keys(pm, cat), pm + loc, "location keys")


def test_recipes_accept_a_state_dict():
    torch.manual_seed(2)
    tut = decoders.TutorialBahdanauAttention(8)
    a = attnkern.AdditiveAttention.from_bahdanau_tutorial(tut)
    b = attnkern.AdditiveAttention.from_bahdanau_tutorial(tut.state_dict())
    for (n, p), (_, r) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, r), n
    onmt = decoders.OpenNMTGlobalAttention(8)
    layer = attnkern.AdditiveAttention.from_opennmt_mlp(onmt.state_dict(), backend="cpp")
    q, bank = torch.randn(2, 8), torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 2])
    c, align = layer(q, bank, need_weights=True, key_lengths=lengths)
    ref_h, ref_align = onmt(q, bank, lengths)
    _close(align, ref_align, "align")
    _close(onmt.linear_out(torch.cat([c, q], -1)), ref_h, "attn_h")


def test_bench_decoders_smoke(capsys):
    threads = torch.get_num_threads()
    try:
        assert decoders.main(["--smoke", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    table = capsys.readouterr().out
    for name in ("tutorial", "tacotron2", "OpenNMT"):
        assert name in table
    assert table.count("| original |") == 3


def test_location_sensitive_attention_gradcheck_float64_no_mask():
    torch.manual_seed(3)
    lsa = attnkern.LocationSensitiveAttention(5, 4, 6, 3, 3, backend="cpp").double()
    h = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(2, 7, 4, dtype=torch.float64, requires_grad=True)
    cat = torch.rand(2, 2, 7, dtype=torch.float64, requires_grad=True)

    def fn(h, memory, cat):
        return lsa(h, memory, lsa.memory_layer(memory), cat, None)

    assert torch.autograd.gradcheck(fn, (h, memory, cat))
