"""torch.compile, torch.export, fake tensors, autocast, DDP and CUDA graphs."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import attnkern
from attnkern import ops

BACKENDS = ["reference"] + (["cpp"] if ops.HAS_CPP else [])
needs_cpp = pytest.mark.skipif(not ops.HAS_CPP, reason="attnkern._C not built")


class TinyAttnModel(nn.Module):
    """Encoder states + decoder queries -> attention -> linear head."""

    def __init__(self, backend: str = "auto", normalize: bool = False) -> None:
        super().__init__()
        self.enc = nn.Linear(5, 12)
        self.attn = attnkern.AdditiveAttention(7, 12, 16, normalize=normalize, backend=backend)
        self.head = nn.Linear(12, 3)

    def forward(self, query, src, lengths):
        keys = torch.tanh(self.enc(src))
        ctx, _ = self.attn(query, keys, key_lengths=lengths)
        return self.head(ctx)


def _inputs(B=3, Tq=4, Tk=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, Tq, 7, generator=g), torch.randn(B, Tk, 5, generator=g),
            torch.tensor([6, 3, 1][:B]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_matches_eager(backend):
    torch.manual_seed(0)
    model = TinyAttnModel(backend, normalize=True)
    q, src, lengths = _inputs()
    eager = model(q, src, lengths)
    ge = torch.autograd.grad(eager.square().sum(), list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(q, src, lengths)
    gc = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_cpp
def test_compiled_graph_keeps_the_custom_op():
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    backend = AotEagerAndRecordGraphs()
    model = TinyAttnModel("cpp")
    q, src, lengths = _inputs()
    out = torch.compile(model, backend=backend, fullgraph=True)(q, src, lengths)
    out.sum().backward()
    (graph,) = backend.graphs
    # The op is a leaf of the Dynamo graph (its autograd lives in C++, not in a traced
    # Python Function); AOTAutograd's joint graph puts fwd in forward, bwd in backward.
    assert "torch.ops.attnkern.fwd" in graph.code
    assert "autograd_function_apply" not in graph.code
    (fw,) = backend.fw_graphs
    (bw,) = backend.bw_graphs
    assert "attnkern.fwd" in fw.code and "attnkern.bwd" not in fw.code
    assert "attnkern.bwd" in bw.code


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_stepwise_decoder_with_prepared_keys(backend):
    torch.manual_seed(0)
    layer = attnkern.AdditiveAttention(7, 12, 16, backend=backend)
    cell = nn.GRUCell(12, 7)

    def decode(h, keys, lengths):
        pk = layer.project_keys(keys)  # PreparedKeys, once per sequence
        ctxs = []
        for _ in range(3):
            ctx, _ = layer(h, None, keys, projected_keys=pk, key_lengths=lengths)
            h = cell(ctx, h)
            ctxs.append(ctx)
        return torch.stack(ctxs, 1)

    h = torch.randn(3, 7)
    keys = torch.randn(3, 6, 12, requires_grad=True)
    lengths = torch.tensor([6, 3, 1])
    params = [keys, *layer.parameters(), *cell.parameters()]
    eager = decode(h, keys, lengths)
    ge = torch.autograd.grad(eager.square().sum(), params)
    out = torch.compile(decode, fullgraph=True)(h, keys, lengths)
    gc = torch.autograd.grad(out.square().sum(), params)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_inference_model(backend):
    torch.manual_seed(0)
    model = TinyAttnModel(backend).eval()
    q, src, lengths = _inputs()
    with torch.no_grad():
        ep = torch.export.export(model, (q, src, lengths))
        q2, src2, lengths2 = _inputs(seed=1)
        torch.testing.assert_close(ep.module()(q2, src2, lengths2), model(q2, src2, lengths2))
    if backend == "cpp":
        assert "attnkern.fwd" in ep.graph_module.code


@needs_cpp
def test_export_keeps_prepared_keys_in_the_graph():
    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = attnkern.AdditiveAttention(7, 12, 16, backend="cpp")

        def forward(self, q, keys, lengths):
            pk = self.attn.project_keys(keys)  # once, reused by both steps
            c1, _ = self.attn(q, None, keys, projected_keys=pk, key_lengths=lengths)
            c2, _ = self.attn(2 * q, None, keys, projected_keys=pk, key_lengths=lengths)
            return c1 + c2

    torch.manual_seed(0)
    model = Decoder().eval()
    args = (torch.randn(3, 7), torch.randn(3, 6, 12), torch.tensor([6, 3, 1]))
    with torch.no_grad():
        ep = torch.export.export(model, args)
        torch.testing.assert_close(ep.module()(*args), model(*args))
    code = ep.graph_module.code
    assert code.count("torch.ops.attnkern.fwd.default") == 2
    assert code.count("torch.ops.aten.exp.default") == 1  # key_exp computed once


def test_ops_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k, v, w = (torch.empty(2, 3, 8), torch.empty(2, 11, 8), torch.empty(2, 11, 5),
                      torch.empty(8))
        lengths = torch.empty(2, dtype=torch.int64)
        out, lse, wts = torch.ops.attnkern.fwd(q, k, v, w, None, lengths, True, True)
        assert out.shape == (2, 3, 5) and lse.shape == (2, 3) and wts.shape == (2, 3, 11)
        _, _, none = torch.ops.attnkern.fwd(q, k, v, w, None, None, False, False)
        assert none.numel() == 0
        grads = torch.ops.attnkern.bwd(torch.empty(2, 3, 5), None, q, k, v, w, out, lse,
                                       None, lengths, False)
        assert [tuple(g.shape) for g in grads] == [(2, 3, 8), (2, 11, 8), (2, 11, 5), (8,)]
        qb = q.to(torch.bfloat16)
        _, lse_b, _ = torch.ops.attnkern.fwd(qb, k.bfloat16(), v.bfloat16(), w.bfloat16(),
                                             None, None, False, False)
        assert lse_b.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_autocast_bfloat16(backend):
    torch.manual_seed(0)
    model = TinyAttnModel(backend)
    q, src, lengths = _inputs()
    ref = model(q, src, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(q, src, lengths)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)
    grads = torch.autograd.grad(out.float().sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad(ref.sum(), list(model.parameters()))
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, r, atol=8e-2, rtol=8e-2)


def test_autocast_accepts_mixed_dtypes_functional():
    q = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    k = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    v = torch.randn(2, 5, 4, dtype=torch.bfloat16)
    w = torch.randn(8)  # a float32 parameter next to bfloat16 projections
    with pytest.raises(TypeError, match="one dtype"):
        attnkern.additive_attention(q, k, v, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attnkern.additive_attention(q, k, v, w)
    assert out.dtype == torch.bfloat16
    ref = attnkern.reference.additive_attention(q.float(), k.float(), v.float(), w)
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


# ---------------------------------------------------------------- DistributedDataParallel

def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, backend: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(TinyAttnModel(backend))
    q, src, lengths = _inputs(B=3 * world, seed=3)
    lengths = torch.tensor([6, 3, 1] * world)
    shard = slice(rank * 3, (rank + 1) * 3)
    loss = model(q[shard], src[shard], lengths[shard]).square().mean()
    loss.backward()
    grads = [p.grad for p in model.module.parameters()]
    torch.save(grads, os.path.join(out_dir, f"grads{rank}.pt"))
    # Leave together: a rank tearing gloo down while its peer still talks to it can abort.
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("backend", BACKENDS[-1:])
def test_ddp_gloo_gradients_equal_single_process_average(tmp_path, backend):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path), backend),
             nprocs=world, join=True)
    torch.manual_seed(0)
    model = TinyAttnModel(backend)
    q, src, _ = _inputs(B=3 * world, seed=3)
    lengths = torch.tensor([6, 3, 1] * world)
    losses = [model(q[r * 3:(r + 1) * 3], src[r * 3:(r + 1) * 3],
                    lengths[r * 3:(r + 1) * 3]).square().mean() for r in range(world)]
    expected = torch.autograd.grad(sum(losses) / world, list(model.parameters()))
    for r in range(world):
        got = torch.load(tmp_path / f"grads{r}.pt")
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------- CUDA graphs

@pytest.mark.gpu
def test_cuda_graph_stepwise_decoding():
    torch.manual_seed(0)
    dev = "cuda"
    layer = attnkern.AdditiveAttention(16, 16, 32, device=dev)
    cell = nn.GRUCell(16, 16, device=dev)
    keys = torch.randn(4, 50, 16, device=dev)
    lengths = torch.tensor([50, 20, 7, 1], device=dev)
    with torch.no_grad():
        pk = layer.project_keys(keys)
        h0 = torch.randn(4, 16, device=dev)

        def step(h):
            ctx, _ = layer(h, None, keys, projected_keys=pk, key_lengths=lengths)
            return cell(ctx, h)

        static_h = h0.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):  # warm up: compile kernels, settle the allocator
                step(static_h)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step(static_h)
        h_eager = h0.clone()
        for _ in range(5):
            static_h.copy_(h_eager)
            graph.replay()
            h_eager = step(h_eager)
            torch.testing.assert_close(static_out, h_eager)
