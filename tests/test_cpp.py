"""The C++ CPU kernels (attnkern._C) against the float64 reference.

Shapes are chosen to hit every code path of csrc/: Tk below, at and past the key block (64)
and not a multiple of the 16-lane vector; H not a multiple of 16; Dv != H; Tq below the
factorised-path threshold (4 rows: direct exp path) and above it; B small (several key
splits in backward) and B >= 8 (one split); causal with Tq != Tk.

Every test runs once per ISA path this CPU can run (the ``isa`` fixture: scalar always,
then avx2 / avx512 / neon where present), float64 included.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    MASK_KINDS,
    check_against_reference,
    make_inputs,
    make_masks,
    reference64,
    shape_id,
)

import attnkern
from attnkern import ops

pytestmark = pytest.mark.skipif(
    not ops.HAS_CPP, reason=f"attnkern._C is not built ({ops.CPP_IMPORT_ERROR})"
)


@pytest.fixture(autouse=True, scope="module")
def isa(every_isa):
    """Runs the module once per ISA path this CPU has, forcing it as ATTNKERN_CPU_ISA would
    (conftest's ``every_isa``)."""
    assert every_isa is None or attnkern.cpu_isa() == every_isa
    return every_isa


# (B, Tq, Tk, H, Dv)
SHAPES = [
    (2, 3, 1, 16, 4),      # one key; direct path (Tq < 4)
    (2, 5, 7, 5, 6),       # H < 16, tiny Tk; factorised path
    (3, 9, 33, 24, 20),    # H % 16 != 0, Tk % 16 != 0
    (1, 20, 129, 100, 8),  # three key blocks, four key splits in backward
    (2, 70, 250, 40, 33),  # several query blocks, ragged last key block
    (8, 12, 64, 32, 48),   # B >= 8: one key split; Tk exactly one block
    (2, 40, 16, 48, 16),   # causal with Tq > Tk: leading rows see no key
]
SHAPE_IDS = [shape_id(*s) for s in SHAPES]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_float32_vs_reference(shape, kind):
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, seed=SHAPES.index(shape))
    check_against_reference(q, k, v, w, backend="cpp", **make_masks(kind, B, Tq, Tk))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", [SHAPES[2], SHAPES[4]], ids=[SHAPE_IDS[2], SHAPE_IDS[4]])
@pytest.mark.parametrize("kind", ["none", "all"])
def test_dtypes_vs_reference(dtype, shape, kind):
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, dtype=dtype)
    check_against_reference(q, k, v, w, backend="cpp", **make_masks(kind, B, Tq, Tk))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_step_mode(dtype, kind):
    B, Tk, H, Dv = 4, 37, 24, 12
    q, k, v, w = make_inputs(B, 1, Tk, H, Dv, dtype=dtype, step=True)
    assert q.dim() == 2
    check_against_reference(q, k, v, w, backend="cpp", **make_masks(kind, B, 1, Tk))


def test_step_mode_output_shapes():
    q, k, v, w = make_inputs(3, 1, 9, 8, 5, step=True, requires_grad=False)
    out, wts = attnkern.additive_attention(q, k, v, w, return_weights=True, backend="cpp")
    assert out.shape == (3, 5) and wts.shape == (3, 9)


@pytest.mark.parametrize("kind", ["none", "all"])
def test_non_contiguous_inputs(kind):
    B, Tq, Tk, H, Dv = 3, 10, 21, 20, 7
    g = torch.Generator().manual_seed(3)
    q = torch.randn(B, H, Tq, generator=g).transpose(1, 2)  # transposed
    k = torch.randn(Tk, B, H, generator=g).transpose(0, 1)
    v = torch.randn(B, Tk, 2 * Dv, generator=g)[:, :, ::2]  # strided slice
    w = (torch.randn(2 * H, generator=g) / H**0.5)[::2]
    for t in (q, k, v, w):
        assert not t.is_contiguous()
        t.requires_grad_(True)
    check_against_reference(q, k, v, w, backend="cpp", **make_masks(kind, B, Tq, Tk))


def test_expanded_stride0_key_value():
    B, Tq, Tk, H, Dv = 4, 6, 19, 24, 10
    g = torch.Generator().manual_seed(4)
    q = torch.randn(B, Tq, H, generator=g, requires_grad=True)
    k0 = torch.randn(1, Tk, H, generator=g, requires_grad=True)
    v0 = torch.randn(1, Tk, Dv, generator=g, requires_grad=True)
    w = (torch.randn(H, generator=g) / H**0.5).requires_grad_(True)
    k, v = k0.expand(B, Tk, H), v0.expand(B, Tk, Dv)
    assert k.stride(0) == 0 and v.stride(0) == 0
    check_against_reference(q, k, v, w, backend="cpp", **make_masks("both", B, Tq, Tk))
    # gradients reach the un-expanded leaves
    out = attnkern.additive_attention(q, k, v, w, backend="cpp")
    out.sum().backward()
    assert k0.grad.shape == k0.shape and torch.isfinite(k0.grad).all()


