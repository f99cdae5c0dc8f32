"""The attention modules, one file per family member; each toolkit's loader sits beside the
module it loads into, registered for :func:`attnkern.replace_attention` (``_registry``)."""

from . import espnet, opennmt, speechbrain  # noqa: F401  (toolkit drop-ins: registers loaders)
from .additive import AdditiveAttention, AdditiveState, BahdanauAttention
from .location import LocationSensitiveAttention, LocationState, TorchaudioAttention

__all__ = [
    "AdditiveAttention",
    "AdditiveState",
    "BahdanauAttention",
    "LocationSensitiveAttention",
    "LocationState",
    "TorchaudioAttention",
]
