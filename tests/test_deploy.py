"""Deployment without Python in the loop: torch.export + AOTInductor keeps the fused op.

(ONNX export is tested in tests/test_onnx.py.)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.export import Dim
from torch.utils._pytree import tree_map

import attnkern
from attnkern import ops


class DecoderStep(nn.Module):
    """One decoder step: 2-D query, precomputed key projections, key_lengths, weights."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = attnkern.AdditiveAttention(7, 12, 16)

    def forward(self, query, memory, projected, lengths):
        return self.attn(query, None, memory, projected_keys=projected, key_lengths=lengths,
                         need_weights=True)


def _step_inputs(model: DecoderStep, B: int, Tk: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(B, Tk, 12, generator=g)
    lengths = torch.randint(1, Tk + 1, (B,), generator=g)
    lengths[0] = 0  # a row with no usable key
    with torch.no_grad():
        projected = model.attn.project_keys(memory)
    return torch.randn(B, 7, generator=g), memory, projected, lengths


@pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")
def test_aoti_package_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DecoderStep().eval()
    batch, keys = Dim("batch"), Dim("keys")
    args = _step_inputs(model, 3, 6)
    # project_keys may return a tensor or a structure of (B, Tk, ...) tensors.
    per_key = tree_map(lambda _: {0: batch, 1: keys}, args[2])
    dynamic = ({0: batch}, {0: batch, 1: keys}, per_key, {0: batch})
    with torch.no_grad():
        ep = torch.export.export(model, args, dynamic_shapes=dynamic)
    assert "attnkern.fwd" in ep.graph_module.code  # the fused op, not a decomposition
    # -O0 for the generated wrapper: this test checks the round trip, not its speed.
    path = torch._inductor.aoti_compile_and_package(
        ep, package_path=str(tmp_path / "step.pt2"),
        inductor_configs={"aot_inductor.compile_wrapper_opt_level": "O0"})
    loaded = torch._inductor.aoti_load_package(path)
    for B, Tk in ((3, 6), (5, 17), (1, 2)):
        args = _step_inputs(model, B, Tk, seed=B + Tk)
        with torch.no_grad():
            got, want = loaded(*args), model(*args)
        assert len(got) == len(want) == 2
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
