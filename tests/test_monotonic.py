"""Monotonic attention against a float64 recurrence written here, independently of the
package: q_ij = (1 - p_{i,j-1}) q_{i,j-1} + a_{i-1,j}, a_ij = p_ij q_ij."""

from __future__ import annotations

import math

import pytest
import torch

import attnkern
from attnkern import MonotonicAttention, monotonic_alignment
from attnkern.modules.monotonic import safe_cumprod


def recurrence(p: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """One step of the expected alignment, in Python floats (float64), item by item."""
    out = torch.zeros(p.shape, dtype=torch.float64)
    for b, (pb, ab) in enumerate(zip(p.double().tolist(), prev.double().tolist())):
        q = 0.0
        for j in range(len(pb)):
            q = ab[j] if j == 0 else (1.0 - pb[j - 1]) * q + ab[j]
            out[b, j] = pb[j] * q
    return out


def _prev(batch: int, steps: int, gen: torch.Generator, one_hot: bool = False) -> torch.Tensor:
    if one_hot:
        a = torch.zeros(batch, steps, dtype=torch.float64)
        a[:, 0] = 1
        return a
    return torch.softmax(3 * torch.randn(batch, steps, generator=gen, dtype=torch.float64), -1)


@pytest.mark.parametrize("steps", [1, 2, 7, 31])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["recursive", "parallel"])
def test_soft_modes_match_recurrence(mode: str, dtype: torch.dtype, steps: int) -> None:
    gen = torch.Generator().manual_seed(steps)
    batch = 3
    # p in [0.02, 0.35]: the exclusive cumprod of 1 - p stays above parallel mode's 1e-10
    # clip over 31 keys, where parallel is exact
    p = 0.02 + 0.33 * torch.rand(batch, steps, generator=gen, dtype=torch.float64)
    prev = _prev(batch, steps, gen)
    expect = recurrence(p, prev)
    got = monotonic_alignment(p.to(dtype), prev.to(dtype), mode)
    assert got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), expect, atol=tol, rtol=tol)


