"""Suite-wide settings.

Uninitialised memory is filled with NaN (torch.empty and at::empty, Python and C++ alike),
so a kernel that reads or returns memory it never wrote fails loudly (fla's trick, done with
PyTorch's own switch).

Under ``TRITON_INTERPRET=1`` (the separate pytest run of tests/test_triton*.py) the Triton
launchers are registered as the CPU kernels of attnkern::fwd/bwd in a separate
torch.library fragment (``attnkern.testing.use_triton_on_cpu()``), so ``backend="triton"`` on
CPU tensors runs the Triton kernels in the interpreter through the very same op, autograd
and validation as on CUDA. (In that process every CPU op call runs Triton: run only the
Triton test files and the backend-parametrised edge-case files there.)

The ``backend`` fixture runs a test once per backend available in this process, so every
test that takes it (tests/test_edge_cases.py, tests/test_hypothesis.py) covers every backend
with no hand-kept list:

- main run: ``reference``, ``cpp`` (skipped, with the import error, when attnkern._C is not
  built) and ``triton-cuda`` where CUDA and Triton exist;
- ``TRITON_INTERPRET=1`` run: ``triton-interpreter`` only (every CPU op call runs Triton
  there, so cpp would be Triton under another name, and the reference runs in the main run).

The value is the ``backend=`` string (``"reference"``, ``"cpp"``, ``"triton"``); the ids name
the device. Per-ISA runs of the C++ kernels stay in tests/test_cpp.py (the ISA is chosen at
import, so they need a subprocess each).
"""

import os
import sys

import pytest
import torch

from attnkern import ops, testing

sys.path.insert(0, os.path.dirname(__file__))

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True  # type: ignore[attr-defined]

if testing.triton_interpret_enabled() and ops.HAS_TRITON:
    testing.use_triton_on_cpu()  # overrides the C++ CPU kernels for this process


def _backend_params():
    if testing.triton_on_cpu():
        return [pytest.param("triton", id="triton-interpreter")]
    params = [pytest.param("reference", id="reference"),
              pytest.param("cpp", id="cpp", marks=() if ops.HAS_CPP else pytest.mark.skip(
                  reason=f"attnkern._C not built: {ops.CPP_IMPORT_ERROR}"))]
    if ops.HAS_TRITON and torch.cuda.is_available():
        params.append(pytest.param("triton", id="triton-cuda"))
    return params


BACKENDS = _backend_params()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend of this process (see the module docstring); Triton skips float64."""
    callspec = getattr(request.node, "callspec", None)
    if (request.param == "triton" and callspec is not None
            and callspec.params.get("dtype") == torch.float64):
        pytest.skip("backend='triton' has no float64")
    return request.param


def _isas():
    if not ops.HAS_CPP:
        return ["none"]
    import importlib

    return list(importlib.import_module("attnkern._C").available_isas())


@pytest.fixture(scope="module", params=_isas())
def every_isa(request):
    """Run a module's tests once per ISA path this CPU can run (the C++ kernel table is
    switched for the module; use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    if not ops.HAS_CPP:
        yield None
        return
    import importlib

    import attnkern

    ext = importlib.import_module("attnkern._C")
    before = attnkern.cpu_isa()
    ext.set_isa(request.param)
    yield request.param
    ext.set_isa(before)


def pytest_collection_modifyitems(config, items):
    # Tests needing a GPU are marked `gpu`; skip them cleanly where there is no CUDA.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
