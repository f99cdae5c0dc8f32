"""Decoder-step machinery of LocationSensitiveAttention: the location-window ops (C++ im2col
and its adjoint), the fused backward without a value gradient, and the weight-gradient
stores of step-invariant operands (one GEMM per sequence, attnkern/state.py), including
what can go wrong with them: several backward passes, retained graphs, partial
torch.autograd.grad, in-place updates, optimizer steps, copies, hooks and torch.compile.
Everything through public behaviour (outputs and gradients against plain autograd).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from helpers import make_inputs

import attnkern
from attnkern import ops

pytestmark = pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")


def _windows_reference(x, kernel, pad, taps):
    """The standard-ops chain the op replaces (and the module's non-CPU path)."""
    B, C, T = x.shape
    if T == 0:
        return x.new_zeros(0, C * taps)
    w = F.pad(x, (pad, kernel - 1 - pad)).unfold(2, kernel, 1)  # (B, C, T, kernel)
    w = F.pad(w.permute(0, 2, 1, 3), (0, taps - kernel))
    return w.reshape(B * T, C * taps)


GEOMETRIES = [  # (B, C, T, kernel, pad, taps)
    (8, 2, 120, 31, 15, 32), (3, 2, 11, 5, 2, 8), (2, 3, 4, 7, 3, 7), (1, 1, 1, 1, 0, 1),
    (2, 2, 6, 4, 0, 5), (2, 2, 6, 4, 3, 4), (0, 2, 5, 3, 1, 4), (2, 2, 0, 3, 1, 4),
]


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: "B{}-C{}-T{}-k{}-p{}-taps{}".format(*g))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_location_windows_match_standard_ops(geo, dtype):
    B, C, T, kernel, pad, taps = geo
    x = torch.randn(B, C, T, dtype=dtype, requires_grad=True)
    got = ops.location_windows(x, kernel, pad, taps)
    want = _windows_reference(x, kernel, pad, taps)
    torch.testing.assert_close(got, want, atol=0, rtol=0)  # a copy: exact
    g = torch.randn(want.shape, dtype=dtype)
    (dx,) = torch.autograd.grad(got, x, g) if got.numel() else (torch.zeros_like(x),)
    # the adjoint against float64 standard ops (bfloat16: the op sums in float32)
    x64 = x.detach().double().requires_grad_()
    want64 = _windows_reference(x64, kernel, pad, taps)
    (dx_ref,) = (torch.autograd.grad(want64, x64, g.double()) if want64.numel()
                 else (torch.zeros_like(x64),))
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(dx.double(), dx_ref, atol=tol, rtol=tol)


def test_location_windows_non_contiguous_and_gradcheck():
    x = torch.randn(3, 9, 2, dtype=torch.float64).transpose(1, 2).requires_grad_()
    torch.testing.assert_close(ops.location_windows(x, 5, 2, 6),
                               _windows_reference(x, 5, 2, 6), atol=0, rtol=0)
    assert torch.autograd.gradcheck(lambda t: ops.location_windows(t, 5, 2, 6), (x,))


def test_location_windows_opcheck():
    x = torch.randn(2, 2, 7, requires_grad=True)
    torch.library.opcheck(ops.location_windows, (x, 3, 1, 4))
    torch.library.opcheck(torch.ops.attnkern.location_windows_backward.default,
                          (torch.randn(14, 8), [2, 2, 7], 3, 1, 4))