# (B, Tq, Tk, H, Dv): a decoder step, several key blocks, a Dv tail, query blocks
ROW_STRIDED = [(3, 1, 70, 24, 20), (2, 9, 130, 16, 33), (5, 2, 21, 8, 512)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", ROW_STRIDED, ids=[shape_id(*s) for s in ROW_STRIDED])
@pytest.mark.parametrize("kind", ["none", "lengths", "both"])
def test_value_rows_with_any_strides(shape, kind, dtype):
    # The kernels read a value whose rows are contiguous in place, whatever its row strides
    # (kernels/api.h Rows): an RNN encoder's batch_first output is (Tk, B)-major, and a
    # (Tk, B, Dv) buffer viewed as (B, Tk, Dv) must give the dense tensor's results.
    B, Tq, Tk, H, Dv = shape
    q, k, _, w = make_inputs(B, Tq, Tk, H, Dv, seed=11, dtype=dtype)
    g = torch.Generator().manual_seed(12)
    for v in (torch.randn(Tk, B, Dv, generator=g, dtype=dtype).transpose(0, 1),
              torch.randn(B, 2 * Tk, Dv, generator=g, dtype=dtype)[:, ::2]):
        assert not v.is_contiguous() and v.stride(2) == 1
        v.requires_grad_(True)
        check_against_reference(q, k, v, w, backend="cpp", **make_masks(kind, B, Tq, Tk))
        query = q[:, 0] if Tq == 1 else q  # a step's 2-D query: the per-row outputs
        dense = attnkern.additive_attention(query, k, v.detach().contiguous(), w, backend="cpp")
        strided = attnkern.additive_attention(query, k, v.detach(), w, backend="cpp")
        assert torch.equal(strided, dense)  # the same arithmetic, bit for bit


# ------------------------------------------------------------ factorised-path range guard

def _guard_inputs(case, B=2, Tq=12, Tk=70, H=40, Dv=8):
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, requires_grad=False)
    if case == "saturated":
        q, k = q * 1e4, k * 1e4
    elif case == "large-opposite":  # q + k ~ 0.5, but exp(2q) overflows and exp(2k) underflows
        q, k = 60 + 0.3 * q, -59.5 + 0.3 * k
    elif case == "one-large-query-entry":
        q[0, 5, 3] = 30.0
    elif case == "one-large-key-row":
        k[1, 66, :] = -25.0  # inside the second key block only
    elif case == "mixed":
        q[1, 2] *= 300
        k[0, 10, 7] = 22.0
        k[1, 3:9] *= 50
    return [t.requires_grad_(True) for t in (q, k, v, w)]


GUARD_CASES = ["saturated", "large-opposite", "one-large-query-entry", "one-large-key-row",
               "mixed"]


@pytest.mark.parametrize("case", GUARD_CASES)
@pytest.mark.parametrize("kind", ["none", "all"])
def test_factorised_path_guard(case, kind):
    q, k, v, w = _guard_inputs(case)
    kw = make_masks(kind, q.shape[0], q.shape[1], k.shape[1])
    check_against_reference(q, k, v, w, backend="cpp", **kw)
    # and the tighter accuracy the CPU kernels promise: ~1e-5 relative in float32
    out, wts = attnkern.additive_attention(q, k, v, w, return_weights=True, backend="cpp", **kw)
    _, rout, rwts = reference64(q, k, v, w, **kw)
    assert (out.double() - rout).abs().max() <= 1e-5 * max(1.0, rout.abs().max().item())
    assert (wts.double() - rwts).abs().max() <= 1e-5


@pytest.mark.parametrize("case", ["saturated", "large-opposite"])
def test_factorised_path_guard_step_mode(case):
    q, k, v, w = _guard_inputs(case, Tq=1)
    q = q.detach()[:, 0].requires_grad_(True)
    check_against_reference(q, k, v, w, backend="cpp")


# ---------------------------------------------------------------- gradcheck and opcheck

@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 4, 3), (2, 6, 5, 17, 2)],
                         ids=[shape_id(2, 3, 5, 4, 3), shape_id(2, 6, 5, 17, 2)])
def test_gradcheck(kind, shape):
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, dtype=torch.float64)
    kw = make_masks(kind, B, Tq, Tk)

    def fn(q, k, v, w):
        return attnkern.additive_attention(q, k, v, w, return_weights=True, backend="cpp", **kw)

    assert torch.autograd.gradcheck(fn, (q, k, v, w))


def _op_samples():
    samples = []
    for i, (kind, rw, dtype) in enumerate([("none", False, torch.float32),
                                           ("all", True, torch.float32),
                                           ("both", True, torch.float64),
                                           ("causal", False, torch.bfloat16)]):
        B, Tq, Tk, H, Dv = 2, 5, 9, 20, 6
        q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, dtype=dtype, seed=i)
        kw = make_masks(kind, B, Tq, Tk)
        samples.append((q, k, v, w, kw.get("key_padding_mask"), kw.get("key_lengths"),
                        kw.get("causal", False), rw))
    return samples


@pytest.mark.parametrize("sample", range(4))
def test_opcheck_fwd(sample):
    args = _op_samples()[sample]
    torch.library.opcheck(torch.ops.attnkern.fwd.default, args)


@pytest.mark.parametrize("sample", range(4))
@pytest.mark.parametrize("with_grad_weights", [False, True])
def test_opcheck_bwd(sample, with_grad_weights):
    q, k, v, w, mask, lengths, causal, _ = _op_samples()[sample]
    q, k, v, w = (t.detach() for t in (q, k, v, w))
    out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, mask, lengths, causal, True)
    g = torch.Generator().manual_seed(sample)
    gout = torch.randn(out.shape, generator=g).to(out.dtype)
    gw = torch.randn(wts.shape, generator=g).to(wts.dtype) if with_grad_weights else None
    # the op computes delta from out (and the weights, with their gradient)
    torch.library.opcheck(torch.ops.attnkern.bwd.default,
                          (gout, gw, q, k, v, w, out, lse, mask, lengths, causal, None,
                           wts if gw is not None else None))


# ---------------------------------------------------------------- one step: 2-D query

