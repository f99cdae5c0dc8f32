"""Worker for tests/test_distributed.py: a small decoder on attnkern's modules trained for a
few SGD steps, under DDP or FSDP2 (``fully_shard``) with gloo on CPU, or in one process.

Run by torchrun (``python -m torch.distributed.run --nproc_per_node=2 tests/_dist_worker.py
--mode ddp --out DIR``) or plainly with ``--mode single``. Each rank trains on its contiguous
slice of one fixed batch; the single run trains on the whole batch, so with a mean loss and
equal slices the averaged gradients must match. Writes ``DIR/<mode><rank>.pt``: the
gradients of every step and the parameters after the last one (full tensors, in
``named_parameters`` order).
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

import attnkern

BATCH, T, EMB, RNN, ATT, STEPS = 4, 7, 8, 12, 10, 3


class Decoder(nn.Module):
    """Encoder projection, then a few decoder steps: a GRU cell whose input is the previous
    step's two contexts, LocationSensitiveAttention (explicit state, so its weight-gradient
    stores record every step) and AdditiveAttention over the same memory."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(EMB, EMB)
        self.lsa = attnkern.LocationSensitiveAttention(RNN, EMB, ATT, 4, 3)
        self.add = attnkern.AdditiveAttention(RNN, EMB, ATT)
        self.cell = nn.GRUCell(2 * EMB, RNN)
        self.out = nn.Linear(2 * EMB + RNN, 1)

    def forward(self, src: Tensor, mask: Tensor) -> Tensor:
        """src ``(B, T, EMB)``, mask ``(B, T)`` bool (True = padding) -> ``(B, STEPS)``."""
        memory = torch.tanh(self.encoder(src))
        lsa_state = self.lsa.start(memory, key_padding_mask=mask)
        add_state = self.add.start(memory, key_padding_mask=mask)
        h = memory.new_zeros(memory.shape[0], RNN)
        ctx = memory.new_zeros(memory.shape[0], 2 * EMB)
        outs = []
        for _ in range(STEPS):
            h = self.cell(ctx, h)
            c1, _, lsa_state = self.lsa.step(h, lsa_state)
            c2, _, add_state = self.add.step(h, add_state)
            ctx = torch.cat([c1, c2], -1)
            outs.append(self.out(torch.cat([ctx, h], -1)))
        return torch.cat(outs, -1)


def make_data() -> tuple[Tensor, Tensor, Tensor]:
    """The whole batch: src, padding mask (lengths 7, 5, 2, 6), targets."""
    g = torch.Generator().manual_seed(1)
    src = torch.randn(BATCH, T, EMB, generator=g)
    lengths = torch.tensor([7, 5, 2, 6])
    mask = torch.arange(T)[None, :] >= lengths[:, None]
    target = torch.randn(BATCH, STEPS, generator=g)
    return src, mask, target


def _full(t: Tensor) -> Tensor:
    # FSDP2 parameters and gradients are DTensors sharded on dim 0.
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def train(mode: str, rank: int, world: int, n_steps: int = 2) -> dict[str, list[Tensor]]:
    torch.manual_seed(0)
    model: nn.Module = Decoder()
    plain = model
    if mode == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
    elif mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh("cpu", (world,))
        # One FSDP group at the root: its forward hooks unshard every parameter for the
        # whole decoder loop. A fully_shard(model.lsa) of its own would not be unsharded
        # by lsa.start()/lsa.step() (FSDP2 hooks forward() only; see
        # torch.distributed.fsdp.register_fsdp_forward_method).
        fully_shard(model, mesh=mesh)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    src, mask, target = make_data()
    per = BATCH // world
    rows = slice(rank * per, (rank + 1) * per)
    grads: list[Tensor] = []
    for _ in range(n_steps):
        opt.zero_grad(set_to_none=True)
        loss = (model(src[rows], mask[rows]) - target[rows]).square().mean()
        loss.backward()
        grads += [_full(p.grad) for p in plain.parameters()]
        opt.step()
    return {"grads": grads, "params": [_full(p) for p in plain.parameters()],
            "names": [n for n, _ in plain.named_parameters()]}  # type: ignore[dict-item]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["single", "ddp", "fsdp"], required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.mode == "single":
        torch.save(train("single", 0, 1), os.path.join(args.out, "single0.pt"))
        return
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = train(args.mode, rank, world)
    torch.save(result, os.path.join(args.out, f"{args.mode}{rank}.pt"))
    if os.environ.get("ATTNKERN_DIST_TEARDOWN") == "implicit":
        return  # to reproduce the teardown problem: gloo left to its destructor at exit
    # Leave together, then tear gloo down explicitly while the interpreter is intact (not in
    # the ProcessGroupGloo destructor at exit, which runs during interpreter finalisation):
    # left to it, 1 of 20 runs aborted at exit here (std::terminate), 4 of 20 of a plain
    # nn.Linear DDP script without attnkern: gloo's, not attnkern's.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
