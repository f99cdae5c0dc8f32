"""ONNX export of every public entry point, run in onnxruntime against PyTorch's outputs.

Each model is exported once with dynamic batch size, key length (and query length where the
query is 3-D), then run at the example shape and at another one, with fully masked rows and
NaN padding. One export costs seconds (the exporter rebuilds its op registry on every call),
so a model covers several configurations at once, each output named after its case.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import MASK_KINDS, make_masks
from torch import Tensor, nn
from torch.export import Dim

import attnkern
from attnkern import ops

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

needs_cpp = pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")

# Tolerance of onnxruntime against PyTorch (the C++ kernels in eager mode).
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}

BATCH, QUERIES, KEYS = Dim("batch"), Dim("queries"), Dim("keys")


# ------------------------------------------------------------------------------- helpers

def _flat(outputs: object) -> list[Tensor]:
    """Model outputs as a flat list of tensors (None dropped, as the exporters do)."""
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in _flat(o)]
    assert outputs is None, type(outputs)
    return []


def export_to_ort(model: nn.Module | torch.export.ExportedProgram, args: tuple, path,
                  *, dynamic_shapes=None, dynamo: bool = True, **kwargs):
    """Export with torch.onnx.export (dynamo unless told otherwise), check the model uses
    standard ONNX operators only, and open it in onnxruntime."""
    if dynamo:
        torch.onnx.export(model, args, path, dynamic_shapes=dynamic_shapes, verbose=False,
                          **kwargs)
    else:
        torch.onnx.export(model, args, path, dynamo=False, **kwargs)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    domains = {n.domain for n in proto.graph.node} | {f.domain for f in proto.functions}
    assert domains <= {"", "ai.onnx"}, f"non-standard ONNX domains: {domains}"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_ort_matches(session, model, args: tuple, names: list[str] | None = None) -> None:
    """Run ``session`` on the tensors of ``args`` and compare with ``model(*args)``."""
    inputs = [a for a in args if isinstance(a, Tensor)]
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), inputs, strict=True)}
    got = session.run(None, feeds)
    with torch.no_grad():
        want = _flat(model(*args))
    assert len(got) == len(want)
    names = names or [f"output {i}" for i in range(len(want))]
    for name, g, w in zip(names, got, want, strict=True):
        tol = TOL[w.dtype] if w.is_floating_point() else 0
        torch.testing.assert_close(torch.from_numpy(g), w, atol=tol, rtol=tol,
                                   msg=lambda m, n=name: f"{n}: {m}")


def _attention_inputs(B: int, Tq: int, Tk: int, *, H: int = 8, Dv: int = 5, seed: int = 0,
                      dtype: torch.dtype = torch.float32):
    """(query (B, Tq, H), step query (B, H), key, value, weight, key_padding_mask,
    key_lengths): padding row B-1 fully masked, lengths with a 0 and a full Tk, and NaN in
    every padded key and value (a masked key is never read)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Tq, H, generator=g)
    q2 = torch.randn(B, H, generator=g)
    k = torch.randn(B, Tk, H, generator=g)
    v = torch.randn(B, Tk, Dv, generator=g)
    w = torch.randn(H, generator=g) / math.sqrt(H)
    masks = make_masks("both", B, Tq, Tk, seed=seed)
    mask, lengths = masks["key_padding_mask"], masks["key_lengths"]
    mask[-1] = True
    lengths[0], lengths[-1] = 0, Tk
    k, v = k.masked_fill(mask[..., None], math.nan), v.masked_fill(mask[..., None], math.nan)
    return tuple(t.to(dtype) if t.is_floating_point() else t
                 for t in (q, q2, k, v, w, mask, lengths))


def _kind_kwargs(kind: str, mask: Tensor, lengths: Tensor) -> dict:
    kw: dict = {}
    if kind in ("padding", "both", "all"):
        kw["key_padding_mask"] = mask
    if kind in ("lengths", "both", "all"):
        kw["key_lengths"] = lengths
    if kind in ("causal", "all"):
        kw["causal"] = True
    return kw


