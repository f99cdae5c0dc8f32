"""The explicit decoding state (attnkern/state.py) and the drop-in call protocols on top of it.

- ``start`` / ``step`` give the protocol's (and the reference's) outputs, weights and every
  gradient, for each module; float64 gradcheck through a loop of steps;
- the state is a pytree of tensors: torch.compile(fullgraph=True), torch.export and
  while_loop take it; ``step`` mutates neither the module nor the state;
- ``reorder`` selects hypotheses, gradients flowing back to the rows selected;
- the drop-in protocols never give a stale answer: ``.data`` edits of every folded
  parameter within an utterance, two utterances in two threads on one module;
- every module checks its inputs (each error names the argument and the shapes seen);
- torchaudio's real ``_Attention`` (where torchaudio is installed) converts through
  ``from_module`` / ``replace_attention`` with strict state_dict loads both ways.
"""

from __future__ import annotations

import copy
import dataclasses
import threading

import pytest
import torch
import torch.utils._pytree as pytree

import attnkern
from attnkern import ops

pytestmark = pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")

ARGS = (10, 12, 16, 4, 5)  # attention_rnn_dim, embedding_dim, attention_dim, filters, kernel
B, T, STEPS = 3, 11, 5


def _close(a, b, what=""):
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5,
                                   msg=lambda m, i=i: f"{what} {i}: {m}")


def _reference(lsa, h, memory, pm, cat, mask):
    """tacotron2's math with the module's current parameters, plain autograd."""
    query = lsa.query_layer(h)
    keys = pm + lsa.location_layer(cat)
    v = lsa.v.linear_layer.weight if hasattr(lsa.v, "linear_layer") else lsa.v.weight
    return attnkern.reference.additive_attention(query, keys, memory, v,
                                                 key_padding_mask=mask, return_weights=True)


def _protocol_loop(fn, memory, pm, hidden, mask):
    """tacotron2's decoder feedback: (previous, cumulative) weights as the next cat."""
    weights = memory.new_zeros(memory.shape[:2])
    cum = weights
    outs = []
    for h in hidden:
        context, weights = fn(h, memory, pm, torch.stack((weights, cum), 1), mask)
        cum = cum + weights
        outs += (context, weights)
    return outs


def _state_loop(lsa, memory, hidden, mask):
    state = lsa.start(memory, key_padding_mask=mask)
    outs = []
    for h in hidden:
        context, weights, state = lsa.step(h, state)
        outs += (context, weights)
    return outs


def _setup(cls=attnkern.LocationSensitiveAttention, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    lsa = cls(*ARGS, backend="cpp").to(dtype)
    memory = torch.randn(B, T, ARGS[1], dtype=dtype, requires_grad=True)
    hidden = torch.randn(STEPS, B, ARGS[0], dtype=dtype, requires_grad=True)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 7:] = True
    return lsa, memory, hidden, mask


def _grads(outs, inputs, seed=1, **kw):
    g = torch.Generator().manual_seed(seed)
    cot = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    return torch.autograd.grad(outs, inputs, cot, **kw)


# ------------------------------------------------------------------ start / step


@pytest.mark.parametrize("cls", [attnkern.LocationSensitiveAttention,
                                 attnkern.TorchaudioAttention], ids=lambda c: c.__name__)
def test_location_step_equals_protocol_and_reference(cls):
    lsa, memory, hidden, mask = _setup(cls)
    params = list(lsa.parameters())
    ref_outs = _protocol_loop(lambda *a: _reference(lsa, *a), memory,
                              lsa.memory_layer(memory), hidden, mask)
    ref = _grads(ref_outs, [memory, hidden, *params])
    for name, outs in [
        ("protocol", _protocol_loop(lsa, memory, lsa.memory_layer(memory), hidden, mask)),
        ("state", _state_loop(lsa, memory, hidden, mask)),
    ]:
        _close(outs, ref_outs, f"{name} outputs")
        _close(_grads(outs, [memory, hidden, *params]), ref, f"{name} gradients")


def test_location_state_gradcheck_float64():
    lsa, memory, hidden, mask = _setup(dtype=torch.float64)

    def fn(memory, hidden):
        return tuple(_state_loop(lsa, memory, hidden, mask))

    assert torch.autograd.gradcheck(fn, (memory, hidden[:3].detach().requires_grad_()))


