"""AdditiveAttention: parameters, project_keys path, normalize, weights output, training."""

import pytest
import torch

import attnkern
from attnkern import ops

BACKENDS = ["reference"] + (["cpp"] if ops.HAS_CPP else [])


def make_layer(backend, **kw):
    torch.manual_seed(0)
    return attnkern.AdditiveAttention(6, 5, 8, backend=backend, **kw)


def test_parameters_and_repr():
    layer = make_layer("reference")
    names = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert names == {"v": (8,), "query_proj.weight": (8, 6), "query_proj.bias": (8,),
                     "key_proj.weight": (8, 5)}
    assert "query_dim=6" in repr(layer) and "hidden_dim=8" in repr(layer)
    nb = attnkern.AdditiveAttention(6, 5, 8, bias=False)
    assert nb.query_proj.bias is None
    nl = attnkern.AdditiveAttention(6, 5, 8, bias=False, normalize=True)
    assert nl.query_proj.bias is not None and nl.g is not None
    torch.testing.assert_close(nl.score_vector().norm(), nl.g.abs())


def test_state_dict_round_trip():
    a = make_layer("reference", normalize=True)
    b = attnkern.AdditiveAttention(6, 5, 8, normalize=True)
    b.load_state_dict(a.state_dict())
    q, keys = torch.randn(2, 3, 6), torch.randn(2, 4, 5)
    torch.testing.assert_close(a(q, keys)[0], b(q, keys)[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", [False, True])
def test_layer_matches_manual_formula(backend, normalize):
    layer = make_layer(backend, normalize=normalize).double()
    q = torch.randn(3, 4, 6, dtype=torch.float64)
    keys = torch.randn(3, 7, 5, dtype=torch.float64)
    values = torch.randn(3, 7, 2, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1])
    ctx, wts = layer(q, keys, values, key_lengths=lengths, need_weights=True)
    qp = q @ layer.query_proj.weight.T + layer.query_proj.bias
    kp = keys @ layer.key_proj.weight.T
    v = layer.v if not normalize else layer.g * layer.v / layer.v.norm()
    e = (torch.tanh(qp[:, :, None] + kp[:, None]) * v).sum(-1)
    e = e.masked_fill(torch.arange(7)[None, None] >= lengths[:, None, None], float("-inf"))
    alpha = e.softmax(-1)
    torch.testing.assert_close(wts, alpha)
    torch.testing.assert_close(ctx, alpha @ values)


@pytest.mark.parametrize("backend", BACKENDS)
def test_project_keys_path_equals_plain_path_and_step_mode(backend):
    layer = make_layer(backend)
    q, keys = torch.randn(2, 6), torch.randn(2, 9, 5)
    plain, w1 = layer(q, keys, need_weights=True)
    pk = layer.project_keys(keys)
    fast, w2 = layer(q, None, keys, projected_keys=pk, need_weights=True)
    assert plain.shape == (2, 5) and w1.shape == (2, 9)
    torch.testing.assert_close(plain, fast)
    torch.testing.assert_close(w1, w2)
    ctx, none = layer(q, keys)
    assert none is None
    torch.testing.assert_close(ctx, plain)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_reach_every_parameter(backend):
    layer = make_layer(backend, normalize=True)
    q = torch.randn(2, 3, 6, requires_grad=True)
    keys = torch.randn(2, 4, 5, requires_grad=True)
    ctx, _ = layer(q, keys)
    ctx.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert q.grad.abs().sum() > 0 and keys.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_training_loop_loss_decreases(backend):
    # Learn to copy the value at a position given by the query (needs sharp attention).
    torch.manual_seed(0)
    T, D = 6, 8
    layer = attnkern.AdditiveAttention(T, D, 16, backend=backend)
    pos = torch.nn.Embedding(T, D)
    opt = torch.optim.Adam([*layer.parameters(), *pos.parameters()], lr=3e-2)
    losses = []
    for _ in range(100):
        values = torch.randn(16, T, D)
        target_pos = torch.randint(0, T, (16,))
        keys = pos.weight[None].expand(16, T, D)
        q = torch.nn.functional.one_hot(target_pos, T).float()
        ctx, _ = layer(q, keys, values)
        loss = (ctx - values[torch.arange(16), target_pos]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="hidden_dim"):
        attnkern.AdditiveAttention(4, 4, 0)
    with pytest.raises(ValueError, match="backend"):
        attnkern.AdditiveAttention(4, 4, 4, backend="cuda")
    layer = attnkern.AdditiveAttention(4, 3, 5)
    with pytest.raises(ValueError, match=r"query_dim=4.*\(2, 7\)"):
        layer(torch.randn(2, 7), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"key_dim=3.*\(2, 5, 4\)"):
        layer(torch.randn(2, 4), torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="query"):
        layer([1.0, 2.0], torch.randn(2, 5, 3))


def test_project_keys_returns_prepared_keys_and_gradients_reach_key_proj():
    layer = make_layer("cpp" if ops.HAS_CPP else "reference")
    keys = torch.randn(2, 9, 5, requires_grad=True)
    pk = layer.project_keys(keys)
    assert isinstance(pk, attnkern.PreparedKeys) and pk.shape == (2, 9, 8)
    torch.testing.assert_close(pk.key, layer.key_proj(keys))
    ctx, _ = layer(torch.randn(2, 6), None, keys, projected_keys=pk)
    ctx.sum().backward()
    assert layer.key_proj.weight.grad.abs().sum() > 0 and keys.grad.abs().sum() > 0
    # a plain projected tensor is accepted too
    ctx2, _ = layer(torch.randn(2, 6), None, keys, projected_keys=pk.key)
    assert ctx2.shape == (2, 5)


def test_load_state_dict_accepts_v_as_linear_weight():
    a = make_layer("reference")
    sd = dict(a.state_dict())
    sd["v"] = sd["v"][None]  # (1, H), as nn.Linear(H, 1).weight
    b = attnkern.AdditiveAttention(6, 5, 8)
    b.load_state_dict(sd, strict=True)
    assert b.v.shape == (8,)
    torch.testing.assert_close(b.v, a.v)