class EveryMaskKind(nn.Module):
    """The functional op with a 3-D and a 2-D query under every mask kind of helpers."""

    def __init__(self, return_weights: bool, kinds: tuple[str, ...] = MASK_KINDS) -> None:
        super().__init__()
        self.return_weights = return_weights
        self.cases = [(kind, step) for kind in kinds for step in (False, True)]

    def names(self) -> list[str]:
        parts = ("context", "weights") if self.return_weights else ("context",)
        return [f"{kind}-{'2d' if step else '3d'} {p}" for kind, step in self.cases
                for p in parts]

    def forward(self, q, q2, k, v, w, mask, lengths):
        outs = []
        # NaN padding sits under the padding mask: kinds without it see finite keys.
        finite_k, finite_v = k.nan_to_num(), v.nan_to_num()
        for kind, step in self.cases:
            kw = _kind_kwargs(kind, mask, lengths)
            padded = "key_padding_mask" in kw
            outs.append(attnkern.additive_attention(
                q2 if step else q, k if padded else finite_k, v if padded else finite_v, w,
                return_weights=self.return_weights, **kw))
        return tuple(outs)


FUNCTIONAL_DYNAMIC = ({0: BATCH, 1: QUERIES}, {0: BATCH}, {0: BATCH, 1: KEYS},
                      {0: BATCH, 1: KEYS}, None, {0: BATCH, 1: KEYS}, {0: BATCH})


# ------------------------------------------------------------------------ functional op

def test_functional_every_mask_kind_dynamo(tmp_path):
    model = EveryMaskKind(return_weights=True)
    session = export_to_ort(model, _attention_inputs(3, 4, 6), tmp_path / "f.onnx",
                            dynamic_shapes=FUNCTIONAL_DYNAMIC)
    # Run-time shapes need not respect export's 0/1 specialisation: one key, none, no query.
    for shape in ((3, 4, 6), (5, 2, 9), (2, 7, 7), (1, 3, 11), (2, 3, 1), (2, 3, 0), (2, 0, 4)):
        assert_ort_matches(session, model, _attention_inputs(*shape, seed=sum(shape)),
                           model.names())


def test_functional_without_weights_dynamo(tmp_path):
    model = EveryMaskKind(return_weights=False, kinds=("lengths", "all"))
    session = export_to_ort(model, _attention_inputs(3, 4, 6), tmp_path / "f.onnx",
                            dynamic_shapes=FUNCTIONAL_DYNAMIC)
    for shape in ((3, 4, 6), (5, 2, 9)):
        assert_ort_matches(session, model, _attention_inputs(*shape, seed=sum(shape)),
                           model.names())


# The input checks compare shapes as Python values, which TorchScript's tracer warns about.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_functional_every_mask_kind_torchscript_exporter(tmp_path):
    model = EveryMaskKind(return_weights=True)
    names = ["q", "q2", "k", "v", "w", "mask", "lengths"]
    axes = {"q": {0: "B", 1: "Tq"}, "q2": {0: "B"}, "k": {0: "B", 1: "Tk"},
            "v": {0: "B", 1: "Tk"}, "mask": {0: "B", 1: "Tk"}, "lengths": {0: "B"}}
    session = export_to_ort(model, _attention_inputs(3, 4, 6), tmp_path / "f.onnx",
                            dynamo=False, input_names=names, dynamic_axes=axes)
    for shape in ((3, 4, 6), (5, 2, 9)):
        assert_ort_matches(session, model, _attention_inputs(*shape, seed=sum(shape)),
                           model.names())