def test_location_state_with_key_lengths_equals_mask():
    lsa, memory, hidden, mask = _setup()
    lengths = (~mask).sum(1)
    with torch.no_grad():
        a = _state_loop(lsa, memory, hidden, mask)
        state = lsa.start(memory, key_lengths=lengths)
        b = []
        for h in hidden:
            context, weights, state = lsa.step(h, state)
            b += (context, weights)
    _close(a, b, "key_lengths")


def test_step_mutates_neither_module_nor_state():
    lsa, memory, hidden, mask = _setup()
    state = lsa.start(memory, key_padding_mask=mask)
    before = {k: v for k, v in vars(lsa).items()}
    leaves = [t.clone() for t in pytree.tree_leaves(state)]
    versions = [t._version for t in pytree.tree_leaves(state)]
    _, _, new = lsa.step(hidden[0], state)
    assert {k: v for k, v in vars(lsa).items()} == before
    assert [t._version for t in pytree.tree_leaves(state)] == versions
    for a, b in zip(leaves, pytree.tree_leaves(state)):
        assert torch.equal(a, b)
    assert new is not state and not torch.equal(new.previous_weights, state.previous_weights)


def test_additive_step_equals_forward():
    torch.manual_seed(3)
    layer = attnkern.AdditiveAttention(6, 5, 8, backend="cpp")
    keys = torch.randn(3, 7, 5, requires_grad=True)
    values = torch.randn(3, 7, 4, requires_grad=True)
    queries = torch.randn(4, 3, 6, requires_grad=True)
    lengths = torch.tensor([7, 3, 5])
    inputs = [keys, values, queries, *layer.parameters()]
    ref_outs = []
    for q in queries:
        ref_outs += layer(q, keys, values, key_lengths=lengths, need_weights=True)
    ref = _grads(ref_outs, inputs)
    state = layer.start(keys, values, key_lengths=lengths)
    outs = []
    for q in queries:
        context, weights, state = layer.step(q, state)
        outs += (context, weights)
    _close(outs, ref_outs, "outputs")
    _close(_grads(outs, inputs), ref, "gradients")


# ------------------------------------------------------------------ pytree, compile, export


