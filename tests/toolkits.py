"""The real toolkits' attention modules, imported without their packages' heavy ``__init__``.

ESPnet, SpeechBrain and OpenNMT-py install from PyPI with ``--no-deps``
(``scripts/install_toolkits.sh``); their package ``__init__`` files import much more than
the attention code (SpeechBrain: hyperpyyaml, the whole lobes tree; OpenNMT-py: pyonmttok,
the inputters). Only the attention files (and the decoders that use them) are executed
here, under their real module names, so ``type(m).__module__`` is what attnkern's
loaders look for (``speechbrain.nnet.attention``, ``onmt.modules.global_attention``, ...):

- where a package imports as it is (ESPnet), it is imported normally;
- otherwise each parent package that is not importable is a stub module whose
  ``__path__`` is the installed folder (its submodules load from the real files, its own
  ``__init__`` is not run), and the few helpers the attention file takes from elsewhere
  (SpeechBrain's ``length_to_mask``, its ``get_logger``) are taken from the installed
  source or stood in for.

Each accessor returns the module, or calls ``pytest.skip`` (with the reason) when the
toolkit is not installed or does not import.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
from functools import cache

import pytest

ESPNET_ATTENTIONS = "espnet.nets.pytorch_backend.rnn.attentions"
ESPNET2_LEGACY_ATTENTIONS = "espnet2.legacy.nets.pytorch_backend.rnn.attentions"
ESPNET_DECODERS = "espnet.nets.pytorch_backend.rnn.decoders"
SPEECHBRAIN_ATTENTION = "speechbrain.nnet.attention"
SPEECHBRAIN_RNN = "speechbrain.nnet.RNN"
OPENNMT_GLOBAL_ATTENTION = "onmt.modules.global_attention"


def _top_dir(top: str) -> str | None:
    """The installed folder of package ``top``, found without executing it."""
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _stub_package(name: str, path: str) -> None:
    """``name`` as an empty package whose submodules load from ``path``."""
    if name in sys.modules:
        return
    module = types.ModuleType(name)
    module.__path__ = [path]
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [path]
    module.__spec__ = spec
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def _stub_parents(name: str) -> None:
    top = name.split(".")[0]
    root = _top_dir(top)
    if root is None:
        pytest.skip(f"{top} is not installed (scripts/install_toolkits.sh)")
    parts = name.split(".")
    for i in range(1, len(parts)):
        _stub_package(".".join(parts[:i]), os.path.join(root, *parts[1:i]))


def _function_from_source(module_name: str, function: str, namespace: dict) -> object:
    """One top-level function of an installed (not imported) module file, compiled alone."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ImportError(module_name)
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), spec.origin)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    code = compile(ast.Module(body=[node], type_ignores=[]), spec.origin, "exec")
    exec(code, namespace)
    return namespace[function]


def _stub_module(name: str, **attrs: object) -> None:
    if name in sys.modules:
        return
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


@cache
def _import(name: str) -> types.ModuleType:
    top = name.split(".")[0]
    if _top_dir(top) is None:
        pytest.skip(f"{top} is not installed (scripts/install_toolkits.sh)")
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    _stub_parents(name)
    if top == "speechbrain":
        import torch

        _stub_package("speechbrain.dataio", os.path.join(_top_dir(top) or "", "dataio"))
        _stub_package("speechbrain.utils", os.path.join(_top_dir(top) or "", "utils"))
        # the real length_to_mask (the mask semantics matter), compiled from its source
        length_to_mask = _function_from_source("speechbrain.dataio.dataio", "length_to_mask",
                                               {"torch": torch})
        _stub_module("speechbrain.dataio.dataio", length_to_mask=length_to_mask)
        _stub_module("speechbrain.utils.logger", get_logger=logging.getLogger)
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.skip(f"{name} does not import here: {e}")


def espnet_attentions() -> types.ModuleType:
    """``espnet.nets.pytorch_backend.rnn.attentions``."""
    return _import(ESPNET_ATTENTIONS)


def espnet2_legacy_attentions() -> types.ModuleType:
    """``espnet2.legacy.nets.pytorch_backend.rnn.attentions`` (newer ESPnet releases)."""
    if _top_dir("espnet2") is None or importlib.util.find_spec("espnet2.legacy") is None:
        pytest.skip("this ESPnet has no espnet2.legacy package")
    return _import(ESPNET2_LEGACY_ATTENTIONS)


def espnet_decoders() -> types.ModuleType:
    """``espnet.nets.pytorch_backend.rnn.decoders`` (the RNN ``Decoder``)."""
    return _import(ESPNET_DECODERS)


def speechbrain_attention() -> types.ModuleType:
    """``speechbrain.nnet.attention``."""
    return _import(SPEECHBRAIN_ATTENTION)


def speechbrain_rnn() -> types.ModuleType:
    """``speechbrain.nnet.RNN`` (``AttentionalRNNDecoder``)."""
    return _import(SPEECHBRAIN_RNN)


def opennmt_global_attention() -> types.ModuleType:
    """``onmt.modules.global_attention``."""
    return _import(OPENNMT_GLOBAL_ATTENTION)


def torchaudio_tacotron2() -> types.ModuleType:
    """``torchaudio.models.tacotron2`` (pure PyTorch), loaded from its file: torchaudio's
    package ``__init__`` loads its compiled library, a CUDA build on PyPI."""
    return _import_file("torchaudio", "torchaudio.models.tacotron2", "models", "tacotron2.py")


def _import_file(top: str, name: str, *path: str) -> types.ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    root = _top_dir(top)
    if root is None:
        pytest.skip(f"{top} is not installed (scripts/install_toolkits.sh)")
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, *path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def coqui_attentions() -> types.ModuleType:
    """``TTS.tts.layers.tacotron.attentions`` (coqui-tts)."""
    return _import("TTS.tts.layers.tacotron.attentions")
