"""attnkern: fused additive (Bahdanau) attention for PyTorch.

``additive_attention`` (functional), ``AdditiveAttention`` (nn.Module),
``AdditiveAttentionFunction`` (low-level differentiable entry point), ``prepare_keys`` /
``PreparedKeys`` (per-sequence key work done once), ``LocationSensitiveAttention``
(Tacotron 2's attention, checkpoint-compatible) and ``reference`` (the plain PyTorch
spec). See README.md and docs/architecture.md.
"""

from . import reference
from ._cpu import cpu_isa
from ._onnx import onnx_translation_table
from ._registry import from_module, replace_attention
from .functional import PreparedKeys, additive_attention, prepare_keys
from .modules import (
    AdditiveAttention,
    LocationSensitiveAttention,
    MonotonicAttention,
    monotonic_alignment,
)
from .ops import AdditiveAttentionFunction

__version__ = "0.1.0"

__all__ = [
    "AdditiveAttention",
    "AdditiveAttentionFunction",
    "LocationSensitiveAttention",
    "MonotonicAttention",
    "PreparedKeys",
    "additive_attention",
    "cpu_isa",
    "from_module",
    "monotonic_alignment",
    "onnx_translation_table",
    "prepare_keys",
    "reference",
    "replace_attention",
    "__version__",
]