class Step(torch.nn.Module):
    """One decoder step as a module (what torch.export and the ONNX exporter take)."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, h, state):
        return self.attn.step(h, state)


def test_state_is_a_pytree_of_tensors():
    lsa, memory, hidden, mask = _setup()
    state = lsa.start(memory, key_padding_mask=mask)
    leaves, spec = pytree.tree_flatten(state)
    assert leaves and all(isinstance(t, torch.Tensor) for t in leaves)
    again = pytree.tree_unflatten(leaves, spec)
    assert type(again) is type(state)
    for f in dataclasses.fields(state):
        a, b = getattr(state, f.name), getattr(again, f.name)
        assert (a is None and b is None) or a is b


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_compiled_step_fullgraph_matches_eager(grad):
    lsa, memory, hidden, mask = _setup()
    compiled = torch.compile(lsa.step, fullgraph=True, backend="aot_eager")
    with torch.set_grad_enabled(grad):
        ref = _state_loop(lsa, memory, hidden, mask)
        state = lsa.start(memory, key_padding_mask=mask)
        outs = []
        for h in hidden:
            context, weights, state = compiled(h, state)
            outs += (context, weights)
    _close(outs, ref, "compiled step")
    if grad:
        params = list(lsa.parameters())
        _close(_grads(outs, [memory, hidden, *params]), _grads(ref, [memory, hidden, *params]),
               "compiled step gradients")


def test_export_a_step_with_the_state():
    lsa, memory, hidden, mask = _setup()

    with torch.no_grad():
        state = lsa.start(memory.detach(), key_padding_mask=mask)
        ep = torch.export.export(Step(lsa), (hidden[0].detach(), state))
        got = ep.module()(hidden[1].detach(), state)
        want = lsa.step(hidden[1].detach(), state)
    _close(got[:2], want[:2], "exported step")
    _close(pytree.tree_leaves(got[2]), pytree.tree_leaves(want[2]), "exported state")


def test_while_loop_carries_the_state():
    from torch._higher_order_ops.while_loop import while_loop

    lsa, memory, hidden, mask = _setup()
    h = hidden[0].detach()
    with torch.no_grad():
        state = lsa.start(memory.detach(), key_padding_mask=mask)
        leaves, spec = pytree.tree_flatten(state)

        def cond(i, *leaves):
            return i < 3

        def body(i, *leaves):
            _, _, new = lsa.step(h, pytree.tree_unflatten(list(leaves), spec))
            return (i + 1, *[t.clone() for t in pytree.tree_leaves(new)])

        out = while_loop(cond, body, (torch.tensor(0), *leaves))
        want = state
        for _ in range(3):
            _, _, want = lsa.step(h, want)
    _close(list(out[1:]), pytree.tree_leaves(want), "while_loop state")


# ------------------------------------------------------------------ reorder


def test_reorder_selects_hypotheses_and_gradients_follow():
    lsa, memory, hidden, mask = _setup()
    index = torch.tensor([2, 0, 0, 1, 2, 2])
    state = lsa.start(memory, key_padding_mask=mask)
    _, _, state = lsa.step(hidden[0], state)
    beams = state.reorder(index)
    h = hidden[1][index]
    context, weights, _ = lsa.step(h, beams)
    # the same step on copied rows (a reference beam search with copied keys)
    copied = lsa.start(memory[index], key_padding_mask=mask[index])
    copied = copied.replace(previous_weights=state.previous_weights[index],
                            cumulative_weights=state.cumulative_weights[index])
    want_c, want_w, _ = lsa.step(h, copied)
    _close([context, weights], [want_c, want_w], "reordered step")
    params = list(lsa.parameters())
    _close(_grads([context, weights], [memory, hidden, *params], retain_graph=True),
           _grads([want_c, want_w], [memory, hidden, *params]), "reordered gradients")


def test_reorder_checks_its_index():
    lsa, memory, hidden, mask = _setup()
    state = lsa.start(memory)
    with pytest.raises(TypeError, match="index must be a 1-D torch.long tensor"):
        state.reorder(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="index must be a 1-D torch.long tensor"):
        state.reorder([0, 1])


# ------------------------------------------------------------------ no stale answers


EDITS = {
    "query": lambda m: m.query_layer.linear_layer.weight,
    "location_conv": lambda m: m.location_layer.location_conv.conv.weight,
    "location_dense": lambda m: m.location_layer.location_dense.linear_layer.weight,
}


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("which", list(EDITS))
def test_protocol_follows_data_edits_within_an_utterance(which, grad):
    lsa, memory, hidden, mask = _setup()
    pm = lsa.memory_layer(memory).detach()
    cat = torch.rand(B, 2, T)
    with torch.set_grad_enabled(grad):
        lsa(hidden[0], memory, pm, cat, mask)
        lsa(hidden[1], memory, pm, cat, mask)
        EDITS[which](lsa).data.mul_(-1.5)  # no version counter sees it
        got = lsa(hidden[2], memory, pm, cat, mask)
        want = _reference(lsa, hidden[2], memory, pm, cat, mask)
    _close(got, want, f".data edit of {which}")


def test_protocol_two_threads_two_utterances():
    lsa, memory, hidden, mask = _setup()
    mems = [memory.detach(), torch.randn_like(memory.detach())]
    with torch.no_grad():
        refs = [_protocol_loop(lambda *a: _reference(lsa, *a), m, lsa.memory_layer(m),
                               hidden, mask) for m in mems]
    errors = []

    def run(i):
        try:
            with torch.no_grad():
                m = mems[i]
                pm = lsa.memory_layer(m)
                for _ in range(20):
                    _close(_protocol_loop(lsa, m, pm, hidden, mask), refs[i], f"thread {i}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_state_is_a_snapshot_of_the_parameters_at_start():
    lsa, memory, hidden, mask = _setup()
    with torch.no_grad():
        state = lsa.start(memory, key_padding_mask=mask)
        before = lsa.step(hidden[0], state)[:2]
        lsa.query_layer.linear_layer.weight.mul_(2.0)
        _close(lsa.step(hidden[0], state)[:2], before, "snapshot")  # documented
        fresh = lsa.step(hidden[0], lsa.start(memory, key_padding_mask=mask))[:2]
        pm = lsa.memory_layer(memory)
        _close(fresh, _reference(lsa, hidden[0], memory, pm, torch.zeros(B, 2, T), mask),
               "a new start sees the new weights")


# ------------------------------------------------------------------ bad input


def _bad_calls():
    lsa, memory, hidden, mask = _setup()
    pm = lsa.memory_layer(memory).detach()
    cat = torch.zeros(B, 2, T)
    h = hidden[0]
    return lsa, [
        ((h, memory, pm, torch.zeros(B, 1, T), mask), "attention_weights_cat must be"),
        ((h, memory, pm, torch.zeros(B, 3, T), mask), "attention_weights_cat must be"),
        ((h, memory, pm, torch.zeros(B, 2, T + 1), mask), r"attention_weights_cat .*\(3, 2, 12\)"),
        ((h, memory, pm[..., :-1], cat, mask), r"processed_memory must be .*attention_dim=16"),
        ((h, memory, pm[:2], cat, mask), r"processed_memory must be \(B=3"),
        ((h[:, :-1], memory, pm, cat, mask), "attention_hidden_state must be"),
        ((h, memory[..., :-1], pm, cat, mask), "memory must be"),
        ((h, memory, pm, cat, mask[:, :-1]), r"mask must be a bool tensor of shape \(B=3, T=11\)"),
        ((h, memory, pm, cat, mask.float()), "mask must be a bool tensor"),
        ((h, memory.double(), pm, cat, mask), "memory has dtype torch.float64"),
        ((h.tolist(), memory, pm, cat, mask), "attention_hidden_state must be a torch.Tensor"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_protocol_bad_input_names_the_argument(case):
    lsa, calls = _bad_calls()
    args, match = calls[case]
    with pytest.raises((ValueError, TypeError), match=match):
        lsa(*args)


def test_start_and_step_bad_input():
    lsa, memory, hidden, mask = _setup()
    with pytest.raises(ValueError, match="memory must be"):
        lsa.start(memory[..., :-1])
    with pytest.raises(ValueError, match="processed_memory must be"):
        lsa.start(memory, processed_memory=torch.zeros(B, T, 3))
    state = lsa.start(memory)
    with pytest.raises(ValueError, match=r"attention_hidden_state must be \(B=3"):
        lsa.step(hidden[0][:2], state)
    with pytest.raises(TypeError, match="state must be a LocationState"):
        lsa.step(hidden[0], (memory,))
    layer = attnkern.AdditiveAttention(6, 5, 8)
    with pytest.raises(ValueError, match="values must be"):
        layer.start(torch.randn(2, 4, 5), torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="state must be an AdditiveState"):
        layer.step(torch.randn(2, 6), state)


@pytest.mark.parametrize("cls", [attnkern.LocationSensitiveAttention,
                                 attnkern.TorchaudioAttention], ids=lambda c: c.__name__)
def test_even_location_kernel_rejected_at_construction(cls):
    with pytest.raises(ValueError, match="attention_location_kernel_size must be odd"):
        cls(10, 12, 16, 4, 6)
    with pytest.raises(ValueError, match="must be a positive int"):
        cls(10, 12, 0, 4, 5)


def test_project_keys_plus_a_term_says_what_to_do():
    layer = attnkern.AdditiveAttention(6, 5, 8)
    prepared = layer.project_keys(torch.randn(2, 4, 5))
    term = torch.randn(2, 4, 8)
    keys = prepared.key + term  # documented: add to .key
    assert keys.shape == (2, 4, 8)
    with pytest.raises(TypeError, match=r"add it to \.key"):
        prepared + term
    with pytest.raises(TypeError, match=r"add it to \.key"):
        term + prepared


# ------------------------------------------------------------------ torchaudio, tutorial


def _torchaudio_attention():
    import toolkits

    return toolkits.torchaudio_tacotron2()  # skips where torchaudio is not installed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchaudio_attention_drop_in(dtype):
    ta = _torchaudio_attention()
    torch.manual_seed(5)
    real = ta._Attention(*ARGS).to(dtype)
    model = torch.nn.Sequential(copy.deepcopy(real))
    report = attnkern.replace_attention(model)
    assert report == [("0", ta._Attention, attnkern.TorchaudioAttention)]
    ours = model[0]
    assert attnkern.from_module(real).state_dict().keys() == real.state_dict().keys()
    ours.load_state_dict(real.state_dict(), strict=True)
    real.load_state_dict(ours.state_dict(), strict=True)
    memory = torch.randn(B, T, ARGS[1], dtype=dtype, requires_grad=True)
    hidden = torch.randn(STEPS, B, ARGS[0], dtype=dtype, requires_grad=True)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[2, 4:] = True
    outs = {}
    for name, mod in (("real", real), ("ours", ours)):
        o = _protocol_loop(mod, memory, mod.memory_layer(memory), hidden, mask)
        outs[name] = (o, _grads(o, [memory, hidden, *mod.parameters()]))
    tol = {} if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    for a, b in zip(outs["ours"][0] + list(outs["ours"][1]),
                    outs["real"][0] + list(outs["real"][1])):
        torch.testing.assert_close(a, b, **(tol or dict(atol=1e-5, rtol=1e-5)))


def test_tutorial_and_nvidia_layouts_convert():
    class BahdanauAttention(torch.nn.Module):  # the tutorial's, as users copy it
        def __init__(self, hidden_size):
            super().__init__()
            self.Wa = torch.nn.Linear(hidden_size, hidden_size)
            self.Ua = torch.nn.Linear(hidden_size, hidden_size)
            self.Va = torch.nn.Linear(hidden_size, 1)

        def forward(self, query, keys):
            scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
            scores = scores.squeeze(2).unsqueeze(1)
            weights = torch.softmax(scores, dim=-1)
            return torch.bmm(weights, keys), weights

    torch.manual_seed(6)
    real = BahdanauAttention(8)
    ours = attnkern.from_module(real)
    assert isinstance(ours, attnkern.BahdanauAttention)
    real.load_state_dict(ours.state_dict(), strict=True)
    keys = torch.randn(3, 7, 8, requires_grad=True)
    qs = torch.randn(4, 3, 1, 8, requires_grad=True)
    res = {}
    for name, mod in (("real", real), ("ours", ours)):
        outs = [o for q in qs for o in mod(q, keys)]
        res[name] = outs + list(_grads(outs, [keys, qs, mod.Wa.weight, mod.Ua.weight,
                                              mod.Wa.bias, mod.Ua.bias, mod.Va.weight]))
    _close(res["ours"], res["real"], "tutorial")

    lsa = attnkern.LocationSensitiveAttention(*ARGS)
    nvidia = type("Attention", (torch.nn.Module,), {"__module__": "model"})()
    for name, child in lsa.named_children():
        nvidia.add_module(name, copy.deepcopy(child))
    converted = attnkern.from_module(nvidia)
    assert type(converted) is attnkern.LocationSensitiveAttention
    other = type("Attention", (torch.nn.Module,), {"__module__": "model"})()  # not tacotron2's
    assert attnkern.replace_attention(torch.nn.Sequential(other)) == []
    with pytest.raises(TypeError, match="not a supported attention module"):
        attnkern.from_module(other)


def test_onnx_step_with_the_state_in_and_out(tmp_path):
    """The per-step graph with the state as inputs and outputs (the decoder_iter.onnx
    contract): onnxruntime's step equals PyTorch's."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    lsa, memory, hidden, mask = _setup()

    with torch.no_grad():
        state = lsa.start(memory.detach(), key_padding_mask=mask)
        _, _, state = lsa.step(hidden[0].detach(), state)  # non-zero previous weights
        path = tmp_path / "step.onnx"
        torch.onnx.export(Step(lsa).eval(), (hidden[1].detach(), state), path, dynamo=True)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [hidden[1].detach(), *pytree.tree_leaves(state)]
        feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
        got = [torch.from_numpy(a) for a in session.run(None, feeds)]
        c, w, new = lsa.step(hidden[1].detach(), state)
    want = [c, w, *pytree.tree_leaves(new)]
    assert len(got) == len(want)
    _close(got, want, "onnxruntime step")