@pytest.mark.parametrize("args, match", [
    ((torch.randn(2, 7), 3, 1, 4), "x must be 3-D"),
    ((torch.randn(2, 2, 7), 0, 0, 4), "kernel must be >= 1"),
    ((torch.randn(2, 2, 7), 3, 3, 4), "pad must be in"),
    ((torch.randn(2, 2, 7), 3, 1, 2), "taps must be >= kernel"),
    ((torch.ones(2, 2, 7, dtype=torch.int64), 3, 1, 4), "floating"),
])
def test_location_windows_bad_input(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ops.location_windows(*args)


def test_location_windows_backward_bad_grad_shape():
    with pytest.raises(ValueError, match=r"grad must be \(B \* T, C \* taps\)"):
        torch.ops.attnkern.location_windows_backward(torch.randn(13, 8), [2, 2, 7], 3, 1, 4)


@pytest.mark.parametrize("step", [True, False])
def test_bwd_without_value_grad_same_other_grads(step):
    q, k, v, w = make_inputs(3, 5, 70, 16, 9, step=step, requires_grad=False)
    out, lse, wts = ops.fwd(q, k, v, w, None, None, False, True, None)
    gout = torch.randn(out.shape)
    args = (gout, None, q, k, v, w, out, lse, None, None, False, None, wts)
    full = ops.bwd(*args)
    part = ops.bwd(*args, value_grad=False)
    assert part[2].shape == (0,)
    for a, b in zip((full[0], full[1], full[3]), (part[0], part[1], part[3])):
        assert torch.equal(a, b)
    torch.library.opcheck(ops.bwd, args, {"value_grad": False})


def test_fused_op_skips_value_grad_when_value_needs_none():
    q, k, v, w = make_inputs(2, 1, 9, 8, 5, step=True)
    v.requires_grad_(False)
    out = attnkern.additive_attention(q, k, v, w, backend="cpp")
    out.sum().backward()
    assert v.grad is None and q.grad is not None and k.grad is not None


# ------------------------------------------------------------ step-invariant operands

ARGS = (10, 12, 16, 4, 5)  # attention_rnn_dim, embedding_dim, attention_dim, filters, kernel
B, T, STEPS = 3, 11, 5


class _Original(torch.nn.Module):
    """The same math as plain autograd sees it (no step-invariant operands): the module's
    own layers called one by one."""

    def __init__(self, lsa):
        super().__init__()
        self.lsa = lsa

    def forward(self, h, memory, pm, cat, mask):
        lsa = self.lsa
        query = lsa.query_layer(h)
        keys = pm + lsa.location_layer(cat)
        return attnkern.reference.additive_attention(
            query, keys, memory, lsa.v.linear_layer.weight, key_padding_mask=mask,
            return_weights=True)


def _loop(mod, memory, hidden, mask, steps=STEPS):
    pm = mod.lsa.memory_layer(memory) if isinstance(mod, _Original) else mod.memory_layer(memory)
    weights = memory.new_zeros(B, T)
    cum = memory.new_zeros(B, T)
    outs = []
    for h in hidden[:steps]:
        cat = torch.stack((weights, cum), 1)
        context, weights = mod(h, memory, pm, cat, mask)
        cum = cum + weights
        outs += (context, weights)
    return outs


def _setup(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    lsa = attnkern.LocationSensitiveAttention(*ARGS, backend="cpp").to(dtype)
    memory = torch.randn(B, T, ARGS[1], dtype=dtype, requires_grad=True)
    hidden = torch.randn(STEPS, B, ARGS[0], dtype=dtype, requires_grad=True)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 7:] = True
    return lsa, memory, hidden, mask


def _outputs(mod, memory, hidden, mask, seed=1):
    """The loop's outputs and a random cotangent for each."""
    outs = _loop(mod, memory, hidden, mask)
    g = torch.Generator().manual_seed(seed)
    return outs, [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]


def _grads(mod, memory, hidden, mask, **kw):
    outs, cot = _outputs(mod, memory, hidden, mask)
    return torch.autograd.grad(outs, [memory, hidden, *mod.parameters()], cot, **kw), outs, cot


def _close(a, b, what=""):
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5,
                                   msg=lambda m, i=i: f"{what} {i}: {m}")


def test_deferred_gradients_equal_plain_autograd_twice():
    lsa, memory, hidden, mask = _setup()
    ref, _, _ = _grads(_Original(lsa), memory, hidden, mask)
    got1, _, _ = _grads(lsa, memory, hidden, mask)
    got2, _, _ = _grads(lsa, memory, hidden, mask)  # same module, params, memory: new sinks
    _close(got1, ref, "first pass")
    _close(got2, ref, "second pass")