def _step_args(dtype=torch.float32, kind="all", seed=0):
    B, Tk, H, Dv = 3, 9, 20, 6
    q, k, v, w = make_inputs(B, 1, Tk, H, Dv, step=True, dtype=dtype, seed=seed,
                             requires_grad=False)
    kw = make_masks(kind, B, 1, Tk, seed=seed)
    return (q, k, v, w, kw.get("key_padding_mask"), kw.get("key_lengths"),
            kw.get("causal", False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=lambda d: str(d).split(".")[-1])
def test_step_query_op_equals_one_row_query(dtype):
    """The ops take a 2-D query (B, H) as the one-row query (B, 1, H) minus the Tq dimension
    of every per-row tensor (out, lse, weights; grad_out, grad_weights, out, lse, dq):
    bitwise the same numbers, the kernels see the same memory."""
    q, k, v, w, mask, lengths, causal = _step_args(dtype)
    step = torch.ops.attnkern.fwd(q, k, v, w, mask, lengths, causal, True)
    rows = torch.ops.attnkern.fwd(q[:, None], k, v, w, mask, lengths, causal, True)
    assert [tuple(t.shape) for t in step] == [(3, 6), (3,), (3, 9)]
    for a, b in zip(step, rows):
        assert torch.equal(a, b.squeeze(1))
    out, lse, wts = step
    g = torch.Generator().manual_seed(1)
    gout = torch.randn(out.shape, generator=g).to(dtype)
    gw = torch.randn(wts.shape, generator=g).to(dtype)
    for weights in (wts, wts.double() if dtype != torch.float64 else wts.float()):
        # the forward's weights (p, where in the accumulation dtype), or only for delta
        g_step = torch.ops.attnkern.bwd(gout, gw, q, k, v, w, out, lse, mask, lengths, causal,
                                        None, weights)
        g_rows = torch.ops.attnkern.bwd(gout[:, None], gw[:, None], q[:, None], k, v, w,
                                        out[:, None], lse[:, None], mask, lengths, causal, None,
                                        weights[:, None])
        assert g_step[0].shape == q.shape
        assert torch.equal(g_step[0], g_rows[0].squeeze(1))
        for a, b in zip(g_step[1:], g_rows[1:]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("return_weights", [False, True])
def test_opcheck_step_query(return_weights):
    q, k, v, w, mask, lengths, causal = _step_args()
    torch.library.opcheck(torch.ops.attnkern.fwd.default,
                          (q, k, v, w, mask, lengths, causal, return_weights))
    out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, mask, lengths, causal, True)
    gout = torch.randn_like(out)
    gw = torch.randn_like(wts) if return_weights else None
    torch.library.opcheck(torch.ops.attnkern.bwd.default,
                          (gout, gw, q, k, v, w, out, lse, mask, lengths, causal, None,
                           wts if return_weights else None))


def test_step_query_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k, v, w = torch.empty(2, 8), torch.empty(2, 11, 8), torch.empty(2, 11, 5), \
            torch.empty(8)
        out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, None, None, False, True)
        assert out.shape == (2, 5) and lse.shape == (2,) and wts.shape == (2, 11)
        grads = torch.ops.attnkern.bwd(torch.empty(2, 5), torch.empty(2, 11), q, k, v, w, out,
                                       lse, None, None, False, None, wts)
        assert [tuple(g.shape) for g in grads] == [(2, 8), (2, 11, 8), (2, 11, 5), (8,)]


@pytest.mark.parametrize("return_weights", [False, True])
def test_step_call_has_no_view_nodes(return_weights):
    """A decoder step's graph is the op's node straight onto the leaves: no unsqueeze of the
    query before it, no squeeze of its outputs after it."""
    q, k, v, w = make_inputs(2, 1, 5, 4, 3, step=True)
    res = attnkern.additive_attention(q, k, v, w, return_weights=return_weights, backend="cpp")
    for t in res if return_weights else (res,):
        node = t.grad_fn
        assert "attnkern" in node.name() or "CppNode" in node.name(), node.name()
        leaves = [f.variable for f, _ in node.next_functions if f is not None
                  and hasattr(f, "variable")]
        assert any(leaf is q for leaf in leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64],
                         ids=lambda d: str(d).split(".")[-1])
def test_step_query_gradcheck(dtype):
    q, k, v, w, mask, lengths, causal = _step_args(torch.float64, kind="both")
    q, k, v, w = (t.to(dtype).requires_grad_() for t in (q, k, v, w))
    check_against_reference(q, k, v, w, backend="cpp", key_padding_mask=mask,
                            key_lengths=lengths)
    if dtype == torch.float64:
        def fn(q, k, v, w):
            return attnkern.additive_attention(q, k, v, w, key_padding_mask=mask,
                                               key_lengths=lengths, return_weights=True,
                                               backend="cpp")

        assert torch.autograd.gradcheck(fn, (q, k, v, w))


# ---------------------------------------------------------------- op-level semantics

def test_fwd_outputs_and_lse():
    q, k, v, w = make_inputs(3, 4, 6, 8, 5, requires_grad=False)
    lengths = torch.tensor([0, 3, 6])
    out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, None, lengths, False, False)
    assert out.dtype == torch.float32 and lse.dtype == torch.float32
    assert wts.shape == (0,)
    assert torch.isinf(lse[0]).all() and (lse[0] > 0).all()
    assert (out[0] == 0).all()
    scores = (torch.tanh(q[:, :, None] + k[:, None]) * w).sum(-1).double()
    ref = torch.logsumexp(scores[1, :, :3], -1)
    torch.testing.assert_close(lse[1].double(), ref, atol=1e-5, rtol=1e-5)
    q64, k64, v64, w64 = (t.double() for t in (q, k, v, w))
    assert torch.ops.attnkern.fwd(q64, k64, v64, w64, None, None, False, False)[1].dtype \
        == torch.float64
    qh, kh, vh, wh = (t.half() for t in (q, k, v, w))
    out_h, lse_h, wts_h = torch.ops.attnkern.fwd(qh, kh, vh, wh, None, None, False, True)
    assert out_h.dtype == torch.float16 and lse_h.dtype == torch.float32
    assert wts_h.dtype == torch.float16


@pytest.mark.parametrize("sizes", [(0, 3, 5), (2, 0, 5), (2, 3, 0)],
                         ids=["B0", "Tq0", "Tk0"])
def test_empty_sizes(sizes):
    B, Tq, Tk = sizes
    H, Dv = 8, 4
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv)
    out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, None, None, False, True)
    assert out.shape == (B, Tq, Dv) and (out == 0).all()
    assert lse.shape == (B, Tq) and (lse == float("inf")).all()
    assert wts.shape == (B, Tq, Tk)
    res = attnkern.additive_attention(q, k, v, w, backend="cpp")
    res.sum().backward()
    for t in (q, k, v, w):
        assert t.grad.shape == t.shape and (t.grad == 0).all()


