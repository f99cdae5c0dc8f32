"""The edge cases of tests/test_edge_cases.py and the property tests of
tests/test_hypothesis.py, for backend="triton".

Runs on CUDA, or on CPU tensors under the interpreter (a separate invocation, so the
setting never leaks into the main suite):

    TRITON_INTERPRET=1 pytest tests/test_triton_edge_cases.py

Elsewhere the module skips itself. The tests build CPU tensors; ``test_edge_cases.run``
moves them to the GPU when the kernels are compiled, so every comparison stays on CPU.
"""

from __future__ import annotations

import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if not (INTERPRET or torch.cuda.is_available()):
    pytest.skip("backend='triton' needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)
pytest.importorskip("triton")

import test_edge_cases  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from test_edge_cases import (  # noqa: E402, F401  (re-collected here with backend=triton)
    test_concurrent_calls_from_threads,
    test_empty_dimensions,
    test_expanded_keys_and_values_beam_search,
    test_fully_masked_rows,
    test_half_precision_on_cpu,
    test_inf_query_meets_opposite_inf_key,
    test_inputs_never_modified,
    test_large_opposite_query_and_key,
    test_nan_key_is_confined_to_rows_that_see_it,
    test_nan_value_of_masked_key_is_never_read,
    test_nan_weight_poisons_every_row_with_a_usable_key,
    test_non_contiguous_inputs,
    test_nonfinite_query_row_is_confined,
    test_nonfinite_value_poisons_rows_that_see_it,
    test_saturated_inputs,
    test_very_long_key_sequence,
    test_very_long_key_sequence_memory_is_bounded_by_inputs,
    test_zero_keys_give_zero_context_and_zero_grads,
)
from test_hypothesis import cases, check_case  # noqa: E402

from attnkern import ops  # noqa: E402

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # no float64 in Triton


@pytest.fixture
def backend(request):
    """Overrides test_edge_cases' fixture: every imported test runs with Triton."""
    if not ops.HAS_TRITON:
        pytest.skip("Triton is not installed")
    params = getattr(request.node, "callspec", None)
    if params is not None and params.params.get("dtype") == torch.float64:
        pytest.skip("backend='triton' has no float64")
    return "triton"


@pytest.fixture(autouse=True)
def _interpreter_sized_long_keys(monkeypatch, request):
    """The interpreter runs every program and tile op in numpy: 20k keys already take 5
    minutes per test. Under it the long-sequence test runs once (causal) with 1027 keys, still
    many key blocks and a split-K forward; on a GPU both variants with the full 200k."""
    if not INTERPRET:
        return
    monkeypatch.setattr(test_edge_cases, "LONG_TK", 1_027)
    if request.node.name == "test_very_long_key_sequence[False]":
        pytest.skip("interpreter: one long-sequence variant is enough")


# The interpreter executes every tile op in numpy: keep the random problems tiny and few.
_N = 12 if INTERPRET else 60


@settings(max_examples=settings().max_examples * _N // 60)
@given(case=cases(dtypes=TRITON_DTYPES, max_tk=40, max_h=20))
def test_triton_matches_reference(case):
    check_case(case, "triton")
