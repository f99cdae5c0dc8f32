"""The reference is the spec: check it against a literal, loop-by-loop reading of DESIGN.md."""

import math

import pytest
import torch
from helpers import MASK_KINDS, make_inputs, make_masks

from attnkern import reference


def naive(q, k, v, w, key_padding_mask=None, key_lengths=None, causal=False):
    """Python loops over (b, i, j): DESIGN.md's formulas word for word, in float64."""
    B, Tq, H = q.shape
    Tk, Dv = k.shape[1], v.shape[2]
    out = torch.zeros(B, Tq, Dv, dtype=torch.float64)
    alpha = torch.zeros(B, Tq, Tk, dtype=torch.float64)
    for b in range(B):
        for i in range(Tq):
            usable = []
            for j in range(Tk):
                if key_padding_mask is not None and key_padding_mask[b, j]:
                    continue
                if key_lengths is not None and j >= key_lengths[b]:
                    continue
                if causal and j > i + (Tk - Tq):
                    continue
                e = sum(w[h].item() * math.tanh(q[b, i, h].item() + k[b, j, h].item())
                        for h in range(H))
                usable.append((j, e))
            if not usable:
                continue
            m = max(e for _, e in usable)
            z = sum(math.exp(e - m) for _, e in usable)
            for j, e in usable:
                alpha[b, i, j] = math.exp(e - m) / z
            out[b, i] = alpha[b, i] @ v[b].double()
    return out, alpha


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("B,Tq,Tk,H,Dv", [(2, 3, 5, 4, 3), (3, 5, 3, 7, 2), (1, 1, 1, 1, 1)])
def test_reference_matches_loops(B, Tq, Tk, H, Dv, kind):
    q, k, v, w = make_inputs(B, Tq, Tk, H, Dv, dtype=torch.float64, requires_grad=False)
    kw = make_masks(kind, B, Tq, Tk)
    out, alpha = reference.additive_attention(q, k, v, w, return_weights=True, **kw)
    eout, ealpha = naive(q, k, v, w, **kw)
    torch.testing.assert_close(out, eout)
    torch.testing.assert_close(alpha, ealpha)


def test_reference_step_mode_is_one_row():
    q, k, v, w = make_inputs(3, 1, 6, 5, 4, requires_grad=False)
    lengths = torch.tensor([6, 2, 0])
    out2, a2 = reference.additive_attention(q[:, 0], k, v, w, key_lengths=lengths,
                                            return_weights=True)
    out3, a3 = reference.additive_attention(q, k, v, w, key_lengths=lengths, return_weights=True)
    assert out2.shape == (3, 4) and a2.shape == (3, 6)
    torch.testing.assert_close(out2, out3[:, 0])
    torch.testing.assert_close(a2, a3[:, 0])
    assert (out2[2] == 0).all() and (a2[2] == 0).all()


def test_fully_masked_rows_zero_with_finite_zero_grads():
    q, k, v, w = make_inputs(2, 4, 5, 3, 2, dtype=torch.float64)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1] = True
    out, alpha = reference.additive_attention(q, k, v, w, key_padding_mask=mask,
                                              return_weights=True)
    assert (out[1] == 0).all() and (alpha[1] == 0).all()
    (out.sum() + alpha.sum()).backward()
    for t in (q, k, v, w):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[1] == 0).all() and (k.grad[1] == 0).all() and (v.grad[1] == 0).all()


def test_causal_with_more_queries_than_keys_masks_early_rows():
    # Tq > Tk: query i sees keys j <= i + (Tk - Tq), so the first Tq - Tk rows see nothing.
    q, k, v, w = make_inputs(1, 5, 3, 4, 2, requires_grad=False)
    out, alpha = reference.additive_attention(q, k, v, w, causal=True, return_weights=True)
    assert (alpha[0, :2] == 0).all() and (out[0, :2] == 0).all()
    torch.testing.assert_close(alpha[0, 2:].sum(-1), torch.ones(3))
    assert (alpha[0, 2, 1:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reference_keeps_dtype_and_accumulates_in_float32(dtype):
    q, k, v, w = make_inputs(2, 3, 40, 16, 5, dtype=dtype, requires_grad=False)
    out, alpha = reference.additive_attention(q, k, v, w, return_weights=True)
    assert out.dtype == dtype and alpha.dtype == dtype
    out64, _ = reference.additive_attention(q.double(), k.double(), v.double(), w.double(),
                                            return_weights=True)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.double(), out64, atol=8 * eps, rtol=8 * eps)


def test_gradcheck_reference_with_masks():
    q, k, v, w = make_inputs(2, 3, 4, 3, 2, dtype=torch.float64)
    kw = make_masks("both", 2, 3, 4)
    assert torch.autograd.gradcheck(
        lambda *a: reference.additive_attention(*a, return_weights=True, causal=True, **kw),
        (q, k, v, w),
    )
