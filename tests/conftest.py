"""Suite-wide settings.

Uninitialised memory is filled with NaN (torch.empty and at::empty, Python and C++ alike),
so a kernel that reads or returns memory it never wrote fails loudly (fla's trick, done with
PyTorch's own switch).
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config, items):
    # Tests needing a GPU are marked `gpu`; skip them cleanly where there is no CUDA.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
