"""The attention modules, one file per family member; each toolkit's loader sits beside the
module it loads into, registered for :func:`attnkern.replace_attention` (``_registry``)."""

from .additive import AdditiveAttention
from .coqui import OriginalAttention
from .forward import AttForward, AttForwardTA
from .location import LocationSensitiveAttention
from .monotonic import MonotonicAttention, monotonic_alignment

__all__ = ["AdditiveAttention", "AttForward", "AttForwardTA", "LocationSensitiveAttention",
           "MonotonicAttention", "OriginalAttention", "monotonic_alignment"]
