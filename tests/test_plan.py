"""The CPU kernels' work plans (csrc/kernels/plan.cpp; fields and invariants in api.h).

How forward_impl and backward_impl split a call into work items is pure integer arithmetic
on the shapes (and, for the forward's query spans only, the thread count). Reached through
``attnkern._C.plan_forward`` / ``plan_backward``, which call the plan of the ISA in use.

Invariants checked over many shapes: spans cover every query block and none is empty; key
splits cover every key in whole chunks (forward) or whole key blocks (backward); chunks fit
the L2 budget or are at the floor; and the split count never depends on the thread count,
which is what makes results bitwise identical for any thread count.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnkern
from attnkern import ops

pytestmark = pytest.mark.skipif(
    not ops.HAS_CPP, reason=f"attnkern._C is not built ({ops.CPP_IMPORT_ERROR})"
)

_C = importlib.import_module("attnkern._C") if ops.HAS_CPP else None

# The kernels' constants (csrc/kernels/common.h)
BQ, BK = 8, 64  # query rows per block, keys per block
CHUNK_BYTES, CHUNK_MIN_KEYS = 512 << 10, 256
THREADS = (1, 2, 3, 4, 7, 16, 64)

PROPERTY = settings(derandomize=True, max_examples=250, deadline=None, database=None)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return cdiv(a, b) * b


def forward_plans(B, Tq, Tk, Hp, Dv):
    return {t: _C.plan_forward(B, Tq, Tk, Hp, Dv, t) for t in THREADS}


def check_chunk(KC, Tk, bytes_per_key):
    """A chunk is whole key blocks, no longer than the keys need, within the L2 budget
    unless it is at the floor of CHUNK_MIN_KEYS keys."""
    cap = max(BK, round_up(Tk, BK))
    assert KC % BK == 0 and BK <= KC <= cap
    assert KC >= min(CHUNK_MIN_KEYS, cap)
    assert KC * bytes_per_key <= CHUNK_BYTES or KC == min(CHUNK_MIN_KEYS, cap)


def check_forward(B, Tq, Tk, Hp, Dv):
    plans = forward_plans(B, Tq, Tk, Hp, Dv)
    # chunks and splits from the shapes alone: the same for every thread count
    assert len({(p["KC"], p["nsplit"], p["KS"]) for p in plans.values()}) == 1, plans
    nqb = max(1, cdiv(Tq, BQ))
    prev = None
    for t, p in plans.items():
        KC, nsplit, KS = p["KC"], p["nsplit"], p["KS"]
        span, nspan = p["span"], p["nspan"]
        check_chunk(KC, Tk, (Hp + Dv) * 4)
        # splits: whole chunks, covering every key, the fewest chunks per split that do
        assert nsplit >= 1 and KS % KC == 0
        assert nsplit * KS >= Tk
        assert Tk == 0 or (KS - KC) * nsplit < Tk
        assert nsplit <= max(1, cdiv(Tk, KC))  # never more splits than chunks
        if B >= 16:
            assert nsplit == 1
        # spans: cover every query block, none empty
        assert span >= 1 and nspan * span >= nqb and (nspan - 1) * span < nqb
        assert p["items"] == B * nspan * nsplit
        # more threads only cut the spans finer
        if prev is not None:
            assert span <= prev["span"] and p["items"] >= prev["items"], (t, p, prev)
        prev = p


def check_backward(B, Tk, Hp, Dv):
    p = _C.plan_backward(B, Tk, Hp, Dv)
    nsplit, KS, KC = p["nsplit"], p["KS"], p["KC"]
    assert nsplit >= 1 and KS % BK == 0
    # splits cover every key and none is empty (each owns its keys' dk and dv)
    assert nsplit * KS >= Tk
    assert Tk == 0 or (nsplit - 1) * KS < Tk
    # dq partials bounded: at most 8 x one batch's dq
    assert nsplit <= max(1, cdiv(8, max(B, 1)))
    if B >= 8 or Tk <= BK:
        assert nsplit == 1
    check_chunk(KC, min(KS, Tk), (3 * Hp + 2 * Dv) * 4)
    assert p["items"] == B * nsplit


@PROPERTY
@given(B=st.integers(1, 64), Tq=st.integers(1, 5000), Tk=st.integers(0, 70000),
       Hp=st.integers(1, 1100), Dv=st.integers(1, 1100))
def test_forward_plan_invariants(B, Tq, Tk, Hp, Dv):
    check_forward(B, Tq, Tk, Hp, Dv)


@PROPERTY
@given(B=st.integers(0, 64), Tk=st.integers(0, 70000), Hp=st.integers(1, 1100),
       Dv=st.integers(1, 1100))
def test_backward_plan_invariants(B, Tk, Hp, Dv):
    check_backward(B, Tk, Hp, Dv)


@pytest.mark.parametrize("B,Tq,Tk,Hp,Dv", [
    (1, 1, 1, 16, 1), (1, 1, 4096, 256, 256), (1, 1, 16384, 256, 256), (2, 7, 33, 48, 40),
    (3, 500, 3000, 128, 64), (8, 1, 100000, 16, 16), (16, 1, 100000, 1024, 1024),
    (32, 30, 30, 128, 128), (1, 4096, 4096, 64, 64), (1, 1, 0, 16, 16),
])
def test_forward_plan_edges(B, Tq, Tk, Hp, Dv):
    check_forward(B, Tq, Tk, Hp, Dv)


def test_decode_step_over_long_keys_is_split():
    # one decoder step (B=1, Tq=1) over 4096 keys: one query block, so the keys are split
    plans = forward_plans(1, 1, 4096, 256, 256)
    assert {p["nsplit"] for p in plans.values()} == {16}
    p = plans[1]
    assert p["KC"] == 256 and p["KS"] == 256 and p["nspan"] == 1 and p["items"] == 16


@pytest.mark.parametrize("B", [16, 17, 32, 256])
@pytest.mark.parametrize("Tk", [1, 64, 4096, 100000])
def test_large_batches_are_not_split(B, Tk):
    for p in forward_plans(B, 1, Tk, 128, 128).values():
        assert p["nsplit"] == 1 and p["KS"] >= Tk
    assert _C.plan_backward(B, Tk, 128, 128)["nsplit"] == 1


def test_split_count_ignores_threads_spans_follow_them():
    # 8 query blocks of one batch, one chunk of keys: no split; alone, one span (fewer than
    # 64 rows per span would not share the exp(2k) build), with 16 threads one span per block
    plans = forward_plans(1, 64, 64, 16, 16)
    assert {p["nsplit"] for p in plans.values()} == {1}
    assert (plans[1]["span"], plans[1]["nspan"]) == (8, 1)
    assert (plans[16]["span"], plans[16]["nspan"]) == (1, 8)
    for shape in [(1, 1, 4096, 256, 256), (2, 100, 20000, 64, 64), (4, 1000, 3000, 512, 512)]:
        plans = forward_plans(*shape)
        assert plans[1]["nsplit"] == plans[2]["nsplit"] == plans[16]["nsplit"], shape
        assert plans[1]["KS"] == plans[2]["KS"] == plans[16]["KS"], shape


def test_backward_plan_examples():
    p = _C.plan_backward(1, 4096, 256, 256)
    assert (p["nsplit"], p["KS"], p["items"]) == (8, 512, 8)  # at most 8 splits per batch
    assert _C.plan_backward(3, 4096, 256, 256)["nsplit"] == 3  # ceil(8 / 3)
    assert _C.plan_backward(1, 100, 256, 256)["nsplit"] == 2  # at most one per key block
    assert _C.plan_backward(1, 64, 256, 256)["nsplit"] == 1
    assert _C.plan_backward(8, 4096, 256, 256)["nsplit"] == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="threads >= 1"):
        _C.plan_forward(1, 1, 1, 16, 16, 0)
    with pytest.raises(ValueError, match="sizes >= 0"):
        _C.plan_backward(-1, 1, 16, 16)
    with pytest.raises(TypeError):
        _C.plan_forward(1, 1, 1, 16, 16)


def test_empty_batch_backward():
    # B = 0 with more than one key block divided by zero in the backward's split count
    # (SIGFPE: the process died) before the plan guarded it
    assert _C.plan_backward(0, 100, 16, 16)["items"] == 0
    check_backward(0, 100, 16, 16)
    q = torch.randn(0, 3, 16, requires_grad=True)
    k = torch.randn(0, 100, 16, requires_grad=True)
    v = torch.randn(0, 100, 8, requires_grad=True)
    w = torch.randn(16, requires_grad=True)
    attnkern.additive_attention(q, k, v, w, backend="cpp").sum().backward()
    assert k.grad.shape == k.shape and v.grad.shape == v.shape
    assert torch.equal(w.grad, torch.zeros(16))