def test_functional_float16(tmp_path):
    model = EveryMaskKind(return_weights=True, kinds=("none", "all"))
    args = _attention_inputs(3, 4, 6, dtype=torch.float16)
    session = export_to_ort(model, args, tmp_path / "f16.onnx",
                            dynamic_shapes=FUNCTIONAL_DYNAMIC)
    for shape in ((3, 4, 6), (5, 2, 9)):
        args = _attention_inputs(*shape, seed=sum(shape), dtype=torch.float16)
        assert_ort_matches(session, model, args, model.names())
    assert session.get_outputs()[0].type == "tensor(float16)"


def test_export_path_is_the_reference(monkeypatch):
    """While torch.onnx.export traces, every backend computes with the reference itself
    (one standard-ops spelling of the math), a 2-D query included."""
    seen = []
    reference = attnkern.reference.additive_attention
    monkeypatch.setattr(attnkern.functional, "_exporting_to_onnx", lambda: True)
    monkeypatch.setattr(attnkern.reference, "additive_attention",
                        lambda *a, **kw: seen.append(a[0].dim()) or reference(*a, **kw))
    monkeypatch.setattr(ops, "fwd", None)  # never called
    q, q2, k, v, w, mask, lengths = _attention_inputs(4, 5, 7)
    for query in (q, q2):
        for backend in ("auto", "cpp", "triton", "reference"):
            out, wts = attnkern.additive_attention(query, k, v, w, key_padding_mask=mask,
                                                   key_lengths=lengths, return_weights=True,
                                                   backend=backend)
            ref_out, ref_wts = reference(query, k, v, w, key_padding_mask=mask,
                                         key_lengths=lengths, return_weights=True)
            torch.testing.assert_close(out, ref_out, atol=0, rtol=0)
            torch.testing.assert_close(wts, ref_wts, atol=0, rtol=0)
    assert seen == [3] * 4 + [2] * 4


def _causal_with_inf(B: int, Tq: int, Tk: int, seed: int = 0):
    """3-D inputs, no padding, inf in the value of key Tk-1, which causal hides from every
    query but the last: only the last query's context may be non-finite."""
    q, _, k, v, w, _, _ = _attention_inputs(B, Tq, Tk, seed=seed)
    v = v.nan_to_num()
    v[:, -1] = math.inf
    return q, k.nan_to_num(), v, w


class Causal(nn.Module):
    def __init__(self, fused_op: bool = False) -> None:
        super().__init__()
        self.fused_op = fused_op

    def forward(self, q, k, v, w):
        if self.fused_op:
            return torch.ops.attnkern.fwd.default(q, k, v, w, None, None, True, True)[::2]
        return attnkern.additive_attention(q, k, v, w, causal=True, return_weights=True)


@needs_cpp
def test_causally_hidden_values_are_never_read(tmp_path):
    args = _causal_with_inf(3, 4, 6)
    out, _ = attnkern.reference.additive_attention(*args, causal=True, return_weights=True)
    assert out[:, :-1].isfinite().all() and not out[:, -1].isfinite().all()
    dynamic = ({0: BATCH, 1: QUERIES}, {0: BATCH, 1: KEYS}, {0: BATCH, 1: KEYS}, None)
    routes = {"model": Causal()}
    with torch.no_grad():
        routes["translation"] = torch.export.export(Causal(fused_op=True), args,
                                                    dynamic_shapes=dynamic)
    for route, model in routes.items():
        kw = {"custom_translation_table": attnkern.onnx_translation_table()} \
            if route == "translation" else {"dynamic_shapes": dynamic}
        session = export_to_ort(model, () if route == "translation" else args,
                                tmp_path / f"{route}.onnx", **kw)
        for shape in ((3, 4, 6), (2, 3, 8)):
            args = _causal_with_inf(*shape, seed=sum(shape))
            feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
            got = [torch.from_numpy(x) for x in session.run(None, feeds)]
            want = attnkern.reference.additive_attention(*args, causal=True,
                                                         return_weights=True)
            for g, r in zip(got, want, strict=True):
                torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5, equal_nan=True,
                                           msg=lambda m, n=route: f"{n}: {m}")