def test_prepared_field_cleared_when_its_source_is_replaced():
    # a key's exp(2k) must never outlive the keys it was made from: replace(keys=...) alone
    # clears it (the op then works from the new keys), with both given it is kept
    torch.manual_seed(0)
    layer = attnkern.MonotonicAttention(6, 5, 4)
    memory, other = torch.randn(2, 7, 5), torch.randn(2, 7, 5)
    query = torch.randn(2, 6)
    state = layer.start(memory)
    assert state.key_exp is not None
    fresh = layer.start(other)
    swapped = state.replace(keys=fresh.keys)
    assert swapped.key_exp is None
    kept = state.replace(keys=fresh.keys, key_exp=fresh.key_exp)
    assert kept.key_exp is fresh.key_exp
    assert state.replace(alignment=state.alignment * 1).key_exp is state.key_exp
    # the step on the swapped keys is the step of a state started on them
    c_swap, a_swap, _ = layer.step(query, swapped.replace(values=fresh.values))
    c_ref, a_ref, _ = layer.step(query, fresh)
    torch.testing.assert_close(a_swap, a_ref)
    torch.testing.assert_close(c_swap, c_ref)
    # the same rule on a state held at the source rows (AdditiveState)
    add = attnkern.AdditiveAttention(6, 5, 4)
    st = add.start(memory, memory)
    if st.keys_exp is not None:
        assert st.replace(projected_keys=st.projected_keys * 2).keys_exp is None


