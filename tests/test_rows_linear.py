"""A decoder step's linear layer on a few rows (csrc/kernels/rows_linear.cpp) against
``F.linear``, on every ISA path this CPU has: ``attnkern::rows_linear`` (inference), the
weight-gradient store's ``wgrad_record_linear`` (forward, ``dx`` and the stored ``dW``), and
the family modules' query layers that use them.

Shapes hit the kernel's blocks: rows below, at and past the 4-row block and the 16-row
limit (the BLAS above it), weight rows not a multiple of the column block, K below, at and
past a vector and not a multiple of one, empty dimensions.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkern import ops
from attnkern.modules._family import inference_linear, project_query, query_store
from attnkern.state import record_linear, weight_grad_store

pytestmark = [pytest.mark.skipif(
    not ops.HAS_CPP, reason=f"attnkern._C is not built ({ops.CPP_IMPORT_ERROR})"
), pytest.mark.usefixtures("every_isa")]  # every ISA path this CPU has (tests/conftest.py)

# (M, K, N)
SHAPES = [
    (4, 1024, 128),  # Coqui's / tacotron2's query layer at B4
    (16, 1024, 512),  # ESPnet's mlp_dec at B16: the row limit
    (1, 7, 3),  # one row, K below a vector
    (3, 33, 5),  # ragged everything
    (5, 16, 9),  # one 4-row block and a row; K exactly a vector
    (17, 40, 6),  # past the limit: at::matmul
    (0, 8, 4),  # no rows
    (2, 0, 4),  # K = 0: zeros
    (2, 8, 0),  # no outputs
]
IDS = ["M{}-K{}-N{}".format(*s) for s in SHAPES]
# float32: sums of up to 1024 unit-variance products (|y| ~ 32) in another order than the
# BLAS's: differences of a few 1e-5
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def _inputs(M, K, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, K, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(N, K, generator=g, dtype=torch.float64).to(dtype))


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_linear_matches_linear(shape, dtype):
    x, w = _inputs(*shape, dtype)
    with torch.no_grad():
        got = ops.rows_linear(x, w)
    torch.testing.assert_close(got, F.linear(x.double(), w.double()).to(dtype), **TOL[dtype])
    assert got.dtype == dtype and got.shape == (shape[0], shape[2]) and got.is_contiguous()


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_record_linear_forward_and_gradients(shape, dtype):
    x, w = _inputs(*shape, dtype)
    x.requires_grad_()
    w.requires_grad_()
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    token = weight_grad_store(w, linear=True)
    g = torch.randn(shape[0], shape[2], dtype=dtype)
    y = record_linear(token, x, w, w.detach().t())
    (y * g).sum().backward()
    ref = F.linear(xr, wr)
    (ref * g).sum().backward()
    torch.testing.assert_close(y, ref, **TOL[dtype])
    torch.testing.assert_close(x.grad, xr.grad, **TOL[dtype])
    torch.testing.assert_close(w.grad, wr.grad, **TOL[dtype])


def test_non_contiguous_inputs():
    x, w = _inputs(6, 40, 10, torch.float32)
    xt = torch.randn(40, 6).t()  # (6, 40), strides (1, 6)
    wt = torch.randn(40, 10).t()
    with torch.no_grad():
        torch.testing.assert_close(ops.rows_linear(xt, w), F.linear(xt, w), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ops.rows_linear(x, wt), F.linear(x, wt), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ops.rows_linear(x[:, ::2], w[:, ::2]),
                                   F.linear(x[:, ::2], w[:, ::2]), rtol=1e-5, atol=1e-5)


def test_results_do_not_depend_on_threads():
    x, w = _inputs(4, 1024, 512, torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = ops.rows_linear(x, w)
        torch.set_num_threads(2)
        with torch.no_grad():
            two = ops.rows_linear(x, w)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_bad_inputs_name_the_argument():
    x, w = _inputs(2, 8, 4, torch.float32)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"x must be \(M, K\)"):
            ops.rows_linear(x[0], w)
        with pytest.raises(ValueError, match=r"weight must be \(N, K=8\)"):
            ops.rows_linear(x, w[:, :5])
        with pytest.raises(TypeError, match="float32 or both float64"):
            ops.rows_linear(x, w.double())
        with pytest.raises(TypeError, match="float32 or both float64"):
            ops.rows_linear(x.half(), w.half())
    with pytest.raises(ValueError, match="weight requires grad, and this op is for inference only"):
        ops.rows_linear(x, w.requires_grad_())


def test_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = ops.rows_linear(torch.empty(3, 8), torch.empty(5, 8))
    assert out.shape == (3, 5)


class _Wrapped(torch.nn.Module):
    """A layer whose forward does more than its linear layer: must be called as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.linear_layer = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.linear_layer(x) * 2


@pytest.mark.parametrize("bias", [True, False])
def test_query_layer_paths_match_the_layer(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4, bias=bias)
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(inference_linear(layer, x), layer(x))
        wrapped = _Wrapped()
        torch.testing.assert_close(inference_linear(wrapped, x), wrapped(x))
        torch.testing.assert_close(project_query(wrapped, x, None, None), wrapped(x))
    token, of = query_store(layer)
    assert token is not None and of is layer.weight
    xg = x.clone().requires_grad_()
    project_query(layer, xg, token, of).square().sum().backward()
    got = [xg.grad] + [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    xr = x.clone().requires_grad_()
    layer(xr).square().sum().backward()
    for a, b in zip(got, [xr.grad] + [p.grad for p in layer.parameters()]):
        torch.testing.assert_close(a, b)
    # a hook on the layer: the layer is called (the hook runs), no store
    seen = []
    layer.register_forward_hook(lambda m, i, o: seen.append(1))
    assert query_store(layer) == (None, None)
    with torch.no_grad():
        inference_linear(layer, x)
    project_query(layer, x, token, of)
    assert len(seen) == 2