def test_eager_calls_are_not_export_calls():
    assert not attnkern._compat.exporting_to_onnx() and attnkern._compat.is_eager()


# ------------------------------------------------------------------------ AdditiveAttention

class StepWithLengths(nn.Module):
    """The issue's model: one decoder step, 2-D query, key_lengths, need_weights."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = attnkern.AdditiveAttention(7, 12, 16)

    def forward(self, query, memory, lengths):
        return self.attn(query, memory, key_lengths=lengths, need_weights=True)


class MaskedCausal(nn.Module):
    """3-D queries, key_padding_mask, causal, weight-normalised score vector."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = attnkern.AdditiveAttention(7, 12, 16, normalize=True)

    def forward(self, query, memory, mask):
        return self.attn(query, memory, key_padding_mask=mask, causal=True, need_weights=True)


class SmallDecoder(nn.Module):
    """Keys projected once (``projected_keys=``), then a GRU decoder attends at each step."""

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.attn = attnkern.AdditiveAttention(10, 12, 16)
        self.cell = nn.GRUCell(12, 10)
        self.out = nn.Linear(10 + 12, 4)

    def forward(self, memory, lengths, state):
        keys = self.attn.project_keys(memory)
        logits, alignments = [], []
        for _ in range(self.steps):
            context, weights = self.attn(state, None, memory, projected_keys=keys,
                                         key_lengths=lengths, need_weights=True)
            state = self.cell(context, state)
            logits.append(self.out(torch.cat([state, context], -1)))
            alignments.append(weights)
        return torch.stack(logits, 1), torch.stack(alignments, 1)


def _lengths(g: torch.Generator, B: int, Tk: int) -> Tensor:
    lengths = torch.randint(1, Tk + 1, (B,), generator=g)
    lengths[0], lengths[-1] = 0, Tk  # a row with no usable key, and a full one
    return lengths


def _step_inputs(B: int, Tq: int, Tk: int, g: torch.Generator) -> tuple:
    return torch.randn(B, 7, generator=g), torch.randn(B, Tk, 12, generator=g), \
        _lengths(g, B, Tk)


def _causal_inputs(B: int, Tq: int, Tk: int, g: torch.Generator) -> tuple:
    mask = torch.rand(B, Tk, generator=g) < 0.3
    mask[-1] = True
    memory = torch.randn(B, Tk, 12, generator=g).masked_fill(mask[..., None], math.nan)
    return torch.randn(B, Tq, 7, generator=g), memory, mask


def _decoder_inputs(B: int, Tq: int, Tk: int, g: torch.Generator) -> tuple:
    lengths = _lengths(g, B, Tk)
    padding = torch.arange(Tk)[None, :] >= lengths[:, None]
    memory = torch.randn(B, Tk, 12, generator=g).masked_fill(padding[..., None], math.nan)
    return memory, lengths, torch.randn(B, 10, generator=g)


