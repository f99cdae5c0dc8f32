"""attnkern: fused additive (Bahdanau) attention for PyTorch.

``additive_attention`` (functional), ``AdditiveAttention`` (nn.Module),
``AdditiveAttentionFunction`` (low-level differentiable entry point), ``prepare_keys`` /
``PreparedKeys`` (per-sequence key work done once), ``LocationSensitiveAttention``
(Tacotron 2's attention, checkpoint-compatible) and ``reference`` (the plain PyTorch
spec); ``set_backend`` / ``using_backend`` / ``get_backend`` (what ``backend="auto"``
means), ``clear_caches``. Test helpers are in ``attnkern.testing`` (not imported here).
See README.md and docs/architecture.md.
"""

from . import reference
from ._cpu import cpu_isa
from ._onnx import onnx_translation_table
from ._registry import from_module, replace_attention
from .functional import (
    PreparedKeys,
    additive_attention,
    additive_scores,
    get_backend,
    prepare_keys,
    set_backend,
    using_backend,
)
from .modules import (
    AdditiveAttention,
    AdditiveState,
    BahdanauAttention,
    LocationSensitiveAttention,
    LocationState,
    MonotonicAttention,
    TorchaudioAttention,
    monotonic_alignment,
)
from .ops import AdditiveAttentionFunction, clear_caches
from .state import DecodingState

__version__ = "0.1.0"

__all__ = [
    "AdditiveAttention",
    "AdditiveAttentionFunction",
    "AdditiveState",
    "BahdanauAttention",
    "DecodingState",
    "LocationSensitiveAttention",
    "LocationState",
    "MonotonicAttention",
    "PreparedKeys",
    "TorchaudioAttention",
    "additive_attention",
    "additive_scores",
    "clear_caches",
    "cpu_isa",
    "from_module",
    "get_backend",
    "monotonic_alignment",
    "onnx_translation_table",
    "prepare_keys",
    "reference",
    "replace_attention",
    "set_backend",
    "using_backend",
    "__version__",
]
