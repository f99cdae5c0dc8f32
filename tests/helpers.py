"""Shared test utilities: input factories, mask kinds, per-dtype tolerances, running a
backend on its device, and the one comparison with the reference.

Every backend is compared to ``attnkern.reference`` evaluated in float64 (the spec), with a
tolerance per dtype (``check_against_reference``). Test modules import from here, never
from each other; the ``backend`` fixture that runs a test on every backend of the process
is in conftest.py.
"""

from __future__ import annotations

import torch

import attnkern
from attnkern import ops, testing

# (atol, rtol) of a backend in this dtype against the float64 reference.
TOL = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (2e-5, 2e-4),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (4e-3, 4e-3),
}
GRAD_TOL = {
    torch.float64: (1e-9, 1e-8),
    torch.float32: (1e-4, 1e-3),
    torch.bfloat16: (8e-2, 8e-2),
    torch.float16: (1e-2, 1e-2),
}
MASK_KINDS = ("none", "padding", "lengths", "both", "causal", "all")


def make_inputs(B, Tq, Tk, H, Dv, *, dtype=torch.float32, device="cpu", step=False,
                scale=1.0, seed=0, requires_grad=True):
    """Random (query, key, value, weight); query is (B, H) when ``step``."""
    g = torch.Generator().manual_seed(seed)
    qshape = (B, H) if step else (B, Tq, H)
    q = torch.randn(qshape, generator=g) * scale
    k = torch.randn(B, Tk, H, generator=g) * scale
    v = torch.randn(B, Tk, Dv, generator=g)
    w = torch.randn(H, generator=g) / H**0.5
    out = [t.to(device=device, dtype=dtype) for t in (q, k, v, w)]
    if requires_grad:
        for t in out:
            t.requires_grad_(True)
    return out


def make_masks(kind, B, Tq, Tk, *, device="cpu", seed=0):
    """kwargs for additive_attention: key_padding_mask / key_lengths / causal.

    'all' combines the three and makes batch row 0 fully masked (length 0).
    """
    g = torch.Generator().manual_seed(seed + 1)
    kw: dict = {}
    if kind in ("padding", "both", "all"):
        kw["key_padding_mask"] = (torch.rand(B, Tk, generator=g) < 0.3).to(device)
    if kind in ("lengths", "both", "all"):
        lengths = torch.randint(0, Tk + 1, (B,), generator=g)
        if kind == "all" and B > 0:
            lengths[0] = 0
        kw["key_lengths"] = lengths.to(device)
    if kind in ("causal", "all"):
        kw["causal"] = True
    return kw


def reference64(q, k, v, w, **kw):
    """The spec evaluated in float64 (on CPU), returning (leaves, out, weights)."""
    args = [t.detach().double().cpu().requires_grad_(t.requires_grad) for t in (q, k, v, w)]
    kw = {n: (x.cpu() if isinstance(x, torch.Tensor) else x) for n, x in kw.items()}
    out, wts = attnkern.reference.additive_attention(*args, return_weights=True, **kw)
    return args, out, wts


def device_of(backend):
    """Where ``backend`` runs: Triton on CUDA unless the interpreter has taken over the CPU
    kernels (``testing.triton_on_cpu()``); the rest on CPU."""
    if backend == "triton" and not testing.triton_on_cpu():
        return "cuda"
    return "cpu"


def fused(backend):
    """Whether ``backend`` is a fused kernel (everything but the plain-PyTorch reference)."""
    return backend != "reference"


def run(backend, q, k, v, w, **kw):
    """(out, weights) from ``backend``, on CPU. Inputs go to the backend's device first
    (differentiably, a no-op when they are there already), so gradients reach the caller's
    leaves and every comparison can stay on CPU."""
    dev = device_of(backend)
    q, k, v, w = (t.to(dev) for t in (q, k, v, w))
    kw = {n: (x.to(dev) if isinstance(x, torch.Tensor) else x) for n, x in kw.items()}
    out, wts = attnkern.additive_attention(q, k, v, w, return_weights=True, backend=backend,
                                           **kw)
    return out.cpu(), wts.cpu()


