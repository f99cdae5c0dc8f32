"""Suite-wide settings.

Uninitialised memory is filled with NaN (torch.empty and at::empty, Python and C++ alike),
so a kernel that reads or returns memory it never wrote fails loudly (fla's trick, done with
PyTorch's own switch).

Under ``TRITON_INTERPRET=1`` (the separate pytest run of tests/test_triton*.py) the Triton
launchers are registered as the CPU kernels of attnkern::fwd/bwd in a separate
torch.library fragment (``attnkern.ops.use_triton_on_cpu()``), so ``backend="triton"`` on
CPU tensors runs the Triton kernels in the interpreter through the very same op, autograd
and validation as on CUDA. (In that process every CPU op call runs Triton: run only the
Triton test files there.)
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True  # type: ignore[attr-defined]

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    from attnkern import ops

    if ops.HAS_TRITON:
        ops.use_triton_on_cpu()  # overrides the C++ CPU kernels for this process


def pytest_collection_modifyitems(config, items):
    # Tests needing a GPU are marked `gpu`; skip them cleanly where there is no CUDA.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