def test_prepared_field_must_name_a_field():
    from attnkern.state import DecodingState, prepared, register

    with pytest.raises(TypeError, match="prepared from 'nope'"):
        @register
        @dataclasses.dataclass(frozen=True)
        class Bad(DecodingState):
            keys: torch.Tensor
            key_exp: torch.Tensor | None = prepared("nope")


# ------------------------------------------------ CUDA: a captured loop (GPU CI, issue 23)

def _cuda_setup():
    torch.manual_seed(0)
    lsa = attnkern.LocationSensitiveAttention(*ARGS).cuda()  # backend auto: Triton on CUDA
    g = torch.Generator(device="cuda").manual_seed(1)
    memory = torch.randn(B, T, ARGS[1], device="cuda", generator=g)
    hidden = torch.randn(STEPS, B, ARGS[0], device="cuda", generator=g)
    mask = torch.zeros(B, T, dtype=torch.bool, device="cuda")
    mask[1, 7:] = True
    return lsa, memory, hidden, mask


@pytest.mark.gpu
def test_cuda_graph_replays_a_whole_decode_loop_with_the_state():
    # start + STEPS steps captured as one graph; replays with new inputs equal eager, and a
    # .data edit of a weight between replays is seen (the graph reads the parameters, the
    # state is rebuilt inside it: nothing cached can go stale).
    lsa, memory, hidden, mask = _cuda_setup()
    static_hidden = hidden.clone()
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):  # Triton compiles and autotunes outside the capture
                _state_loop(lsa, memory, static_hidden, mask)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = _state_loop(lsa, memory, static_hidden, mask)
        for seed in range(3):
            new = torch.randn(hidden.shape, device="cuda",
                              generator=torch.Generator(device="cuda").manual_seed(10 + seed))
            if seed == 2:
                lsa.memory_layer.linear_layer.weight.data.mul_(0.5)
                lsa.location_layer.location_dense.linear_layer.weight.data.mul_(-1.0)
            static_hidden.copy_(new)
            graph.replay()
            _close(static_out, _state_loop(lsa, memory, new, mask), f"replay {seed}")


@pytest.mark.gpu
def test_reduce_overhead_compiled_step_on_cuda():
    lsa, memory, hidden, mask = _cuda_setup()
    compiled = torch.compile(lsa.step, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        ref = _state_loop(lsa, memory, hidden, mask)
        for _ in range(2):  # the first pass records the graphs, the second replays them
            state = lsa.start(memory, key_padding_mask=mask)
            outs = []
            for h in hidden:
                torch.compiler.cudagraph_mark_step_begin()
                context, weights, state = compiled(h, state)
                outs += (context.clone(), weights.clone())  # the next replay reuses them
    for i, (x, y) in enumerate(zip(outs, ref)):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4, msg=lambda m, i=i: f"{i}: {m}")