def test_deferred_gradients_float64_gradcheck_over_steps():
    lsa, memory, hidden, mask = _setup(dtype=torch.float64)

    def fn(memory, hidden):
        return tuple(_loop(lsa, memory, hidden, mask, steps=3))

    assert torch.autograd.gradcheck(fn, (memory, hidden[:3].detach().requires_grad_()))


def test_retain_graph_backward_twice_doubles():
    lsa, memory, hidden, mask = _setup()
    ref, _, _ = _grads(_Original(lsa), memory, hidden, mask)
    outs, cot = _outputs(lsa, memory, hidden, mask)
    torch.autograd.backward(outs, cot, retain_graph=True)
    torch.autograd.backward(outs, cot)
    _close([memory.grad, hidden.grad], [2 * ref[0], 2 * ref[1]], "retained")
    for p, r in zip(lsa.parameters(), ref[2:]):
        torch.testing.assert_close(p.grad, 2 * r, atol=1e-5, rtol=1e-5)


def test_partial_autograd_grad_leaves_nothing_behind():
    lsa, memory, hidden, mask = _setup()
    ref, _, _ = _grads(_Original(lsa), memory, hidden, mask)
    outs, cot = _outputs(lsa, memory, hidden, mask)
    # a pass that stops short of memory and the weights (their sinks do not run) ...
    (dh,) = torch.autograd.grad(outs, [hidden], cot, retain_graph=True)
    torch.testing.assert_close(dh, ref[1], atol=1e-5, rtol=1e-5)
    # ... leaves no stale steps for the full pass
    torch.autograd.backward(outs, cot)
    _close([memory.grad, hidden.grad], ref[:2], "after partial")
    _close([p.grad for p in lsa.parameters()], ref[2:], "params after partial")


def test_memory_changed_in_place_between_steps_reads_the_new_values():
    lsa, memory, hidden, mask = _setup()
    m1 = memory * 1.0  # non-leaf memory, updated in place between the two utterance halves
    pm = lsa.memory_layer(m1).detach()
    cat = torch.rand(B, 2, T)
    c1, _ = lsa(hidden[0], m1, pm, cat, mask)
    with torch.no_grad():
        m1.mul_(2.0)  # bumps the version: the next call starts a new store
    c2, w2 = lsa(hidden[1], m1, pm, cat, mask)
    ref, _ = _Original(lsa)(hidden[1], m1, pm, cat, mask)
    torch.testing.assert_close(c2, ref, atol=1e-5, rtol=1e-5)
    # the second half's gradient reaches memory through its own store (m1 = memory * 1:
    # the no_grad doubling is no graph op), though the first half's
    # saved values changed, as for any autograd graph; its store needs none of them)
    (g,) = torch.autograd.grad(c2.sum(), [memory])
    torch.testing.assert_close(g, w2.detach()[:, :, None].expand_as(memory), atol=1e-5,
                               rtol=1e-5)
    assert torch.isfinite(c1).all()


