"""The toolkit modules the family tests compare against, or None where absent: the loaders
of tests/toolkits.py (one way of importing a toolkit's attention file in this suite), with
None instead of a skip so a test module can decide per test."""

from __future__ import annotations

from types import ModuleType

import pytest
import toolkits


def _or_none(load) -> ModuleType | None:
    try:
        return load()
    except pytest.skip.Exception:
        return None


def coqui_attentions() -> ModuleType | None:
    """``TTS.tts.layers.tacotron.attentions`` (coqui-tts), or None."""
    return _or_none(toolkits.coqui_attentions)


def espnet_attentions(legacy: bool = False) -> ModuleType | None:
    """``espnet.nets.pytorch_backend.rnn.attentions`` (or the ``espnet2.legacy`` copy), or
    None."""
    return _or_none(toolkits.espnet2_legacy_attentions if legacy
                    else toolkits.espnet_attentions)
