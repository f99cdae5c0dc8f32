"""The attention modules, one file per family member; each toolkit's loader sits beside the
module it loads into, registered for :func:`attnkern.replace_attention` (``_registry``)."""

from . import espnet, opennmt, speechbrain  # noqa: F401  (toolkit drop-ins: registers loaders)
from .additive import AdditiveAttention, AdditiveState, BahdanauAttention
from .coqui import OriginalAttention
from .forward import AttForward, AttForwardTA
from .location import LocationSensitiveAttention, LocationState, TorchaudioAttention
from .monotonic import MonotonicAttention, monotonic_alignment

__all__ = [
    "AdditiveAttention",
    "AdditiveState",
    "AttForward",
    "AttForwardTA",
    "BahdanauAttention",
    "LocationSensitiveAttention",
    "LocationState",
    "MonotonicAttention",
    "OriginalAttention",
    "TorchaudioAttention",
    "monotonic_alignment",
]