def test_fully_masked_rows_are_zero_with_zero_grads():
    q, k, v, w = make_inputs(2, 4, 6, 8, 5)
    mask = torch.ones(2, 6, dtype=torch.bool)
    out, wts = attnkern.additive_attention(q, k, v, w, key_padding_mask=mask,
                                           return_weights=True, backend="cpp")
    assert (out == 0).all() and (wts == 0).all()
    (out.sum() + wts.sum()).backward()
    for t in (q, k, v, w):
        assert (t.grad == 0).all()


def test_backward_is_deterministic():
    B, Tq, Tk, H, Dv = 2, 33, 150, 40, 12  # several key splits -> partial reductions
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv)
    kw = make_masks("both", B, Tq, Tk)
    gout = torch.randn(B, Tq, Dv, generator=torch.Generator().manual_seed(1))

    def grads():
        out = attnkern.additive_attention(q, k, v, w, backend="cpp", **kw)
        return torch.autograd.grad(out, (q, k, v, w), gout)

    first = grads()
    threads = torch.get_num_threads()
    try:
        runs = [grads()]
        torch.set_num_threads(1)
        runs.append(grads())  # results do not depend on the thread count either
    finally:
        torch.set_num_threads(threads)
    for other in runs:
        for a, b in zip(first, other):
            assert torch.equal(a, b)


# ---------------------------------------------------------------- direct calls, bad input

def _good():
    q, k, v, w = make_inputs(2, 3, 5, 4, 6, requires_grad=False)
    return dict(q=q, k=k, v=v, w=w, mask=None, lengths=None)


BAD_FWD = {
    "query-4d": dict(q=torch.randn(1, 2, 3, 4)),
    "query-2d-H-mismatch": dict(q=torch.randn(2, 3)),  # a 2-D (step) query must match H
    "batch-mismatch": dict(k=torch.randn(3, 5, 4)),
    "H-mismatch": dict(w=torch.randn(5)),
    "Tk-mismatch": dict(v=torch.randn(2, 6, 6)),
    "dtype-mismatch": dict(k=torch.randn(2, 5, 4, dtype=torch.float64)),
    "integer-dtype": dict(q=torch.ones(2, 3, 4, dtype=torch.int64)),
    "mask-shape": dict(mask=torch.zeros(2, 4, dtype=torch.bool)),
    "mask-dtype": dict(mask=torch.zeros(2, 5, dtype=torch.float32)),
    "lengths-shape": dict(lengths=torch.tensor([1, 2, 3])),
    "lengths-dtype": dict(lengths=torch.tensor([1.0, 2.0])),
    "lengths-too-large": dict(lengths=torch.tensor([1, 6])),
    "lengths-negative": dict(lengths=torch.tensor([-1, 2])),
}


@pytest.mark.parametrize("bad", list(BAD_FWD), ids=list(BAD_FWD))
def test_direct_fwd_bad_input_raises(bad):
    a = {**_good(), **BAD_FWD[bad]}
    with pytest.raises((ValueError, TypeError), match="attnkern::fwd"):
        torch.ops.attnkern.fwd(a["q"], a["k"], a["v"], a["w"], a["mask"], a["lengths"],
                               False, True)


BAD_BWD = {
    "grad_out-shape": dict(gout=torch.randn(2, 3, 5)),
    "grad_weights-shape": dict(gw=torch.randn(2, 3, 4)),
    "lse-shape": dict(lse=torch.randn(2, 4)),
    "out-shape": dict(out=torch.randn(3)),
    "weights-missing": dict(wts=None),
    "lengths-too-large": dict(lengths=torch.tensor([9, 0])),
    "key-batch": dict(k=torch.randn(1, 5, 4)),
}


@pytest.mark.parametrize("bad", list(BAD_BWD), ids=list(BAD_BWD))
def test_direct_bwd_bad_input_raises(bad):
    g = _good()
    out, lse, wts = torch.ops.attnkern.fwd(g["q"], g["k"], g["v"], g["w"], None, None, False,
                                           True)
    a = {**g, "gout": torch.randn_like(out), "gw": torch.randn_like(wts), "out": out,
         "lse": lse, "wts": wts, **BAD_BWD[bad]}
    with pytest.raises(ValueError, match="attnkern::bwd"):
        torch.ops.attnkern.bwd(a["gout"], a["gw"], a["q"], a["k"], a["v"], a["w"], a["out"],
                               a["lse"], a["mask"], a["lengths"], False, None, a["wts"])



# H + Dv large enough that a key chunk holds the minimum 256 keys, so Tk=300..700 spans
# several chunks (online-softmax state carried across them, exp(2k) tiles rebuilt per chunk).
# B=16: one split, so an item carries its rows (forward) / its keys (backward) across 3
# chunks. B=1, Tq=5: the forward splits the keys and merges the partial states; B=1, Tq=130:
# two query spans as well; B=2, odd H: padded keys per chunk. With lengths, chunks past every
# row's end are skipped.
CHUNK_SHAPES = [(16, 4, 600, 400, 120), (1, 5, 700, 500, 9), (1, 130, 300, 400, 120),
                (2, 9, 600, 333, 17)]


@pytest.mark.parametrize("shape", CHUNK_SHAPES, ids=[shape_id(*s) for s in CHUNK_SHAPES])
@pytest.mark.parametrize("masks", ["none", "padding", "lengths", "causal", "all"])
def test_key_chunks_spans_and_splits(shape, masks):
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv)
    check_against_reference(q, k, v, w, backend="cpp", **make_masks(masks, B, Tq, Tk))


@pytest.mark.parametrize("shape", [(1, 5, 700, 500, 9), (1, 40, 100, 48, 16)],
                         ids=["key-splits", "thread-spans"])
def test_forward_does_not_depend_on_thread_count(shape):
    # Splits depend on the shapes only; query spans are cut finer when threads would idle
    # (B=1, Tq=40: one span on one thread, several on more), which must not change a bit.
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, requires_grad=False)
    kw = make_masks("both", B, Tq, Tk)

    def run():
        return attnkern.additive_attention(q, k, v, w, backend="cpp", return_weights=True, **kw)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(threads, 4))
        first = run()
        torch.set_num_threads(1)
        again = run()
    finally:
        torch.set_num_threads(threads)
    check_against_reference(q, k, v, w, backend="cpp", grads=False, **kw)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