def test_multi_step_chain_recursive_equals_parallel() -> None:
    """Twelve decoder steps chained from the one-hot start: both modes follow the
    recurrence, and the alignment mass never grows."""
    gen = torch.Generator().manual_seed(1)
    batch, steps = 4, 25
    a_ref = a_rec = a_par = _prev(batch, steps, gen, one_hot=True)
    for _ in range(12):
        p = torch.sigmoid(torch.randn(batch, steps, generator=gen, dtype=torch.float64) - 1.0)
        a_ref = recurrence(p, a_ref)
        a_rec = monotonic_alignment(p, a_rec, "recursive")
        a_par = monotonic_alignment(p, a_par, "parallel")
        torch.testing.assert_close(a_rec, a_ref, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(a_par, a_ref, atol=1e-9, rtol=1e-9)
    assert (a_ref.sum(1) <= 1 + 1e-12).all()


def test_hard_is_argmax_path_of_recursion() -> None:
    """hard == the recurrence on binary p (p > 0.5), step after step: a one-hot (or an
    all-zero row once nothing ahead is chosen) that never moves left."""
    gen = torch.Generator().manual_seed(2)
    batch, steps = 5, 20
    a_ref = a_hard = _prev(batch, steps, gen, one_hot=True)
    last = torch.zeros(batch, dtype=torch.long)
    for _ in range(10):
        p = torch.rand(batch, steps, generator=gen, dtype=torch.float64) * 0.9
        a_ref = recurrence((p > 0.5).double(), a_ref)
        a_hard = monotonic_alignment(p, a_hard, "hard")
        torch.testing.assert_close(a_hard, a_ref, atol=0, rtol=0)
        assert set(a_hard.unique().tolist()) <= {0.0, 1.0}
        assert (a_hard.sum(1) <= 1).all()
        live = a_hard.sum(1) == 1
        pos = a_hard.argmax(1)
        assert (pos[live] >= last[live]).all()
        last = torch.where(live, pos, last)


@pytest.mark.parametrize("mode", ["recursive", "parallel"])
def test_gradcheck(mode: str) -> None:
    gen = torch.Generator().manual_seed(3)
    p = (0.05 + 0.5 * torch.rand(2, 6, generator=gen, dtype=torch.float64)).requires_grad_()
    prev = _prev(2, 6, gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: monotonic_alignment(a, b, mode), (p, prev))


def test_safe_cumprod() -> None:
    x = torch.rand(3, 40, dtype=torch.float32) * 0.5 + 0.5
    torch.testing.assert_close(safe_cumprod(x, dim=1), torch.cumprod(x, 1), rtol=2e-5, atol=0)
    excl = safe_cumprod(x, dim=1, exclusive=True)
    assert torch.equal(excl[:, 0], torch.ones(3))
    torch.testing.assert_close(excl[:, 1:], torch.cumprod(x, 1)[:, :-1], rtol=2e-5, atol=0)
    # a zero factor: finite values and finite gradients (plain log would give -inf / NaN)
    z = torch.tensor([[0.5, 0.0, 0.5, 1.0]], requires_grad=True)
    y = safe_cumprod(z, dim=1, exclusive=True)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(z.grad).all()
    # float32 over many small factors: no NaN, monotone non-increasing
    small = torch.full((1, 500), 0.3)
    out = safe_cumprod(small, dim=1)
    assert torch.isfinite(out).all() and (out[:, 1:] <= out[:, :-1]).all()


def test_alignment_bad_inputs() -> None:
    with pytest.raises(ValueError, match="mode"):
        monotonic_alignment(torch.rand(2, 3), torch.rand(2, 3), "soft")
    with pytest.raises(ValueError, match="same shape"):
        monotonic_alignment(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="p_choose"):
        monotonic_alignment(torch.rand(2, 3, 1), torch.rand(2, 3))


# ------------------------------------------------------------------------------------
# the module


def _manual_scores(m: MonotonicAttention, query: torch.Tensor, memory: torch.Tensor
                   ) -> torch.Tensor:
    """TF-Addons' _bahdanau_score + score bias, in float64, written out."""
    d = {k: v.double() for k, v in m.state_dict().items()}
    q = query.double() @ d["query_proj.weight"].t()
    k = memory.double() @ d["key_proj.weight"].t()
    v = d["v"]
    if m.normalize:
        v = d["g"] * v / v.norm()
        k = k + d["b"]
    return (torch.tanh(k + q[:, None, :]) * v).sum(-1) + d["score_bias"]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("mode", ["recursive", "parallel", "hard"])
def test_module_steps_match_manual(mode: str, normalize: bool) -> None:
    torch.manual_seed(4)
    m = MonotonicAttention(6, 5, 7, mode=mode, score_bias_init=-0.5, normalize=normalize)
    with torch.no_grad():
        m.v.mul_(8.0)  # scores of both signs, so hard mode moves and stops
    assert m.score_bias.item() == -0.5
    memory = torch.randn(3, 11, 5)
    lengths = torch.tensor([11, 8, 5])
    state = m.start(memory, lengths)
    a_ref = torch.zeros(3, 11, dtype=torch.float64)
    a_ref[:, 0] = 1
    valid = torch.arange(11)[None, :] < lengths[:, None]
    for _ in range(6):
        query = torch.randn(3, 6)
        context, align, state = m.step(query, state)
        scores = _manual_scores(m, query, memory)
        p = (scores > 0).double() if mode == "hard" else torch.sigmoid(scores)
        p = torch.where(valid, p, 0.0)
        a_ref = recurrence(p, a_ref)
        torch.testing.assert_close(align.double(), a_ref, atol=1e-5, rtol=1e-5)
        expect = torch.bmm(a_ref[:, None], memory.double())[:, 0]
        torch.testing.assert_close(context.double(), expect, atol=1e-5, rtol=1e-5)
        assert (align[~valid] == 0).all()


@pytest.mark.parametrize("mode", ["recursive", "parallel", "hard"])
def test_whole_sequence_equals_steps(mode: str) -> None:
    torch.manual_seed(5)
    m = MonotonicAttention(6, 5, 7, mode=mode, score_bias_init=1.0)
    memory = torch.randn(2, 9, 5, requires_grad=True)
    queries = torch.randn(2, 4, 6, requires_grad=True)
    values = torch.randn(2, 9, 3)
    ctx, aligns = m(queries, memory, key_lengths=torch.tensor([9, 6]), values=values)
    assert ctx.shape == (2, 4, 3) and aligns.shape == (2, 4, 9)
    state = m.start(memory, torch.tensor([9, 6]), values=values)
    for i in range(4):
        c, a, state = m.step(queries[:, i], state)
        torch.testing.assert_close(c, ctx[:, i])
        torch.testing.assert_close(a, aligns[:, i])
    c1, a1 = m(queries[:, 0], memory, key_lengths=torch.tensor([9, 6]), values=values)
    torch.testing.assert_close(a1, aligns[:, 0])
    if mode != "hard":  # gradients reach every parameter and both inputs
        (ctx.sum() + aligns.pow(2).sum()).backward()
        for name, param in m.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert memory.grad is not None and queries.grad is not None


def test_module_gradcheck() -> None:
    torch.manual_seed(6)
    m = MonotonicAttention(3, 4, 5, normalize=True, dtype=torch.float64)
    memory = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    query = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)

    def f(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return m(q, k)

    assert torch.autograd.gradcheck(f, (query, memory))


def test_sigmoid_noise_only_in_training() -> None:
    torch.manual_seed(7)
    m = MonotonicAttention(4, 4, 6, sigmoid_noise=1.0)
    memory, query = torch.randn(2, 8, 4), torch.randn(2, 4)
    m.eval()
    a0 = m(query, memory)[1]
    torch.testing.assert_close(m(query, memory)[1], a0)  # eval: deterministic, no noise
    quiet = MonotonicAttention(4, 4, 6, sigmoid_noise=0.0)
    quiet.load_state_dict(m.state_dict())
    torch.testing.assert_close(quiet(query, memory)[1], a0)
    m.train()
    torch.manual_seed(8)
    a1 = m(query, memory)[1]
    torch.manual_seed(8)
    a2 = m(query, memory)[1]
    torch.testing.assert_close(a1, a2)  # reproducible under a seed
    assert not torch.allclose(a1, a0)
    with pytest.raises(ValueError, match="sigmoid_noise"):
        MonotonicAttention(4, 4, 6, sigmoid_noise=-1.0)


def test_module_state_dict_and_reorder() -> None:
    m = MonotonicAttention(4, 5, 6, normalize=True)
    assert set(m.state_dict()) == {"query_proj.weight", "key_proj.weight", "v", "score_bias",
                                   "g", "b"}
    assert math.isclose(m.g.item(), math.sqrt(1 / 6), rel_tol=1e-6)
    other = MonotonicAttention(4, 5, 6, normalize=True)
    other.load_state_dict(m.state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        MonotonicAttention(4, 5, 6).load_state_dict(m.state_dict(), strict=True)
    state = m.start(torch.randn(2, 7, 5))
    _, _, state = m.step(torch.randn(2, 4), state)
    picked = state.reorder(torch.tensor([1, 1, 0]))
    assert picked.alignment.shape == (3, 7)
    torch.testing.assert_close(picked.alignment[2], state.alignment[0])
    with pytest.raises(ValueError, match="mode"):
        MonotonicAttention(4, 5, 6, mode="soft")
    with pytest.raises(ValueError, match="query"):
        m.step(torch.randn(2, 3), state)
    assert attnkern.MonotonicAttention is MonotonicAttention
