"""Test helpers: seams for testing the Triton kernels, kept off the product path.

Importing this module changes nothing; each helper acts when called:

- :func:`use_triton_on_cpu` makes the Triton launchers the CPU kernels of
  ``attnkern::fwd`` / ``bwd`` / ``scores`` / ``scores_backward`` for the rest of the
  process (under ``TRITON_INTERPRET=1``), so
  ``backend="triton"`` on CPU tensors runs the kernels in the Triton interpreter through the
  same op, autograd and checks as on CUDA (tests/conftest.py calls it in the Triton run);
- :func:`force_num_splits` forces the forward's split-K factor of those ops for a block.

Nothing else in attnkern imports this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from . import ops

__all__ = ["force_num_splits", "triton_interpret_enabled", "triton_on_cpu", "use_triton_on_cpu"]

_TRITON_ON_CPU: list[torch.library.Library] = []


def triton_interpret_enabled() -> bool:
    """True when TRITON_INTERPRET is set: the Triton kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton_on_cpu() -> None:
    """Run the Triton kernels on CPU tensors, in the Triton interpreter, for this process.

    Needs ``TRITON_INTERPRET=1`` set before attnkern (and triton) are imported, and the C++
    extension (it holds the op schemas and the autograd). It registers the Triton op
    kernels (input checks included) as the CPU kernels of ``attnkern::fwd``/``bwd`` and
    ``attnkern::scores``/``scores_backward`` in a
    separate ``torch.library`` fragment, replacing the C++ kernels for the rest of the
    process (every CPU call then runs Triton; PyTorch warns once per op). Until this is
    called, ``backend="triton"`` on CPU tensors raises.
    """
    if _TRITON_ON_CPU:
        return
    if not ops.HAS_TRITON:
        raise RuntimeError("use_triton_on_cpu() needs Triton: `pip install triton`")
    if not triton_interpret_enabled():
        raise RuntimeError("use_triton_on_cpu() needs TRITON_INTERPRET=1 in the environment "
                           "before attnkern (and triton) are imported")
    if not ops.HAS_CPP:
        raise RuntimeError("use_triton_on_cpu() needs the C++ extension attnkern._C (the op "
                           f"schemas and autograd), which failed to import: "
                           f"{ops.CPP_IMPORT_ERROR}")
    lib = torch.library.Library("attnkern", "IMPL")  # noqa: TOR901 (kept alive below)
    lib.impl("fwd", ops.fwd_triton, "CPU")
    lib.impl("bwd", ops.bwd_triton, "CPU")
    lib.impl("scores", ops.scores_triton, "CPU")
    lib.impl("scores_backward", ops.scores_backward_triton, "CPU")
    _TRITON_ON_CPU.append(lib)


def triton_on_cpu() -> bool:
    """Whether :func:`use_triton_on_cpu` has replaced the CPU kernels in this process."""
    return bool(_TRITON_ON_CPU)


@contextlib.contextmanager
def force_num_splits(n: int) -> Iterator[None]:
    """Within the block, ``attnkern::fwd`` on Triton (CUDA, and CPU after
    :func:`use_triton_on_cpu`) splits the keys ``n`` ways (clamped to the number of key
    blocks): split-K, and the in-kernel combine of the partials, at shapes that would not
    pick it. Eager calls only (a kernel registered for the block's duration)."""

    def fwd(*args: Any) -> tuple[Tensor, Tensor, Tensor]:
        return ops.fwd_triton(*args, num_splits=n)

    lib = torch.library.Library("attnkern", "IMPL")  # noqa: TOR901 (destroyed below)
    try:
        if torch.cuda.is_available():
            lib.impl("fwd", ops._eager_cuda(fwd), "CUDA")
        if triton_on_cpu():
            lib.impl("fwd", fwd, "CPU")
        yield
    finally:
        lib._destroy()  # the previous kernels are in effect again