# ------------------------------------------------------------- key_exp (prepared keys)

# (B, Tq, Tk, H, Dv): Tq 1-2 take the h-vectorised factorised pass (no transposed tiles),
# Tq 9 builds the tiles from key_exp; H % 16 == 0 reads key_exp in place, else padded.
KEY_EXP_SHAPES = [(4, 1, 37, 24, 12), (3, 1, 130, 32, 8), (2, 2, 70, 48, 5), (2, 9, 33, 20, 7)]


def _ops_with_key_exp(q, k, v, w, kw, key_exp, weights_as_p=False, grad_weights=True):
    """fwd then bwd through the raw ops: (out, lse, weights, dq, dk, dv, dw). With
    weights_as_p, bwd is given the forward's weights (the kernel's p); without, and with
    grad_weights, the weights in another dtype (used for delta only: p is recomputed)."""
    mask, lengths = kw.get("key_padding_mask"), kw.get("key_lengths")
    causal = kw.get("causal", False)
    out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, mask, lengths, causal, True, key_exp)
    g = torch.Generator().manual_seed(5)
    gout = torch.randn(out.shape, generator=g).to(out.dtype)
    gw = torch.randn(wts.shape, generator=g).to(wts.dtype)
    other = torch.float64 if lse.dtype == torch.float32 else torch.float32
    weights = wts if weights_as_p else wts.to(other) if grad_weights else None
    grads = torch.ops.attnkern.bwd(gout, gw if grad_weights else None, q, k, v, w, out, lse,
                                   mask, lengths, causal, key_exp, weights)
    return (out, lse, wts, *grads)


@pytest.mark.parametrize("shape", KEY_EXP_SHAPES, ids=[shape_id(*s) for s in KEY_EXP_SHAPES])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_key_exp_gives_the_same_results(shape, kind):
    """key_exp = exp(2 key) only saves the kernel work: same results within float32
    rounding, every mask kind, forward and backward; and the forward matches the reference."""
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, requires_grad=False, seed=Tk)
    k[0, :3] *= 12.0  # a block with |k| past the factorised range: its direct fallback
    kw = make_masks(kind, B, Tq, Tk)
    plain = _ops_with_key_exp(q, k, v, w, kw, None)
    with_ke = _ops_with_key_exp(q, k, v, w, kw, torch.exp(2 * k))
    for a, b in zip(with_ke, plain):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)
    ref = attnkern.reference.additive_attention(
        *(t.double() for t in (q, k, v, w)), **kw, return_weights=True)
    torch.testing.assert_close(with_ke[0], ref[0].float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(with_ke[2], ref[1].float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("big", [30.0, -30.0, float("inf"), float("-inf")])
@pytest.mark.parametrize("shape", [KEY_EXP_SHAPES[1], KEY_EXP_SHAPES[3]], ids=["Tq1", "Tq9"])
def test_key_exp_range_test_sends_large_keys_direct(shape, big):
    """With key_exp the kernel tests the factorised range on exp(2k) itself (it does not
    read the raw keys for it): a block with one |k| past the range, or an infinite key
    (exp(2k) = inf or 0), still takes the direct path and matches the plain op."""
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, requires_grad=False, seed=11)
    k[0, 1, 3] = big
    kw = make_masks("none", B, Tq, Tk)
    plain = _ops_with_key_exp(q, k, v, w, kw, None)
    with_ke = _ops_with_key_exp(q, k, v, w, kw, torch.exp(2 * k))
    for a, b in zip(with_ke, plain):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16],
                         ids=lambda d: str(d).split(".")[-1])
def test_key_exp_other_dtypes(dtype):
    q, k, v, w = make_inputs(2, 1, 40, 24, 6, requires_grad=False, dtype=dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    kw = make_masks("both", 2, 1, 40)
    plain = _ops_with_key_exp(q, k, v, w, kw, None)
    with_ke = _ops_with_key_exp(q, k, v, w, kw, torch.exp(2 * k.to(acc)))
    for a, b in zip(with_ke, plain):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bad", ["shape", "dtype", "rank"])
def test_key_exp_bad_input_raises(bad):
    g = _good()
    ke = {"shape": torch.ones(2, 4, 4), "dtype": torch.ones(2, 5, 4, dtype=torch.float64),
          "rank": torch.ones(2, 5)}[bad]
    with pytest.raises(ValueError if bad != "dtype" else TypeError,
                       match="attnkern::fwd: key_exp must be"):
        torch.ops.attnkern.fwd(g["q"], g["k"], g["v"], g["w"], None, None, False, False, ke)
    out, lse, _ = torch.ops.attnkern.fwd(g["q"], g["k"], g["v"], g["w"], None, None, False,
                                         False)
    with pytest.raises(ValueError if bad != "dtype" else TypeError,
                       match="attnkern::bwd: key_exp must be"):
        torch.ops.attnkern.bwd(torch.ones_like(out), None, g["q"], g["k"], g["v"], g["w"], out,
                               lse, None, None, False, ke)


# ----------------------------------------- weights in bwd: the forward's weights as p

# (B, Tq, Tk, H, Dv): one query block (a decoder step: dV rows written once, the keys no
# row sees zeroed) and several; Tk past one key block; the factorised and direct paths.
WEIGHTS_AS_P_SHAPES = [(8, 1, 120, 32, 40), (3, 1, 70, 24, 12), (2, 5, 130, 20, 7),
                (2, 20, 65, 48, 33)]


@pytest.mark.parametrize("shape", WEIGHTS_AS_P_SHAPES,
                         ids=[shape_id(*s) for s in WEIGHTS_AS_P_SHAPES])
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("prepared", [False, True], ids=["keys", "key_exp"])
def test_weights_as_p_give_the_same_gradients(shape, kind, prepared):
    """bwd given the forward's weights in the accumulation dtype reads p from them instead
    of recomputing the scores: the same gradients within rounding (p = exp(s - lse) either
    way), every mask kind, with and without key_exp."""
    B, Tq, Tk, H, Dv = shape
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, requires_grad=False, seed=Tk + Tq)
    kw = make_masks(kind, B, Tq, Tk)
    key_exp = torch.exp(2 * k) if prepared else None
    plain = _ops_with_key_exp(q, k, v, w, kw, key_exp)[3:]
    as_p = _ops_with_key_exp(q, k, v, w, kw, key_exp, weights_as_p=True)[3:]
    for a, b in zip(as_p, plain):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("shape", WEIGHTS_AS_P_SHAPES[::3],
                         ids=[shape_id(*s) for s in WEIGHTS_AS_P_SHAPES[::3]])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_weights_as_p_gradients_match_the_reference(shape, kind):
    """Through autograd (return_weights=True: the C++ backward passes the weights, the
    kernel's p) against the float64 reference, every mask kind, so dk and dv of the keys
    no row sees must be zero."""
    check_against_reference(*make_inputs(*shape, seed=3), backend="cpp",
                            **make_masks(kind, *shape[:3]))


