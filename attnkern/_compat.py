"""Every torch private API and mode check attnkern uses, in one place.

Private names move between torch minor releases: this is the one file to revisit at each
(the torch range is pinned in pyproject.toml). Public torch APIs used the same way (mode
queries) sit here too, so that "which mode are we in" has one answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "custom_triton_ops_decomposition_disabled",
    "exporting_to_onnx",
    "functorch_transforms_active",
    "forward_hooks_free",
    "is_eager",
    "is_fake",
    "is_wrap_triton_enabled",
    "module_attr",
    "name_triton_kernels",
    "register_functional_rule",
    "register_pytree_namedtuple",
    "traced_tensor",
    "values_unavailable",
    "wrap_triton_disabled",
]

# Bound once: these run on every call of additive_attention (every decoder step).
_is_compiling = torch.compiler.is_compiling
_is_exporting = torch.compiler.is_exporting  # torch.export, which the dynamo exporter uses
_is_tracing = torch._C._is_tracing  # TorchScript tracing, which the legacy exporter uses
_functorch_active = torch._C._are_functorch_transforms_active
_jit_is_tracing = torch.jit.is_tracing
_autocast_enabled = torch.is_autocast_enabled


# Dynamo cannot trace _is_tracing; told the result is a constant, it calls this function
# once while tracing (False under torch.compile) instead of tracing into it.
@torch.compiler.assume_constant_result
def exporting_to_onnx() -> bool:
    """True while ``torch.onnx.export`` traces a model (dynamo or TorchScript exporter).

    ``torch.onnx.is_in_onnx_export`` alone costs microseconds (it imports on every call), so
    it is asked only while torch.export or TorchScript traces: about 0.1 us otherwise.
    """
    return (_is_exporting() or _is_tracing()) and torch.onnx.is_in_onnx_export()


def functorch_transforms_active() -> bool:
    """Inside vmap / grad / jacrev (torch.func): tensors are wrapped per level."""
    return bool(_functorch_active())


def is_eager() -> bool:
    """Plain eager execution: not compiling, not TorchScript tracing, not exporting to ONNX,
    no functorch transform, no CPU autocast. The weight-gradient stores (attnkern/state.py) and
    the location windows op only run there; everywhere else the modules use standard ops."""
    return not (_is_compiling() or _jit_is_tracing() or exporting_to_onnx()
                or _functorch_active() or _autocast_enabled("cpu"))


def forward_hooks_free(module: torch.nn.Module) -> bool:
    """No forward (pre-)hooks on ``module``, its children or globally (the global hook
    dicts are private to torch.nn.modules.module). Walks the ``_modules`` dicts itself:
    ``module.modules()`` costs ~7 us for a two-level layer, and a decoder asks every step."""
    mm = torch.nn.modules.module
    if mm._global_forward_hooks or mm._global_forward_pre_hooks:
        return False
    todo = [module]
    while todo:
        m = todo.pop()
        if m._forward_hooks or m._forward_pre_hooks:
            return False
        todo.extend(c for c in m._modules.values() if c is not None)
    return True


_module_getattr = torch.nn.Module.__getattr__


def module_attr(module: torch.nn.Module, *path: str) -> Any:
    """``module.a.b.c`` for ``path = ("a", "b", "c")``, read live (nothing is kept).

    A hop that plain attribute lookup would resolve in ``nn.Module.__getattr__`` (a
    registered parameter or submodule, no class attribute or instance attribute of that
    name, ``__getattr__`` not overridden) reads the module's ``_parameters`` / ``_modules``
    dict directly: ~1 us a hop instead of ~2.5 us on the 2-core VMs, and a decoder step reads
    five weights through eleven hops. Anything else (a property, ``torch.nn.utils.
    parametrize``, ``weight_norm``'s plain attribute, buffers) goes through ``getattr``."""
    obj: Any = module
    for name in path:
        cls = type(obj)
        if cls.__getattr__ is _module_getattr and not hasattr(cls, name):
            d = obj.__dict__
            if name not in d:
                got = d["_parameters"].get(name)
                if got is None:
                    got = d["_modules"].get(name)
                if got is not None:
                    obj = got
                    continue
        obj = getattr(obj, name)
    return obj


def is_fake(t: Tensor) -> bool:
    """A FakeTensor (torch.compile / export tracing, FakeTensorMode)."""
    from torch._subclasses.fake_tensor import is_fake as _is_fake

    return bool(_is_fake(t))


def traced_tensor(t: Tensor) -> bool:
    """``t`` is being traced (torch.compile, make_fx: a fake or functional tensor), not a
    tensor of eager execution."""
    return _is_compiling() or is_fake(t)


def values_unavailable(t: Tensor) -> bool:
    """Whether reading ``t``'s values is impossible or not allowed: no data (meta and fake
    tensors), or a host sync forbidden (torch.compile, CUDA-graph capture)."""
    if _is_compiling() or t.device.type == "meta":
        return True
    from torch._subclasses.fake_tensor import FakeTensor

    if isinstance(t, FakeTensor):
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


# ------------------------------------------------------------------- op registration

def register_functional_rule(qualname: str, rule: Callable[..., Any],
                             lib: torch.library.Library) -> None:
    """``rule(mode, op, types, args, kwargs)`` runs for ``qualname`` under torch.compile's
    FunctionalTensorMode (how a Triton body gets inlined into the graph, as
    ``torch.library.triton_op`` does)."""
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    torch.library.register_torch_dispatch(qualname, FunctionalTensorMode, rule, lib=lib)


def custom_triton_ops_decomposition_disabled() -> bool:
    """True under ``torch.export``, which keeps Triton-backed ops whole (as triton_op)."""
    from torch.export._trace import custom_triton_ops_decomposition_disabled as disabled

    return bool(disabled())


def name_triton_kernels(qualnames: Iterable[str], kernels: list[Any]) -> None:
    """Tell AOTAutograd's compile cache which Triton kernels sit behind each op (as
    triton_op does), so its cache key changes when their source does."""
    for name in qualnames:
        torch._library.triton.triton_ops_to_kernels[name] = kernels


def is_wrap_triton_enabled() -> bool:
    """Whether a Triton launch must go through ``torch.library.wrap_triton`` (traced)."""
    return bool(torch._library.triton.is_wrap_triton_enabled())


def wrap_triton_disabled() -> Any:
    """Context manager: plain eager Triton launches, no higher-order-op dispatch."""
    return torch._library.triton.set_wrap_triton_enabled(False)


def register_pytree_namedtuple(cls: type, name: str) -> None:
    """A named pytree node that torch.export.save / AOTInductor packages can serialise."""
    torch.utils._pytree._register_namedtuple(cls, serialized_type_name=name)