def test_optimizer_steps_between_utterances():
    lsa, memory, hidden, mask = _setup()
    twin = copy.deepcopy(lsa)
    opt_a = torch.optim.SGD(lsa.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(twin.parameters(), lr=0.1)
    for it in range(3):
        for mod, opt in ((lsa, opt_a), (_Original(twin), opt_b)):
            opt.zero_grad()
            outs = _loop(mod, memory, hidden, mask)
            sum(o.square().sum() for o in outs).backward()
            opt.step()
        for p, q in zip(lsa.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5, msg=f"iteration {it}")


def test_no_store_without_grad_or_off_plain_float_cpu():
    from attnkern.state import weight_grad_store

    lsa, memory, hidden, mask = _setup()
    with torch.no_grad():
        assert weight_grad_store(memory) is None
    assert weight_grad_store(memory.detach()) is None
    assert weight_grad_store(memory) is not None
    assert weight_grad_store(memory.to(torch.bfloat16)) is None
    with torch.no_grad():
        assert lsa.start(memory).grad_store_memory is None


def test_copies_and_pickles_give_the_same_results():
    lsa, memory, hidden, mask = _setup()
    ref, ref_outs, _ = _grads(_Original(lsa), memory, hidden, mask)
    _loop(lsa, memory, hidden, mask)  # the module has made (and holds) a state
    for other in (copy.deepcopy(lsa), pickle.loads(pickle.dumps(lsa))):
        got, outs, _ = _grads(other, memory, hidden, mask)
        _close(outs, ref_outs, "copy outputs")
        _close(got[:2], ref[:2], "copy input grads")
        _close(got[2:], ref[2:], "copy parameter grads")


def test_query_layer_hooks_still_run():
    lsa, memory, hidden, mask = _setup()
    seen = []
    handle = lsa.query_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    ref, _, _ = _grads(_Original(lsa), memory, hidden, mask)
    seen.clear()
    got, _, _ = _grads(lsa, memory, hidden, mask)
    handle.remove()
    assert len(seen) == STEPS
    _close(got, ref, "with hooks")


def test_compiled_module_matches_eager():
    lsa, memory, hidden, mask = _setup()
    ref, ref_outs, _ = _grads(_Original(lsa), memory, hidden, mask)
    step = torch.compile(lsa, fullgraph=True, backend="aot_eager")
    got, outs, _ = _grads(step, memory, hidden, mask)
    _close(outs, ref_outs, "compiled outputs")
    _close(got, ref, "compiled grads")


def test_store_keeps_other_passes_records_apart():
    memory = torch.randn(2, 3, 4, requires_grad=True)
    token = torch.ops.attnkern.wgrad_store(memory, False)
    y, p = torch.randn(2, 4, requires_grad=True), torch.rand(2, 3)
    out = torch.ops.attnkern.wgrad_record(y, p, token)
    (gy,) = torch.autograd.grad(out.sum(), [y], retain_graph=True)  # stops short of memory
    assert torch.equal(gy, torch.ones(2, 4))
    (gm,) = torch.autograd.grad(out.sum(), [memory])  # a new pass: only its own record
    torch.testing.assert_close(gm, p[:, :, None].expand(2, 3, 4))  # p^T dy, dy = ones


def test_step_ops_check_their_inputs():
    with pytest.raises(RuntimeError, match="token must be the output of attnkern::wgrad_store"):
        torch.ops.attnkern.wgrad_record(torch.randn(2, 4), torch.rand(2, 3), torch.empty(0))
    token = torch.ops.attnkern.wgrad_store(torch.randn(4, 5, requires_grad=True), True)
    with pytest.raises(RuntimeError, match="wgrad_record_linear: x"):
        torch.ops.attnkern.wgrad_record_linear(torch.randn(2, 3), torch.randn(4, 5),
                                       torch.randn(5, 4), token)
    with pytest.raises(RuntimeError, match="2-D .* or 3-D"):
        torch.ops.attnkern.wgrad_store(torch.randn(4, requires_grad=True), False)


# ------------------------------------------- AdditiveAttention called with the same keys

def _layer_loop(layer, queries, keys):
    outs = []
    for q in queries:
        outs += layer(q, keys, need_weights=True)
    return outs


def _layer_setup():
    torch.manual_seed(4)
    layer = attnkern.AdditiveAttention(6, 5, 8, backend="cpp")
    keys = torch.randn(3, 7, 5, requires_grad=True)
    queries = torch.randn(4, 3, 6, requires_grad=True)
    return layer, keys, queries


def _layer_grads(layer, keys, queries, fresh=False):
    if fresh:  # the uncached computation: a projection per call
        outs = []
        for q in queries:
            outs += layer(q, None, keys, projected_keys=layer.key_proj(keys), need_weights=True)
    else:
        outs = _layer_loop(layer, queries, keys)
    g = torch.Generator().manual_seed(2)
    cot = [torch.randn(o.shape, generator=g) for o in outs]
    return torch.autograd.grad(outs, [keys, queries, *layer.parameters()], cot)


def test_layer_called_with_the_same_keys_grads_match_twice():
    layer, keys, queries = _layer_setup()
    ref = _layer_grads(layer, keys, queries, fresh=True)
    for _ in range(2):  # twice: the first pass reached the kept projection, so re-project
        _close(_layer_grads(layer, keys, queries), ref, "kept projection")


def _fresh(layer, q, keys):
    return layer(q, None, keys, projected_keys=layer.key_proj(keys), need_weights=True)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_layer_follows_every_change_of_keys_and_weights(grad):
    layer, keys, queries = _layer_setup()
    with torch.set_grad_enabled(grad):
        edits = [
            lambda: layer.key_proj.weight.data.mul_(0.5),  # no version counter sees it
            lambda: keys.data.mul_(2.0),
            lambda: layer.key_proj.weight.data.copy_(torch.randn(8, 5)),
        ]
        for i, edit in enumerate(edits):
            layer(queries[0], keys)
            layer(queries[1], keys)  # kept and prepared
            edit()
            got = layer(queries[2], keys, need_weights=True)
            _close(got, _fresh(layer, queries[2], keys), f".data edit {i}")
        with torch.no_grad():
            layer.key_proj.weight.add_(0.1)  # an optimizer step
        _close(layer(queries[0], keys, need_weights=True), _fresh(layer, queries[0], keys),
               "optimizer step")
        other = keys.detach().clone().mul_(3).requires_grad_()
        _close(layer(queries[0], other, need_weights=True), _fresh(layer, queries[0], other),
               "other keys")


def test_layer_two_threads_two_sequences_no_cross_talk():
    import threading

    layer, keys, queries = _layer_setup()
    other = torch.randn_like(keys)
    with torch.no_grad():
        refs = {id(k): [_fresh(layer, q, k) for q in queries] for k in (keys, other)}
    errors = []

    def run(k):
        try:
            with torch.no_grad():
                for _ in range(30):
                    for q, r in zip(queries, refs[id(k)]):
                        _close(layer(q, k, need_weights=True), r, "thread")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in (keys, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_layer_key_proj_hooks_disable_the_cache():
    layer, keys, queries = _layer_setup()
    calls = []
    layer.key_proj.register_forward_hook(lambda m, i, o: calls.append(1))
    _layer_loop(layer, queries, keys)
    assert len(calls) == len(queries)


def test_inference_steps_follow_weight_updates_and_hooks():
    lsa, memory, hidden, mask = _setup()
    ref_mod = _Original(lsa)
    with torch.no_grad():
        a = _loop(lsa, memory, hidden, mask)
        _close(a, _loop(ref_mod, memory, hidden, mask), "no_grad")
        lsa.query_layer.linear_layer.weight.mul_(0.5)  # the cached W_q^T must follow
        _close(_loop(lsa, memory, hidden, mask), _loop(ref_mod, memory, hidden, mask),
               "after an in-place update")
        seen = []
        handle = lsa.query_layer.register_forward_hook(lambda m, i, o: seen.append(1))
        _loop(lsa, memory, hidden, mask)
        handle.remove()
    assert len(seen) == STEPS


def test_a_backward_pass_between_steps_then_more_steps():
    lsa, memory, hidden, mask = _setup()
    pm = lsa.memory_layer(memory).detach()
    cat = torch.rand(B, 2, T)
    c1, _ = lsa(hidden[0], memory, pm, cat, mask)
    c1.sum().backward()  # frees the steps' graph: the next call prepares anew
    first = memory.grad.clone()
    memory.grad = None
    c2, _ = lsa(hidden[0], memory, pm, cat, mask)  # c1 still alive
    c2.sum().backward()
    torch.testing.assert_close(memory.grad, first, atol=1e-6, rtol=1e-6)


def test_parameter_caches_are_rebuilt_for_each_utterance():
    lsa, memory, hidden, mask = _setup()
    ref_mod = _Original(lsa)
    with torch.no_grad():
        _loop(lsa, memory, hidden, mask)
        # an edit no version counter sees, between two utterances
        lsa.location_layer.location_dense.linear_layer.weight.data.mul_(0.5)
        lsa.query_layer.linear_layer.weight.data.mul_(0.5)
        other = memory.clone()  # the next utterance
        _close(_loop(lsa, other, hidden, mask), _loop(ref_mod, other, hidden, mask),
               "next utterance")


def test_deferred_linear_weight_with_rows_of_any_shape():
    weight = torch.randn(4, 5, requires_grad=True)
    token = torch.ops.attnkern.wgrad_store(weight, True)
    x = torch.randn(2, 3, 5, requires_grad=True)
    w = weight.detach()
    y = torch.ops.attnkern.wgrad_record_linear(x, w, w.t().contiguous(), token)
    g = torch.randn(2, 3, 4)
    dx, dw = torch.autograd.grad(y, [x, weight], g)
    ref_dx, ref_dw = torch.autograd.grad(torch.nn.functional.linear(x, weight), [x, weight], g)
    torch.testing.assert_close(dx, ref_dx)
    torch.testing.assert_close(dw, ref_dw)


@pytest.mark.parametrize("where", ["query", "dense", "conv"])
def test_parametrized_weights_are_read_through_the_parametrization(where):
    # the modules read their weights live through each attribute path (attnkern._compat.
    # module_attr): a parametrized weight (weight_norm) is a property, not a registered
    # parameter, and must be computed, not bypassed
    from torch.nn.utils.parametrizations import weight_norm

    lsa, memory, hidden, mask = _setup()
    layer = {"query": lsa.query_layer.linear_layer,
             "dense": lsa.location_layer.location_dense.linear_layer,
             "conv": lsa.location_layer.location_conv.conv}[where]
    weight_norm(layer)
    with torch.no_grad():
        layer.parametrizations.weight.original0.mul_(1.5)  # the weight is no longer W
    ref, ref_outs, _ = _grads(_Original(lsa), memory, hidden, mask)
    got, outs, _ = _grads(lsa, memory, hidden, mask)
    _close(outs, ref_outs, f"{where} outputs")
    _close(got, ref, f"{where} grads")
    state = lsa.start(memory, key_padding_mask=mask)
    context, weights, _ = lsa.step(hidden[0], state)
    _close((context, weights), ref_outs[:2], f"{where} start/step")


def test_a_parameter_assigned_anew_is_the_one_used():
    lsa, memory, hidden, mask = _setup()
    with torch.no_grad():
        new = torch.nn.Parameter(lsa.query_layer.linear_layer.weight * -2.0)
    lsa.query_layer.linear_layer.weight = new
    ref, ref_outs, _ = _grads(_Original(lsa), memory, hidden, mask)
    got, outs, _ = _grads(lsa, memory, hidden, mask)
    _close(outs, ref_outs, "outputs")
    _close(got, ref, "grads")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_step_is_one_op_with_the_differentiable_steps_results(monkeypatch, dtype):
    """Under no_grad (and with nothing requiring grad) a step on CPU is one
    attnkern::location_attention call, for both protocols; with grad it is not. Results equal
    the differentiable step's and the original's."""
    lsa, memory, hidden, mask = _setup(dtype=dtype)
    calls = []
    real = ops.location_attention
    monkeypatch.setattr(ops, "location_attention",
                        lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        fused = _loop(lsa, memory, hidden, mask)
        state = lsa.start(memory, key_padding_mask=mask)
        stepped = []
        for h in hidden:
            c, w, state = lsa.step(h, state)
            stepped += (c, w)
        original = _loop(_Original(lsa), memory, hidden, mask)
    assert len(calls) == 2 * STEPS
    plain = _loop(lsa, memory, hidden, mask)  # grad mode: the differentiable path
    assert len(calls) == 2 * STEPS and plain[0].requires_grad
    for got in (fused, stepped):
        _close(got, plain, "fused vs differentiable")
        _close(got, original, "fused vs original")
    lsa.requires_grad_(False)
    frozen = _loop(lsa, memory.detach(), hidden.detach(), mask)  # nothing requires grad
    assert len(calls) == 3 * STEPS
    _close(frozen, plain, "frozen")


def test_inference_step_follows_every_data_edit():
    """The fused inference step reads the weights at each call: a .data edit of any of them
    shows at the next step."""
    lsa, memory, hidden, mask = _setup()
    ref_mod = _Original(lsa)
    with torch.no_grad():
        for p in (lsa.query_layer.linear_layer.weight, lsa.v.linear_layer.weight,
                  lsa.location_layer.location_conv.conv.weight,
                  lsa.location_layer.location_dense.linear_layer.weight):
            p.data.mul_(1.5)
            _close(_loop(lsa, memory, hidden, mask), _loop(ref_mod, memory, hidden, mask),
                   "after a .data edit")


def _keys_reference(base, x, filt, kernel, pad):
    B, C, T = x.shape
    windows = _windows_reference(x, kernel, pad, filt.shape[1] // C)
    return base + (windows @ filt.t()).view(B, T, -1)


@pytest.mark.parametrize("kind", ["none", "padding", "lengths", "both"])
def test_location_keys_skips_only_rows_past_each_end(kind):
    """attnkern::location_keys: the location term up to each batch's end of usable keys,
    base past it; the attention on them gives the full keys' results and gradients, and
    float64 gradcheck holds."""
    g = torch.Generator().manual_seed(5)
    B, C, T, A, kernel, pad = 4, 2, 21, 12, 7, 3
    base = torch.randn(B, T, A, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.rand(B, C, T, generator=g, dtype=torch.float64, requires_grad=True)
    filt = torch.randn(A, C * 8, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([21, 13, 0, 5]) if kind in ("lengths", "both") else None
    mask = None
    if kind in ("padding", "both"):
        mask = torch.arange(T)[None] >= torch.tensor([21, 17, 9, 21])[:, None]
        mask[0, 4] = mask[3, 20] = True  # a hole, and a tail of one
    ends = [21, 17, 9, 20] if mask is not None else [21] * 4
    if lengths is not None:
        ends = [min(e, int(n)) for e, n in zip(ends, lengths)]
    keys = ops.location_keys(base, x, filt, mask, lengths, kernel, pad)
    full = _keys_reference(base, x, filt, kernel, pad)
    for b, e in enumerate(ends):
        torch.testing.assert_close(keys[b, :e], full[b, :e], atol=1e-12, rtol=1e-12)
        assert torch.equal(keys[b, e:], base[b, e:])
    q = torch.randn(B, A, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, 5, generator=g, dtype=torch.float64)
    w = torch.randn(A, generator=g, dtype=torch.float64)

    def attend(k):
        return attnkern.additive_attention(q, k, v, w, key_padding_mask=mask, key_lengths=lengths,
                                           return_weights=True)
    got, want = attend(keys), attend(full)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    cot = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in got]
    ga = torch.autograd.grad(got, (base, x, filt), cot)
    gb = torch.autograd.grad(want, (base, x, filt), cot)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(
        lambda b_, x_, f_: ops.location_keys(b_, x_, f_, mask, lengths, kernel, pad),
        (base, x, filt))


def test_location_keys_checks_and_opcheck():
    base, x, filt = torch.randn(2, 9, 8), torch.rand(2, 2, 9), torch.randn(8, 16)
    torch.library.opcheck(ops.location_keys, (base.requires_grad_(), x, filt, None, None, 5, 2),
                          test_utils=("test_schema", "test_faketensor"))
    for args, match in (((base, x[:, :, :8], filt), r"x must be \(B, C, T\)"),
                        ((base, x, filt[:, :15]), r"filter must be \(A, C \* taps\)"),
                        ((base, x.double(), filt), "x must have base's dtype")):
        with pytest.raises((ValueError, TypeError), match=match):
            ops.location_keys(*args, None, None, 5, 2)
    with pytest.raises(ValueError, match="kernel must be >= 1 and pad in"):
        ops.location_keys(base, x, filt, None, None, 5, 5)
    with pytest.raises(TypeError, match="key_padding_mask must be a bool tensor"):
        ops.location_keys(base, x, filt, torch.zeros(2, 9), None, 5, 2)
    with pytest.raises(ValueError, match=r"key_lengths must lie in \[0, Tk=9\] \(base shape"):
        ops.location_keys(base, x, filt, None, torch.tensor([3, 10]), 5, 2)
