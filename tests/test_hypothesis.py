"""Property-based tests: random shapes, masks, lengths, causal, strides and dtypes; every
backend of the process (the ``backend`` fixture of tests/conftest.py) against the float64
reference, forward and backward.

Profiles (registered here): "ci" (default: derandomised, fixed small budget) and "long"
(many random examples), selected with ATTNKERN_HYPOTHESIS_PROFILE=long. Triton draws from
the same strategy without float64 and with smaller H, and under the interpreter (every tile
op in numpy) with a fifth of the budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from helpers import check_against_reference, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnkern import testing
from attnkern.reference import valid_keys

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "long", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = os.environ.get("ATTNKERN_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

LAYOUTS = ("contiguous", "transposed", "sliced", "expanded")


@dataclass
class Case:
    """One drawn problem; ``build()`` makes the tensors (views of leaves when strided)."""

    B: int
    Tq: int
    Tk: int
    H: int
    Dv: int
    step: bool
    dtype: torch.dtype
    layouts: tuple[str, str, str, str]
    scale: float
    mask: list[list[bool]] | None
    lengths: list[int] | None
    causal: bool
    seed: int

    def _tensor(self, shape, layout, g, scale=1.0):
        if layout == "transposed" and len(shape) >= 2:
            base = torch.randn(*reversed(shape), generator=g) * scale
            t = base.permute(*reversed(range(len(shape))))
        elif layout == "sliced":
            base = torch.randn(*shape[:-1], 2 * shape[-1] + 1, generator=g) * scale
            t = base[..., 1::2]
        elif layout == "expanded" and len(shape) >= 2:
            base = torch.randn(1, *shape[1:], generator=g) * scale
            t = base.expand(*shape)
        else:
            base = torch.randn(*shape, generator=g) * scale
            t = base
        base = base.to(self.dtype).requires_grad_()
        # Re-apply the same view to the converted leaf so the strides survive.
        return torch.as_strided(base, t.shape, t.stride(), t.storage_offset())

    def build(self):
        g = torch.Generator().manual_seed(self.seed)
        qshape = (self.B, self.H) if self.step else (self.B, self.Tq, self.H)
        q = self._tensor(qshape, self.layouts[0], g, self.scale)
        k = self._tensor((self.B, self.Tk, self.H), self.layouts[1], g, self.scale)
        v = self._tensor((self.B, self.Tk, self.Dv), self.layouts[2], g)
        w = self._tensor((self.H,), self.layouts[3], g, self.H ** -0.5)
        kw: dict = {"causal": self.causal}
        if self.mask is not None:
            kw["key_padding_mask"] = torch.tensor(self.mask, dtype=torch.bool).reshape(
                self.B, self.Tk)
        if self.lengths is not None:
            kw["key_lengths"] = torch.tensor(self.lengths, dtype=torch.int64)
        return (q, k, v, w), kw


@st.composite
def cases(draw, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16),
          max_tk=40, max_h=33):
    B = draw(st.integers(1, 4) | st.just(0))
    step = draw(st.booleans())
    Tq = 1 if step else draw(st.integers(1, 9))
    Tk = draw(st.sampled_from([0, 1, 2, 3]) | st.integers(1, max_tk))
    H = draw(st.sampled_from([1, 2, 7, 8, 16]) | st.integers(1, max_h))
    Dv = draw(st.sampled_from([1, 3, 8]) | st.integers(1, 17))
    dtype = draw(st.sampled_from(dtypes))
    layouts = tuple(draw(st.sampled_from(LAYOUTS)) for _ in range(4))
    scale = draw(st.sampled_from([1.0, 1.0, 0.1, 4.0]))
    mask = None
    if draw(st.booleans()):
        mask = draw(st.lists(st.lists(st.booleans(), min_size=Tk, max_size=Tk),
                             min_size=B, max_size=B))
    lengths = None
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(0, Tk), min_size=B, max_size=B))
    causal = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return Case(B, Tq, Tk, H, Dv, step, dtype, layouts, scale, mask, lengths, causal, seed)


def check_case(case: Case, backend: str) -> None:
    """The backend against the float64 reference (forward, weights, 4 gradients), plus
    invariants: weights sum to 1 on rows with a usable key, 0 elsewhere, 0 on masked keys."""
    (q, k, v, w), kw = case.build()
    check_against_reference(q, k, v, w, backend=backend, seed=case.seed, **kw)
    _, wts = run(backend, q, k, v, w, **kw)
    if case.step:
        wts = wts.unsqueeze(1)
    valid = valid_keys(case.B, case.Tq, case.Tk, **{n: x for n, x in kw.items()})
    wts = wts.detach().double()
    assert torch.equal(wts[~valid], torch.zeros_like(wts[~valid])), "weight on a masked key"
    sums = wts.sum(-1)
    expected = valid.any(-1).double()
    torch.testing.assert_close(sums, expected, atol=2e-2 if case.dtype in (
        torch.float16, torch.bfloat16) else 1e-5, rtol=0)


TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # no float64 in Triton


def test_backend_matches_reference(backend):
    """``check_case`` on the profile's budget of drawn cases (the @given function is built
    per backend, since the strategy and the budget depend on it)."""
    strategy, budget = cases(), settings().max_examples
    if backend == "triton":
        strategy = cases(dtypes=TRITON_DTYPES, max_tk=40, max_h=20)
        if testing.triton_on_cpu():
            budget = budget * 12 // 60

    @settings(max_examples=budget)
    @given(case=strategy)
    def matches(case):
        check_case(case, backend)

    matches()


def test_profile_is_selected():
    """The profile named by ATTNKERN_HYPOTHESIS_PROFILE is the one in force (not
    hypothesis' default, nor one loaded by a plugin or another module)."""
    assert settings.get_current_profile_name() == PROFILE
    current = settings()
    if PROFILE == "ci":  # reproducible CI: fixed examples, no example database
        assert current.derandomize and current.database is None
        assert current.max_examples == 60
    else:
        assert current.max_examples == 2000
