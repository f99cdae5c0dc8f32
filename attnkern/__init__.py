"""attnkern: fused additive (Bahdanau) attention for PyTorch.

``additive_attention`` (functional), ``AdditiveAttention`` (nn.Module),
``AdditiveAttentionFunction`` (low-level autograd Function) and ``reference`` (the plain
PyTorch spec). See README.md and DESIGN.md for the contract.
"""

from . import reference
from ._cpu import cpu_isa
from .functional import additive_attention
from .module import AdditiveAttention
from .ops import AdditiveAttentionFunction

__version__ = "0.1.0"

__all__ = [
    "AdditiveAttention",
    "AdditiveAttentionFunction",
    "additive_attention",
    "cpu_isa",
    "reference",
    "__version__",
]