def grads_of(outputs, inputs, seed=3):
    """Gradients of a random linear function of ``outputs`` w.r.t. ``inputs``."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g).to(o)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs, allow_unused=True)


def check_against_reference(q, k, v, w, *, backend, grads=True, seed=0, **kw):
    """``backend`` vs the float64 reference: output, weights and (with ``grads``) the four
    gradients of a random linear loss drawn from ``seed``, with the per-dtype tolerances
    above. Inputs may be on CPU or already on the backend's device; empty tensors allowed."""
    dtype = q.dtype
    out, wts = run(backend, q, k, v, w, **kw)
    args64, rout, rwts = reference64(q, k, v, w, **kw)
    assert out.dtype == dtype and wts.dtype == dtype
    assert out.shape == rout.shape and wts.shape == rwts.shape
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.double(), rout.detach(), atol=atol, rtol=rtol)
    torch.testing.assert_close(wts.double(), rwts.detach(), atol=atol, rtol=rtol)
    if not grads:
        return
    gatol, grtol = GRAD_TOL[dtype]
    for name, a, b in zip(("query", "key", "value", "weight"),
                          grads_of([out, wts], (q, k, v, w), seed=seed),
                          grads_of([rout, rwts], args64, seed=seed)):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert torch.isfinite(a).all(), f"non-finite grad_{name}"
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a.double().cpu(), b, atol=gatol * scale, rtol=grtol,
                                   msg=lambda m, n=name: f"grad_{n}: {m}")


def triton_module_device():
    """Device of a Triton test module: "cpu" under TRITON_INTERPRET=1, else "cuda"; skips
    the whole module where Triton is missing or neither is available."""
    import pytest

    if not ops.HAS_TRITON:
        pytest.skip("Triton is not installed", allow_module_level=True)
    if testing.triton_interpret_enabled():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("the Triton kernels need CUDA, or TRITON_INTERPRET=1 to run them on CPU "
                "tensors (`TRITON_INTERPRET=1 pytest tests/test_triton*.py`)",
                allow_module_level=True)


def shape_id(B, Tq, Tk, H, Dv):
    return f"B{B}-Tq{Tq}-Tk{Tk}-H{H}-Dv{Dv}"


# ------------------------------------------------- direct op calls with one bad input each

# name -> (op, the bad call's changes, the functional call rejecting the same input or
# None). The base call is B=2, Tq=3, Tk=5, H=4, Dv=6, float32; "-range" cases need the
# lengths' values (not read under fake tensors).
BAD_OP_CALLS = {
    "fwd-query-4d": ("fwd", {"query": lambda a: a["query"][None]}, True),
    "fwd-query-1d": ("fwd", {"query": lambda a: a["query"][0, 0]}, True),
    "fwd-key-2d": ("fwd", {"key": lambda a: a["key"][0]}, True),
    "fwd-value-2d": ("fwd", {"value": lambda a: a["value"][0]}, True),
    "fwd-weight-2d": ("fwd", {"weight": lambda a: a["weight"][None].expand(2, 4)}, False),
    "fwd-key-batch": ("fwd", {"key": lambda a: a["key"][:1]}, True),
    "fwd-value-short": ("fwd", {"value": lambda a: a["value"][:, :4]}, True),
    "fwd-key-hidden": ("fwd", {"key": lambda a: a["key"][..., :3]}, True),
    "fwd-weight-short": ("fwd", {"weight": lambda a: a["weight"][:3]}, True),
    "fwd-int-dtype": ("fwd", {n: (lambda a, n=n: a[n].long())
                              for n in ("query", "key", "value", "weight")}, True),
    "fwd-mixed-dtype": ("fwd", {"key": lambda a: a["key"].double()}, True),
    "fwd-mask-float": ("fwd", {"key_padding_mask": lambda a: torch.zeros(2, 5)}, True),
    "fwd-mask-short": ("fwd", {"key_padding_mask":
                               lambda a: torch.zeros(2, 4, dtype=torch.bool)}, True),
    "fwd-lengths-int32": ("fwd", {"key_lengths": lambda a: torch.tensor([5, 1],
                                                                       dtype=torch.int32)},
                          False),
    "fwd-lengths-short": ("fwd", {"key_lengths": lambda a: torch.tensor([5])}, True),
    "fwd-lengths-range": ("fwd", {"key_lengths": lambda a: torch.tensor([5, 6])}, True),
    "fwd-key_exp-dtype": ("fwd", {"key_exp": lambda a: torch.ones(2, 5, 4,
                                                                  dtype=torch.float64)}, False),
    "fwd-key_exp-short": ("fwd", {"key_exp": lambda a: torch.ones(2, 4, 4)}, False),
    "bwd-key-short": ("bwd", {"key": lambda a: a["key"][:, :4]}, None),
    "bwd-grad_out-short": ("bwd", {"grad_out": lambda a: a["grad_out"][:, :, :5]}, None),
    "bwd-out-short": ("bwd", {"out": lambda a: a["out"][:1]}, None),
    "bwd-lse-short": ("bwd", {"lse": lambda a: a["lse"][:, :2]}, None),
    "bwd-lse-int": ("bwd", {"lse": lambda a: a["lse"].long()}, None),
    "bwd-grad_weights-no-weights": ("bwd", {"grad_weights": lambda a: torch.zeros(2, 3, 5)},
                                    None),
    "bwd-weights-short": ("bwd", {"grad_weights": lambda a: torch.zeros(2, 3, 5),
                                  "weights": lambda a: torch.zeros(2, 3, 4)}, None),
    "bwd-step-lse-3d": ("bwd", {n: (lambda a, n=n: a[n][:, 0])
                                for n in ("grad_out", "query", "out")}, None),
    "bwd-lengths-range": ("bwd", {"key_lengths": lambda a: torch.tensor([-1, 5])}, None),
}

