"""Load the real toolkits' attention files (Coqui TTS, ESPnet) without their packages'
heavy ``__init__``s: each file is executed from its installed path and registered in
``sys.modules`` under its real dotted name (so ``type(m).__module__`` is the toolkit's and
``attnkern.replace_attention`` recognises it); parent packages that are not imported yet
become empty stub modules. Returns None where the toolkit is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from types import ModuleType


def _dist_root(package: str) -> Path | None:
    """The installed directory of a top-level package, without importing it."""
    spec = importlib.util.find_spec(package) if package not in sys.modules else None
    if package in sys.modules:
        mod = sys.modules[package]
        paths = list(getattr(mod, "__path__", []))
        return Path(paths[0]) if paths else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _stub_parents(dotted: str, root: Path) -> None:
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(root.joinpath(*parts[1:i]))]  # type: ignore[attr-defined]
            sys.modules[name] = stub


def load_file(dotted: str) -> ModuleType | None:
    """Execute the installed file of module ``dotted`` under its own name."""
    if dotted in sys.modules:
        return sys.modules[dotted]
    top = dotted.split(".")[0]
    root = _dist_root(top)
    if root is None:
        return None
    path = root.joinpath(*dotted.split(".")[1:]).with_suffix(".py")
    if not path.is_file():
        return None
    _stub_parents(dotted, root)
    spec = importlib.util.spec_from_file_location(dotted, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[dotted] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[dotted]
        return None
    return module


def coqui_attentions() -> ModuleType | None:
    """``TTS.tts.layers.tacotron.attentions`` (coqui-tts), or None."""
    if load_file("TTS.tts.layers.tacotron.common_layers") is None:
        return None
    return load_file("TTS.tts.layers.tacotron.attentions")


def espnet_attentions(legacy: bool = False) -> ModuleType | None:
    """``espnet.nets.pytorch_backend.rnn.attentions`` (or the ``espnet2.legacy`` copy), or
    None. Its one import, ``nets_utils``, is loaded the same way."""
    base = "espnet2.legacy.nets.pytorch_backend" if legacy else "espnet.nets.pytorch_backend"
    if load_file(f"{base}.nets_utils") is None:
        return None
    return load_file(f"{base}.rnn.attentions")