class LocationStep(nn.Module):
    """A Tacotron 2 decoder step's attention (processed memory computed in the graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = attnkern.LocationSensitiveAttention(16, 12, 16, 4, 5)

    def forward(self, hidden, memory, weights_cat, mask):
        processed = self.attention.memory_layer(memory)
        return self.attention(hidden, memory, processed, weights_cat, mask)


def _location_inputs(B: int, Tq: int, Tk: int, g: torch.Generator) -> tuple:
    lengths = _lengths(g, B, Tk)
    mask = torch.arange(Tk)[None, :] >= lengths[:, None]
    memory = torch.randn(B, Tk, 12, generator=g).masked_fill(mask[..., None], math.nan)
    weights_cat = torch.rand(B, 2, Tk, generator=g).masked_fill(mask[:, None], 0.0)
    return torch.randn(B, 16, generator=g), memory, weights_cat, mask


# name: (model factory, inputs(B, Tq, Tk, generator), dynamic_shapes of those inputs).
# A new module case is one entry here.
MODULES = {
    "step": (StepWithLengths, _step_inputs, ({0: BATCH}, {0: BATCH, 1: KEYS}, {0: BATCH})),
    "causal": (MaskedCausal, _causal_inputs,
               ({0: BATCH, 1: QUERIES}, {0: BATCH, 1: KEYS}, {0: BATCH, 1: KEYS})),
    "decoder": (SmallDecoder, _decoder_inputs,
                ({0: BATCH, 1: KEYS}, {0: BATCH}, {0: BATCH})),
    "location": (LocationStep, _location_inputs,
                 ({0: BATCH}, {0: BATCH, 1: KEYS}, {0: BATCH, 2: KEYS}, {0: BATCH, 1: KEYS})),
}


def _module_case(name: str, B: int, Tq: int, Tk: int, seed: int = 0) -> tuple:
    return MODULES[name][1](B, Tq, Tk, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(MODULES))
def test_module_dynamo(tmp_path, name):
    factory, _, dynamic = MODULES[name]
    torch.manual_seed(0)
    model = factory().eval()
    session = export_to_ort(model, _module_case(name, 3, 4, 6), tmp_path / "m.onnx",
                            dynamic_shapes=dynamic)
    for shape in ((3, 4, 6), (5, 2, 9), (2, 5, 5)):
        assert_ort_matches(session, model, _module_case(name, *shape, seed=sum(shape)))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_module_torchscript_exporter(tmp_path):
    torch.manual_seed(0)
    model = StepWithLengths().eval()
    axes = {"query": {0: "B"}, "memory": {0: "B", 1: "Tk"}, "lengths": {0: "B"}}
    session = export_to_ort(model, _module_case("step", 3, 1, 6), tmp_path / "m.onnx",
                            dynamo=False, input_names=list(axes), dynamic_axes=axes)
    for shape in ((3, 1, 6), (5, 1, 9)):
        assert_ort_matches(session, model, _module_case("step", *shape, seed=sum(shape)))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_export_needs_no_runnable_backend(tmp_path):
    """A layer built for CUDA (backend='triton') exports on a CPU-only machine: the file
    holds standard ops whichever backend the layer names."""
    torch.manual_seed(0)
    model = StepWithLengths().eval()
    model.attn.backend = "triton"
    args = _module_case("step", 3, 1, 6)
    with pytest.raises((ValueError, RuntimeError)):  # not runnable here (no interpreter)
        model(*args)
    session = export_to_ort(model, args, tmp_path / "m.onnx", dynamo=False)
    model.attn.backend = "auto"
    assert_ort_matches(session, model, args)


def test_module_float16(tmp_path):
    torch.manual_seed(0)
    model = StepWithLengths().eval().half()

    def case(*shape):
        q, memory, lengths = _module_case("step", *shape, seed=sum(shape))
        return q.half(), memory.half(), lengths

    session = export_to_ort(model, case(3, 1, 6), tmp_path / "m16.onnx",
                            dynamic_shapes=MODULES["step"][2])
    for shape in ((3, 1, 6), (5, 1, 9)):
        assert_ort_matches(session, model, case(*shape))


# ---------------------------------------------- ExportedProgram holding attnkern::fwd

class RawOp(nn.Module):
    """``attnkern::fwd`` itself, every output (lse included), under each mask kind."""

    def __init__(self, op=None) -> None:
        super().__init__()
        self.op = op or torch.ops.attnkern.fwd.default
        self.cases = [(kind, rw) for kind in MASK_KINDS for rw in (True, False)]

    def names(self) -> list[str]:
        return [f"{kind}{'' if rw else ' no-weights'} {part}" for kind, rw in self.cases
                for part in ("context", "lse", "weights")]

    def forward(self, q, k, v, w, mask, lengths):
        outs = []
        finite_k, finite_v = k.nan_to_num(), v.nan_to_num()
        for kind, rw in self.cases:
            kw = _kind_kwargs(kind, mask, lengths)
            padded = "key_padding_mask" in kw
            outs.append(self.op(q, k if padded else finite_k, v if padded else finite_v, w,
                                kw.get("key_padding_mask"), kw.get("key_lengths"),
                                kw.get("causal", False), rw))
        return tuple(outs)


def _raw_inputs(*shape, seed=0, dtype=torch.float32):
    q, _, k, v, w, mask, lengths = _attention_inputs(*shape, seed=seed, dtype=dtype)
    return q, k, v, w, mask, lengths


RAW_DYNAMIC = ({0: BATCH, 1: QUERIES}, {0: BATCH, 1: KEYS}, {0: BATCH, 1: KEYS}, None,
               {0: BATCH, 1: KEYS}, {0: BATCH})


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_exported_program_with_translation_table(tmp_path, dtype):
    model = RawOp()
    if dtype == torch.float16:  # the dtype handling, not every mask kind again
        model.cases = [("all", True), ("none", False)]
    with torch.no_grad():
        ep = torch.export.export(model, _raw_inputs(3, 4, 6, dtype=dtype),
                                 dynamic_shapes=RAW_DYNAMIC)
    assert "attnkern.fwd" in ep.graph_module.code
    session = export_to_ort(ep, (), tmp_path / "ep.onnx",
                            custom_translation_table=attnkern.onnx_translation_table())
    for shape in ((3, 4, 6), (5, 2, 9), (2, 7, 7)):
        assert_ort_matches(session, model, _raw_inputs(*shape, seed=sum(shape), dtype=dtype),
                           model.names())


@needs_cpp
def test_exported_module_with_translation_table(tmp_path):
    torch.manual_seed(0)
    model = StepWithLengths().eval()
    with torch.no_grad():
        ep = torch.export.export(model, _module_case("step", 3, 1, 6),
                                 dynamic_shapes=MODULES["step"][2])
    session = export_to_ort(ep, (), tmp_path / "ep.onnx",
                            custom_translation_table=attnkern.onnx_translation_table())
    for shape in ((3, 1, 6), (5, 1, 9)):
        assert_ort_matches(session, model, _module_case("step", *shape, seed=sum(shape)))


@torch.library.custom_op("attnkern_onnx_test::fwd_key_exp", mutates_args=())
def _fwd_key_exp(query: Tensor, key: Tensor, value: Tensor, weight: Tensor,
                 key_padding_mask: Tensor | None, key_lengths: Tensor | None, causal: bool,
                 return_weights: bool, key_exp: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """attnkern::fwd with the trailing ``key_exp`` argument of the planned schema."""
    return torch.ops.attnkern.fwd.default(query, key, value, weight, key_padding_mask,
                                          key_lengths, causal, return_weights)


@_fwd_key_exp.register_fake
def _(query, key, value, weight, key_padding_mask, key_lengths, causal, return_weights,
      key_exp=None):
    return ops._fwd_fake(query, key, value, weight, key_padding_mask, key_lengths, causal,
                         return_weights)


@needs_cpp
def test_translation_ignores_a_trailing_key_exp(tmp_path):
    def with_key_exp(q, k, v, w, mask, lengths, causal, rw):
        return _fwd_key_exp(q, k, v, w, mask, lengths, causal, rw, torch.exp(2 * k))

    model = RawOp(with_key_exp)
    model.cases = [("all", True)]
    with torch.no_grad():
        ep = torch.export.export(model, _raw_inputs(3, 4, 6), dynamic_shapes=RAW_DYNAMIC)
    table = {torch.ops.attnkern_onnx_test.fwd_key_exp.default: attnkern._onnx._fwd_onnx}
    session = export_to_ort(ep, (), tmp_path / "ep.onnx", custom_translation_table=table)
    assert_ort_matches(session, model, _raw_inputs(5, 2, 9, seed=1), model.names())
