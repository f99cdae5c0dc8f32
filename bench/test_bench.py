"""pytest-benchmark suite over the issue's shapes, every backend, forward and fwd+bwd.

    pytest bench/ --benchmark-only                  # full sizes (minutes)
    pytest bench/ --benchmark-only --smoke          # tiny sizes, one round (seconds)
    pytest bench/ --benchmark-only -k "TRAIN and fwd-"   # a subset

Ids read ``<SHAPE>-<B..Dv>-<mode>-<backend>``; benchmarks are grouped by shape and mode, so
pytest-benchmark's table puts the backends of one problem side by side. Each benchmark
records ``elements`` (B*Tq*Tk*H) and ``Gelem_per_s`` in ``extra_info`` (see
``--benchmark-json``). Every benchmark first checks its output against the reference.
`python bench/run.py` is the side-by-side comparison with goals.
"""

from __future__ import annotations

import pytest
import torch

from bench.baselines import BACKENDS, backend_available, get_backend
from bench.common import make_call, make_inputs
from bench.shapes import shapes, smoke_enabled

# DECODE is inference (one decoder step per generated token): forward only.
CASES = [(name, mode) for name in ("TRAIN", "DECODE", "MEM") for mode in ("fwd", "fwdbwd")
         if not (name == "DECODE" and mode == "fwdbwd")]
BACKEND_NAMES = list(BACKENDS)


def _case_id(case: tuple[str, str]) -> str:
    name, mode = case
    return f"{name}-{shapes()[name].label}-{mode}"


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bench(benchmark, case, backend):
    name, mode = case
    ok, why = backend_available(backend)
    if not ok:
        pytest.skip(why)
    shape = shapes()[name]
    device = BACKENDS[backend][1]
    fn = get_backend(backend)
    inputs = make_inputs(shape, device=device, requires_grad=mode == "fwdbwd")
    _check_output(fn, inputs)
    call = make_call(fn, inputs, mode)
    call()  # compiles (torch.compile), warms caches and thread pools

    benchmark.group = f"{name}-{mode}"
    benchmark.extra_info["elements"] = shape.elements
    if smoke_enabled():
        benchmark.pedantic(call, rounds=1, iterations=1, warmup_rounds=0)
    elif name == "MEM":  # eager fwd+bwd here takes seconds and GiBs per call
        benchmark.pedantic(call, rounds=3, iterations=1, warmup_rounds=0)
    else:
        benchmark(call)
    if benchmark.stats is not None:
        benchmark.extra_info["Gelem_per_s"] = shape.elements / benchmark.stats.stats.median / 1e9


def _check_output(fn, inputs) -> None:
    """A benchmark of a wrong answer is worthless: compare to the float64 reference."""
    import attnkern

    args = [t.detach() for t in inputs.tensors()]
    with torch.no_grad():
        out = fn(*args, key_lengths=inputs.key_lengths)
        ref = attnkern.reference.additive_attention(
            *(t.double().cpu() for t in args),
            key_lengths=None if inputs.key_lengths is None else inputs.key_lengths.cpu())
    torch.testing.assert_close(out.double().cpu(), ref, atol=1e-4, rtol=1e-3)
