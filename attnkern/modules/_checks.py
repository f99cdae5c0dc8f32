"""Input checks the modules share: each error names the argument and the shape seen."""

from __future__ import annotations

import torch
from torch import Tensor


def check_positive_ints(**values: object) -> None:
    """Constructor sizes: positive Python ints (bool is not a size)."""
    for name, val in values.items():
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


def check_dims(name: str, x: object, dims: tuple[int | None, ...], form: str,
               like: Tensor) -> None:
    """``x`` a floating tensor of shape ``dims`` (None: any size), on ``like``'s device and
    (outside autocast) of its dtype. ``form`` describes the shape expected, formatted with
    ``dims`` (``"(B={0}, T={1})"``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    shape = x.shape
    if len(shape) != len(dims) or any(d is not None and s != d for s, d in zip(shape, dims)):
        expected = form.format(*("?" if d is None else d for d in dims))
        raise ValueError(f"{name} must be {expected}, got shape {tuple(shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device}, the module's parameters are on "
                         f"{like.device}")
    if x.dtype != like.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype}, the module's parameters are "
                        f"{like.dtype} (convert the module with .to(dtype) or use "
                        "torch.autocast)")
