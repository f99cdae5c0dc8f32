"""``replace_attention`` / ``from_module``: toolkit attention modules -> attnkern drop-ins.

Toolkit classes are recognised by their qualified name (``type(m).__module__ + "." +
type(m).__qualname__``), so attnkern imports none of the toolkits. A module file registers
its loaders with :func:`converts`::

    @converts("espnet.nets.pytorch_backend.rnn.attentions.AttAdd",
              "espnet2.legacy.nets.pytorch_backend.rnn.attentions.AttAdd")
    def _from_espnet_att_add(module: nn.Module) -> nn.Module: ...

A name ``"*.ClassName"`` matches that class in any module (for classes users copy into
their own scripts, as the PyTorch tutorial's). A loader builds the drop-in with the
original's constructor arguments (read from the module), loads its state_dict strictly, and
returns it on the original's device and dtype; it returns None where the module has no
drop-in (a class whose qualified name matches but whose layout does not, e.g. another
"model.Attention", or a configuration of the class with no drop-in, e.g. OpenNMT-py's
``GlobalAttention(attn_type="dot")``): ``from_module`` then raises ``TypeError`` and
``replace_attention`` leaves the module alone.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["converts", "from_module", "replace_attention", "supported"]

# A loader returns the drop-in, or None where the module is not one it can convert (a class
# whose qualified name matches but whose layout does not, e.g. another "model.Attention").
Loader = Callable[[nn.Module], nn.Module | None]
_LOADERS: dict[str, Loader] = {}


def converts(*qualnames: str) -> Callable[[Loader], Loader]:
    """Register ``loader`` for the classes named (module path + qualified class name)."""

    def register(loader: Loader) -> Loader:
        for name in qualnames:
            if name in _LOADERS:
                raise RuntimeError(f"two attnkern loaders for {name}")
            _LOADERS[name] = loader
        return loader

    return register


def _qualname(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def supported() -> list[str]:
    """The qualified class names :func:`from_module` converts."""
    return sorted(_LOADERS)


def from_module(module: nn.Module) -> nn.Module:
    """One toolkit attention module -> its attnkern drop-in (weights carried over, same
    device, dtype and training mode). Raises ``TypeError`` for an unsupported class."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_module: module must be an nn.Module, got {type(module).__name__}")
    if _loader(module) is None:
        raise TypeError(
            f"from_module: {_qualname(module)} is not a supported attention module; "
            f"supported: {', '.join(supported())}")
    new = _convert(module)
    if new is None:
        raise TypeError(
            f"from_module: this {_qualname(module)} ({module.extra_repr() or 'no config'}) "
            "has no attnkern drop-in (not a supported attention module of that name)")
    return new


def _loader(module: nn.Module) -> Loader | None:
    return _LOADERS.get(_qualname(module)) or _LOADERS.get("*." + type(module).__name__)


def _convert(module: nn.Module) -> nn.Module | None:
    loader = _loader(module)
    new = loader(module) if loader is not None else None
    if new is not None:
        new.train(module.training)
    return new


def replace_attention(model: nn.Module) -> list[tuple[str, type, type]]:
    """Replace every supported attention submodule of ``model`` in place by its attnkern
    drop-in (weights carried over). Returns ``[(qualified_name, old_cls, new_cls)]``;
    modules attnkern does not support are left alone. ``model`` itself is not replaced
    (use :func:`from_module` for a bare attention module)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"replace_attention: model must be an nn.Module, got {type(model).__name__}")
    report: list[tuple[str, type, type]] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent.named_children()):
            full = f"{prefix}.{child_name}" if prefix else child_name
            new = _convert(child)
            if new is not None:
                setattr(parent, child_name, new)
                report.append((full, type(child), type(new)))
            else:
                visit(child, full)

    visit(model, "")
    return report