_FWD_ARGS = ("query", "key", "value", "weight", "key_padding_mask", "key_lengths", "causal",
             "return_weights", "key_exp")
_BWD_ARGS = ("grad_out", "grad_weights", "query", "key", "value", "weight", "out", "lse",
             "key_padding_mask", "key_lengths", "causal", "key_exp", "weights", "value_grad")


def bad_op_call(case, device):
    """``(op, args, functional_args)`` of a BAD_OP_CALLS case on ``device``: the op's
    positional arguments, and ``(query, key, value, weight, kwargs)`` for
    ``additive_attention`` (or None where the functional accepts the input or has no
    counterpart)."""
    op, changes, functional = BAD_OP_CALLS[case]
    g = torch.Generator().manual_seed(0)
    a = {"query": torch.randn(2, 3, 4, generator=g), "key": torch.randn(2, 5, 4, generator=g),
         "value": torch.randn(2, 5, 6, generator=g), "weight": torch.randn(4, generator=g),
         "key_padding_mask": None, "key_lengths": None, "causal": False,
         "return_weights": False, "key_exp": None, "grad_out": torch.randn(2, 3, 6, generator=g),
         "grad_weights": None, "out": torch.zeros(2, 3, 6), "lse": torch.zeros(2, 3),
         "weights": None, "value_grad": True}
    a.update({name: change(a) for name, change in changes.items()})
    a = {n: (x.to(device) if isinstance(x, torch.Tensor) else x) for n, x in a.items()}
    args = tuple(a[n] for n in (_FWD_ARGS if op == "fwd" else _BWD_ARGS))
    functional_args = None
    if functional:
        kw = {n: a[n] for n in ("key_padding_mask", "key_lengths") if a[n] is not None}
        functional_args = (a["query"], a["key"], a["value"], a["weight"], kw)
    return op, args, functional_args


def op_error(op, args):
    """``(exception type name, first line of its message)`` of ``torch.ops.attnkern.<op>``
    called with ``args``, or ``("no error", "")``."""
    try:
        getattr(torch.ops.attnkern, op)(*args)
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return type(e).__name__, str(e).splitlines()[0]
    return "no error", ""


def fake_op_error(op, args):
    """op_error of the op's fake kernel: the same call under FakeTensorMode (what
    torch.compile and torch.export run)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = tuple(mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in args)
        return op_error(op, fake)