def test_weights_as_p_float64():
    q, k, v, w = make_inputs(2, 1, 40, 24, 6, requires_grad=False, dtype=torch.float64)
    kw = make_masks("both", 2, 1, 40)
    for a, b in zip(_ops_with_key_exp(q, k, v, w, kw, None, weights_as_p=True,
                                      grad_weights=False),
                    _ops_with_key_exp(q, k, v, w, kw, None, grad_weights=False)):
        torch.testing.assert_close(a, b)


def test_weights_bad_shape_raises():
    g = _good()
    out, lse, wts = torch.ops.attnkern.fwd(g["q"], g["k"], g["v"], g["w"], None, None, False,
                                           True)
    with pytest.raises(ValueError, match="attnkern::bwd: weights must be"):
        torch.ops.attnkern.bwd(torch.ones_like(out), None, g["q"], g["k"], g["v"], g["w"], out,
                               lse, None, None, False, None, wts[:, :, :-1])


def test_weights_in_another_dtype_are_not_p():
    """float64 weights for float32 inputs are not the kernel's p (it recomputes): same
    gradients as without them."""
    q, k, v, w = make_inputs(2, 1, 40, 24, 6, requires_grad=False)
    kw = make_masks("both", 2, 1, 40)
    out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, kw.get("key_padding_mask"),
                                           kw.get("key_lengths"), False, True)
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    args = (gout, None, q, k, v, w, out, lse, kw.get("key_padding_mask"), kw.get("key_lengths"),
            False, None)
    plain = torch.ops.attnkern.bwd(*args, None)
    other = torch.ops.attnkern.bwd(*args, wts.double())
    for a, b in zip(other, plain):
        assert torch.equal(a, b)


def test_opcheck_bwd_with_weights_as_p():
    q, k, v, w, mask, lengths, causal, _ = _op_samples()[1]
    q, k, v, w = (t.detach() for t in (q, k, v, w))
    out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, mask, lengths, causal, True)
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    torch.library.opcheck(torch.ops.attnkern.bwd.default,
                          (gout, None, q, k, v, w, out, lse, mask, lengths, causal, None,
                           wts.to(lse.dtype)))


def test_gradients_of_gradients_raise_clearly():
    q, k, v, w = make_inputs(2, 3, 5, 4, 6)
    out = attnkern.additive_attention(q, k, v, w, backend="cpp")
    with pytest.raises(RuntimeError, match="gradients of gradients .* not supported"):
        torch.autograd.grad(out.sum(), [q], create_graph=True)
    # a plain backward is unaffected
    out = attnkern.additive_attention(q, k, v, w, backend="cpp")
    (dq,) = torch.autograd.grad(out.sum(), [q])
    assert dq.shape == q.shape


# ------------------------------------------------ a padded tail costs nothing, same results

@pytest.mark.parametrize("step", [True, False])
def test_padded_tail_equals_the_truncated_keys(step):
    """A key_padding_mask whose last keys are padding: the kernels stop at each batch's
    last usable key (make_masks in csrc/ops.cpp). Outputs and gradients equal those of the
    keys cut there (bitwise in the forward), the tail's gradients are zero, and NaN in the
    tail's keys and values is never read."""
    B, Tq, Tk, H, Dv = 3, 4, 150, 20, 9
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, step=step, dtype=torch.float64,
                             requires_grad=False)
    ends = [150, 70, 0]
    mask = torch.arange(Tk)[None] >= torch.tensor(ends)[:, None]
    mask[0, 10] = True  # a hole below the end stays masked
    k, v = k.clone(), v.clone()
    for b, e in enumerate(ends):
        k[b, e:] = float("nan")
        v[b, e:] = float("nan")
    for t in (q, k, v, w):
        t.requires_grad_(True)
    out, wts = attnkern.additive_attention(q, k, v, w, key_padding_mask=mask,
                                           return_weights=True, backend="cpp")
    assert not out.isnan().any() and not wts.isnan().any()
    grads = torch.autograd.grad((out * torch.randn(out.shape).double()).sum() + wts.sum(),
                                (q, k, v, w))
    for b, e in enumerate(ends):
        tail = slice(e, None)
        assert torch.all(grads[1][b, tail] == 0) and torch.all(grads[2][b, tail] == 0)
        assert torch.all(wts[b, ..., tail] == 0)
        if e == 0:
            continue
        qb = q[b:b + 1]
        ob, wb = attnkern.additive_attention(qb, k[b:b + 1, :e], v[b:b + 1, :e], w,
                                             key_padding_mask=mask[b:b + 1, :e],
                                             return_weights=True, backend="cpp")
        assert torch.equal(ob, out[b:b + 1]) and torch.equal(wb, wts[b:b + 1, ..., :e])
    for g in grads:
        assert not g.isnan().any()


# ------------------------------------------------ attnkern::location_attention (inference)

def _location_case(B, T, A, C, Dv, kernel, *, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    taps = next(t for t in range(kernel, kernel + 16) if C * t % 16 == 0)
    return dict(
        query=torch.randn(B, A, generator=g).to(dtype),
        processed_memory=torch.randn(B, T, A, generator=g).to(dtype),
        attention_weights_cat=torch.rand(B, C, T, generator=g).to(dtype),
        location_filter=(torch.randn(A, C * taps, generator=g) / (C * taps) ** 0.5).to(dtype),
        memory=torch.randn(B, T, Dv, generator=g).to(dtype),
        weight=(torch.randn(A, generator=g) / A ** 0.5).to(dtype),
    )


def _location_unfused(x, mask, lengths, kernel, pad):
    from attnkern.modules._family import location_term
    keys = location_term(x["processed_memory"], x["attention_weights_cat"],
                         x["location_filter"], kernel, pad)
    return attnkern.additive_attention(x["query"], keys, x["memory"], x["weight"],
                                       key_padding_mask=mask, key_lengths=lengths,
                                       return_weights=True, backend="cpp")


def _location_reference64(x, mask, lengths, kernel, pad):
    """Standard ops in float64: the conv as conv1d, then the attention reference."""
    d = {n: t.double() for n, t in x.items()}
    C, T = d["attention_weights_cat"].shape[1:]
    A = d["location_filter"].shape[0]
    filt = d["location_filter"].view(A, C, -1)[:, :, :kernel]
    term = torch.nn.functional.conv1d(d["attention_weights_cat"], filt, padding=pad)
    keys = d["processed_memory"] + term[..., :T].transpose(1, 2)
    return attnkern.reference.additive_attention(
        d["query"], keys, d["memory"], d["weight"], key_padding_mask=mask, key_lengths=lengths,
        return_weights=True)


# (B, T, A, C, Dv, kernel): tacotron2's geometry, one channel (LAS), T below the kernel,
# A not a multiple of 16, T past a key block, B = 1
LOCATION_CASES = [(3, 17, 16, 2, 12, 15), (5, 40, 20, 1, 7, 5), (1, 3, 8, 2, 4, 31),
                  (2, 130, 24, 2, 33, 31), (9, 23, 128, 2, 64, 31)]


@pytest.mark.parametrize("case", LOCATION_CASES,
                         ids=lambda c: "B{}-T{}-A{}-C{}-Dv{}-k{}".format(*c))
@pytest.mark.parametrize("kind", ["none", "padding", "lengths", "both", "tail", "all"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_location_attention_matches_the_unfused_step(case, kind, dtype):
    B, T, A, C, Dv, kernel = case
    pad = (kernel - 1) // 2
    x = _location_case(B, T, A, C, Dv, kernel, dtype=dtype)
    kw = make_masks("both" if kind in ("tail", "all") else kind, B, 1, T)
    mask, lengths = kw.get("key_padding_mask"), kw.get("key_lengths")
    if kind in ("tail", "all"):
        mask = mask | (torch.arange(T)[None] >= torch.randint(0, T + 1, (B,))[:, None])
        lengths = None if kind == "tail" else lengths
    if kind == "all":
        mask[0] = True  # a row with no usable key: zeros
    out, wts = torch.ops.attnkern.location_attention(*x.values(), mask, lengths, kernel, pad)
    ref_out, ref_wts = _location_unfused(x, mask, lengths, kernel, pad)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(out, ref_out, **tol)
    torch.testing.assert_close(wts, ref_wts, **tol)
    r64_out, r64_wts = _location_reference64(x, mask, lengths, kernel, pad)
    tol64 = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else tol
    torch.testing.assert_close(out.double(), r64_out, **tol64)
    torch.testing.assert_close(wts.double(), r64_wts, **tol64)
    assert out.dtype == wts.dtype == dtype and out.shape == (B, Dv) and wts.shape == (B, T)


def test_location_attention_reads_any_strides():
    """Non-contiguous inputs: the value read in place through its row strides (a
    (T, B)-major encoder output), the others copied; the same results as contiguous ones."""
    B, T, A, C, Dv, kernel = 4, 50, 24, 2, 16, 31
    x = _location_case(B, T, A, C, Dv, kernel)
    strided = {
        "query": x["query"].t().contiguous().t(),
        "processed_memory": x["processed_memory"].transpose(0, 1).contiguous().transpose(0, 1),
        "attention_weights_cat": x["attention_weights_cat"].transpose(1, 2).contiguous()
        .transpose(1, 2),
        "location_filter": x["location_filter"].t().contiguous().t(),
        "memory": x["memory"].transpose(0, 1).contiguous().transpose(0, 1),
        "weight": torch.stack((x["weight"], x["weight"]), 1)[:, 0],
    }
    assert not any(t.is_contiguous() for t in strided.values())
    mask = make_masks("padding", B, 1, T)["key_padding_mask"]
    a = torch.ops.attnkern.location_attention(*x.values(), mask, None, kernel, 15)
    b = torch.ops.attnkern.location_attention(*strided.values(), mask.t().contiguous().t(),
                                              None, kernel, 15)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=1e-5)


def test_location_attention_opcheck():
    x = _location_case(3, 20, 16, 2, 8, 5)
    kw = make_masks("both", 3, 1, 20)
    torch.library.opcheck(torch.ops.attnkern.location_attention.default,
                          (*x.values(), kw["key_padding_mask"], kw["key_lengths"], 5, 2),
                          test_utils=("test_schema", "test_faketensor"))


def test_location_attention_refuses_inputs_that_require_grad():
    x = _location_case(2, 9, 16, 2, 8, 5)
    x["memory"].requires_grad_(True)
    args = (*x.values(), None, None, 5, 2)
    with pytest.raises(ValueError, match="memory requires grad.*inference only"):
        torch.ops.attnkern.location_attention(*args)
    with torch.no_grad():
        torch.ops.attnkern.location_attention(*args)  # fine without grad mode


@pytest.mark.parametrize("change, match", [
    (dict(query=torch.randn(2, 1, 16)), r"query must be \(B, attention_dim\)"),
    (dict(processed_memory=torch.randn(2, 9, 15)), "query, processed_memory and weight must "
     "share the hidden size"),
    (dict(memory=torch.randn(2, 8, 8)), "processed_memory and memory must have the same"),
    (dict(attention_weights_cat=torch.rand(2, 2, 10)),
     r"attention_weights_cat must be \(B, C, T\)"),
    (dict(attention_weights_cat=torch.rand(2, 2, 9).double()), "attention_weights_cat must "
     "have query's dtype"),
    (dict(location_filter=torch.randn(16, 15)),
     r"location_filter must be \(attention_dim, C \* taps\)"),
    (dict(location_filter=torch.randn(16, 8)), "taps >= kernel"),
    (dict(weight=torch.randn(16).double()), "must share one dtype"),
])
def test_location_attention_checks_its_inputs(change, match):
    x = _location_case(2, 9, 16, 2, 8, 5)
    x.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        torch.ops.attnkern.location_attention(*x.values(), None, None, 5, 2)


@pytest.mark.parametrize("kernel, pad", [(0, 0), (5, 5), (5, -1)])
def test_location_attention_checks_its_geometry(kernel, pad):
    x = _location_case(2, 9, 16, 2, 8, 5)
    with pytest.raises(ValueError, match="kernel must be >= 1 and pad in"):
        torch.ops.attnkern.location_attention(*x.values(), None, None, kernel, pad)


def test_location_attention_checks_masks():
    x = _location_case(2, 9, 16, 2, 8, 5)
    with pytest.raises(ValueError, match=r"key_lengths must lie in \[0, Tk=9\] \(processed_memory"):
        torch.ops.attnkern.location_attention(*x.values(), None, torch.tensor([3, 10]), 5, 2)
    with pytest.raises(TypeError, match="key_padding_mask must be a bool tensor"):
        torch.ops.attnkern.location_attention(*x.values(), torch.zeros(2, 9), None, 5, 2)


# ------------------------------------------------ attnkern::location1_attention (inference)

# (B, T, A, C, K): the LAS geometry scaled down, K = 1 (coverage), T below K, T past the
# kernels' 64-row conv blocks, A not a multiple of 16
LOCATION1_CASES = [(3, 17, 16, 4, 5), (2, 9, 20, 1, 1), (2, 5, 8, 3, 11), (4, 150, 40, 10, 21)]


@pytest.mark.parametrize("case", LOCATION1_CASES, ids=lambda c: "B{}-T{}-A{}-C{}-K{}".format(*c))
@pytest.mark.parametrize("kind", ["none", "padding", "lengths", "tail", "all"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_location1_attention_matches_the_unfused_step(case, kind, dtype):
    B, T, A, C, K = case
    g = torch.Generator().manual_seed(3)
    q, base, prev = (torch.randn(B, A, generator=g), torch.randn(B, T, A, generator=g),
                     torch.rand(B, T, generator=g))
    cw, dw = torch.randn(C, K, generator=g) / K, torch.randn(A, C, generator=g) / C
    mem, w = torch.randn(B, T, 7, generator=g), torch.randn(A, generator=g) / A ** 0.5
    q, base, prev, cw, dw, mem, w = (t.to(dtype) for t in (q, base, prev, cw, dw, mem, w))
    kw = make_masks("both" if kind in ("tail", "all") else kind, B, 1, T)
    mask, lengths = kw.get("key_padding_mask"), kw.get("key_lengths")
    if kind in ("tail", "all"):
        mask = mask | (torch.arange(T)[None] >= torch.randint(0, T + 1, (B,), generator=g)[:, None])
        lengths = None if kind == "tail" else lengths
    out, wts = torch.ops.attnkern.location1_attention(q, base, prev, cw, dw, mem, w, mask,
                                                      lengths)
    keys = torch.ops.attnkern.location1_keys(base, prev, cw, dw)
    ref_out, ref_wts = attnkern.additive_attention(q, keys, mem, w, key_padding_mask=mask,
                                                   key_lengths=lengths, return_weights=True,
                                                   backend="cpp")
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(out, ref_out, **tol)
    torch.testing.assert_close(wts, ref_wts, **tol)
    # and the conv itself against standard ops in float64
    conv = torch.nn.functional.conv1d(prev.double().unsqueeze(1), cw.double().unsqueeze(1),
                                      padding=(K - 1) // 2)
    keys64 = base.double() + conv.transpose(1, 2) @ dw.double().t()
    r_out, r_wts = attnkern.reference.additive_attention(
        q.double(), keys64, mem.double(), w.double(), key_padding_mask=mask,
        key_lengths=lengths, return_weights=True)
    tol64 = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else tol
    torch.testing.assert_close(out.double(), r_out, **tol64)
    torch.testing.assert_close(wts.double(), r_wts, **tol64)


def test_location1_attention_opcheck_and_checks():
    g = torch.Generator().manual_seed(4)
    args = [torch.randn(2, 16, generator=g), torch.randn(2, 9, 16, generator=g),
            torch.rand(2, 9, generator=g), torch.randn(3, 5, generator=g),
            torch.randn(16, 3, generator=g), torch.randn(2, 9, 6, generator=g),
            torch.randn(16, generator=g)]
    kw = make_masks("both", 2, 1, 9)
    torch.library.opcheck(torch.ops.attnkern.location1_attention.default,
                          (*args, kw["key_padding_mask"], kw["key_lengths"]),
                          test_utils=("test_schema", "test_faketensor"))
    op = torch.ops.attnkern.location1_attention
    for i, bad, match in ((2, torch.rand(2, 8), r"prev must be \(B, T\) = \(2, 9\)"),
                          (3, torch.randn(3, 4), "odd number of taps"),
                          (4, torch.randn(16, 2), r"dense_weight must be \(attention_dim, C\)"),
                          (1, torch.randn(2, 9, 15), "hidden size"),
                          (2, torch.rand(2, 9).double(), "prev must have query's dtype")):
        wrong = list(args)
        wrong[i] = bad
        with pytest.raises((ValueError, TypeError), match=match):
            op(*wrong, None, None)
    args[5].requires_grad_(True)
    with pytest.raises(ValueError, match="memory requires grad"):
        op(*args, None, None)
