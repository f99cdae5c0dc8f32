"""Compile every Triton kernel of attnkern for sm_80 and sm_90 without a GPU and report
what the hardware would run: registers/thread, local (spill) bytes, shared memory, SASS
instruction count and MUFU count.

    python bench/kernel_report.py          # table
    python bench/kernel_report.py --json   # [{"kernel", "arch", "registers", "local_bytes",
                                           #   "shared_bytes", "sass_instructions", "mufu",
                                           #   "loop_mufu_per_elem", "loop_elems"}, ...]
    python bench/kernel_report.py --per-element [--json] [--shape LONG] [--dtype float32]

``--per-element``: one row per (shape in TRAIN/LONG/MEM/DECODE, bench/shapes.py's, with
key_lengths) x (dtype float32/bfloat16) x (arch) x (pass forward/backward, and
scores_forward/scores_backward: the fused energies of ``attnkern.additive_scores``, i.e.
``_scores_fwd_kernel``; ``_scores_ds_kernel`` + ``_bwd_dqdk_kernel`` + the dweight sum, as
the op runs them, counted the same way):
``{"shape", "dtype", "arch", "pass", "kernels", "launches", "instructions_per_element",
"regions", "uncertain_instructions_per_element", "estimated_instructions_per_element",
"element_loop_instructions_per_element", "mufu_per_element", "local_bytes_max", ...}``.
``instructions_per_element`` is all-in: every SASS instruction the pass executes (all its
kernels, the backward's delta pre-pass included) per computed (i, j, h) element, from the
basic blocks' execution counts (see "whole-pass counting" below), split in ``regions``:
element (the element loops), tile (the loop around them: the forward's key tiles, backward
pass 1's query tiles), query_block (pass 2's query-block loop), prologue_epilogue (the rest
of the Triton kernels) and other_kernels (torch ops: estimated, see ``aten_estimate``).
``element_loop_instructions_per_element`` is the older element-loop-only figure: the
innermost SASS loop (a backward branch's target to the branch) holding at least half a MUFU
op per (i, j, h) element its thread handles per iteration (``BLOCK_M*BLOCK_N*BLOCK_H /
threads``); where a kernel has two (the factorised loop and the rational fallback's), the
shorter is the one that runs and the other is reported as
``fallback_instructions_per_element``. ``tile_instructions_per_element``: what the
enclosing key-tile loop's code adds per element (its instructions once, not its executed
count). ``launches`` counts the Triton launches and the torch ops the pass runs.

The kernels are compiled exactly as the launchers in attnkern/triton_kernels.py would launch
them (same configs, same constexprs): the launchers run on ``meta`` tensors with the launch
call intercepted, and each intercepted launch is compiled ahead of time with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``. ptxas and cuobjdump
come from the Triton wheel (triton/backends/nvidia/bin).

``loop_mufu_per_elem``: MUFU instructions in the kernel's element loop (see --per-element
below) divided by the (i, j, h) elements one thread handles per iteration of it
(``BLOCK_M*BLOCK_N*BLOCK_H / (32*num_warps)``); blank for kernels without one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from typing import Any

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # FMA contraction, the Triton default
os.environ.pop("TRITON_INTERPRET", None)  # we need real JITFunctions to compile

if __name__ == "__main__" and not __package__:  # python bench/kernel_report.py: bench/_bootstrap.py
    import _bootstrap  # noqa: F401

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from attnkern import ops as attn_ops  # noqa: E402
from attnkern import triton_kernels as tk  # noqa: E402
from bench.shapes import GPU_SHAPES  # noqa: E402

ARCHS = (80, 90)
KEYS = ("kernel", "arch", "registers", "local_bytes", "shared_bytes", "sass_instructions",
        "mufu", "loop_mufu_per_elem", "loop_elems")
_TORCH_TO_TRITON = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
    torch.uint8: "u8", torch.int64: "i64", torch.int32: "i32", torch.bool: "i1",
}


def nvidia_bin(tool: str) -> str:
    """Path of a CUDA tool bundled with Triton; raises if the wheel lacks it."""
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", tool)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{tool} not found at {path}: this Triton install does not "
                                "bundle the NVIDIA tools the report needs")
    return path


# ------------------------------------------------------------------ capture the launches

def _meta_inputs(B: int, Tq: int, Tk: int, H: int, Dv: int, dtype: torch.dtype):
    m = dict(device="meta", dtype=dtype)
    return (torch.empty(B, Tq, H, **m), torch.empty(B, Tk, H, **m),  # type: ignore[arg-type]
            torch.empty(B, Tk, Dv, **m), torch.empty(H, **m))  # type: ignore[arg-type]


def capture_launches() -> list[tuple[str, Any, tuple, dict]]:
    """Run the launchers on meta tensors at representative shapes; record each launch."""
    records: list[tuple[str, Any, tuple, dict]] = []
    tag = [""]

    def record(kernel: Any, grid: Any, *args: Any, **meta: Any) -> None:
        records.append((tag[0], kernel, args, meta))

    saved = tk._launch
    tk._launch = record  # type: ignore[assignment]
    try:
        dt = torch.bfloat16
        B, T, H, Dv = 8, 512, 128, 128
        q, k, v, w = _meta_inputs(B, T, T, H, Dv, dt)
        mask = torch.empty(B, T, dtype=torch.bool, device="meta")
        lens = torch.empty(B, dtype=torch.int64, device="meta")
        lse = torch.empty(B, T, device="meta")
        # training: Tq = Tk = 512, padding mask + lengths, weights requested
        tag[0] = "train"
        tk.fwd(q, k, v, w, mask, lens, False, True)
        tk.bwd(torch.empty_like(q[..., :Dv]), torch.empty(B, T, T, dtype=dt, device="meta"),
               q, k, v, w, lse, lse, mask, lens, False)
        # decoder step: Tq = 1 against 4096 keys -> split-K + combine
        tag[0] = "step"
        qs, ks, vs, ws = _meta_inputs(B, 1, 4096, H, Dv, dt)
        tk.fwd(qs, ks, vs, ws, None, lens, False, False)
        tk.bwd(torch.empty_like(qs[..., :Dv]), None, qs, ks, vs, ws, lse[:, :1], lse[:, :1],
               None, lens, False)
        # the CPU goals' TRAIN shape (Tq = Tk = 64, Dv = 256): the wide-Dv tile buckets
        tag[0] = "train-dv256"
        qw, kw, vw, ww = _meta_inputs(32, 64, 64, 256, 256, torch.float32)
        lw = torch.empty(32, 64, device="meta")
        tk.fwd(qw, kw, vw, ww, None, None, False, False)
        tk.bwd(torch.empty_like(vw), None, qw, kw, vw, ww, lw, lw, None, None, False)
        # opt-in tanh.approx.f32
        tag[0] = "train,fast_tanh"
        tk.fwd(q, k, v, w, None, None, True, False, fast_tanh=True)
        # the fused energies (attnkern.additive_scores): forward and backward, training
        # (padding mask + lengths) and a decoder step
        tag[0] = "scores-train"
        tk.scores_fwd(q, k, w, mask, lens, False)
        tk.scores_bwd(torch.empty(B, T, T, dtype=dt, device="meta"), q, k, w, mask, lens,
                      False)
        tag[0] = "scores-step"
        tk.scores_fwd(qs, ks, ws, None, lens, False)
        tk.scores_bwd(torch.empty(B, 1, 4096, dtype=dt, device="meta"), qs, ks, ws, None,
                      lens, False)
    finally:
        tk._launch = saved  # type: ignore[assignment]
    return records


def _signature(kernel: Any, args: tuple, meta: dict):
    sig: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    names = kernel.arg_names
    for i, name in enumerate(names):
        if i < len(args):
            a = args[i]
            if isinstance(a, torch.Tensor):
                sig[name] = "*" + _TORCH_TO_TRITON[a.dtype]
                attrs[(i,)] = [["tt.divisibility", 16]]  # allocator alignment
            elif a is None:  # absent optional pointer: specialised away
                sig[name] = "constexpr"
                constexprs[name] = None
            elif isinstance(a, bool):
                sig[name] = "constexpr"
                constexprs[name] = a
            elif isinstance(a, int):
                if a == 1:  # Triton specialises integer 1 as a constant
                    sig[name] = "constexpr"
                    constexprs[name] = 1
                else:
                    sig[name] = "i32" if -2**31 <= a < 2**31 else "i64"
                    if a % 16 == 0:
                        attrs[(i,)] = [["tt.divisibility", 16]]
            else:
                raise TypeError(f"{kernel.__name__}: unsupported argument {name}={a!r}")
        else:
            sig[name] = "constexpr"
            constexprs[name] = meta[name]
    return sig, constexprs, attrs


# ------------------------------------------------------------------------ inspect SASS

_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def parse_sass(sass: str) -> list[tuple[int, str, str]]:
    out = []
    for line in sass.splitlines():
        m = _INSTR.search(line)
        if m:
            out.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return out


def innermost_loop(instrs: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """Instructions of the smallest backward-branch range (the innermost loop)."""
    best: tuple[int, int] | None = None
    for addr, op, rest in instrs:
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", rest)
            if m and int(m.group(1), 16) < addr:
                span = (int(m.group(1), 16), addr)
                if best is None or span[1] - span[0] < best[1] - best[0]:
                    best = span
    if best is None:
        return []
    return [i for i in instrs if best[0] <= i[0] <= best[1]]


def loops(instrs: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """Every loop of the SASS: [start, end] from a backward branch's target to the branch,
    with its instruction and MUFU counts and whether another loop lies inside it."""
    spans = []
    for addr, op, rest in instrs:
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", rest)
            if m and int(m.group(1), 16) < addr:
                spans.append((int(m.group(1), 16), addr))
    out = []
    for a, b in spans:
        body = [op for addr, op, _ in instrs if a <= addr <= b]
        out.append({"start": a, "end": b, "instructions": len(body),
                    "mufu": sum(op.startswith("MUFU") for op in body),
                    "innermost": not any(a <= c and d <= b and (c, d) != (a, b)
                                         for c, d in spans)})
    return out


def inspect_cubin(cubin: bytes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        cuobjdump = nvidia_bin("cuobjdump")
        res = subprocess.run([cuobjdump, "-res-usage", path], check=True, capture_output=True,
                             text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", path], check=True, capture_output=True,
                              text=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res))
    instrs = [i for i in parse_sass(sass) if i[1] != "NOP"]
    return {
        "registers": int(fields.get("REG", -1)),
        "local_bytes": int(fields.get("LOCAL", 0)) + int(fields.get("STACK", 0)),
        "static_shared": int(fields.get("SHARED", 0)),
        "sass_instructions": len(instrs),
        "mufu": sum(op.startswith("MUFU") for _, op, _ in instrs),
        "loop": innermost_loop(instrs),
        "loops": loops(instrs),
        "sass": sass,
    }


_COMPILED_CACHE: dict[tuple, dict[str, Any]] = {}


def compile_one(kernel: Any, args: tuple, meta: dict, cc: int) -> dict[str, Any]:
    """AOT-compile one captured launch for sm_<cc>; memoised per process (the CI test
    compiles each distinct specialisation once)."""
    options = {k: meta[k] for k in ("num_warps", "num_stages") if k in meta}
    kmeta = {k: v for k, v in meta.items() if k not in options}
    sig, constexprs, attrs = _signature(kernel, args, kmeta)
    key = (kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__,
           repr(sorted(sig.items())), repr(sorted(constexprs.items())),
           repr(sorted(attrs.items())), repr(sorted(options.items())), cc)
    if key not in _COMPILED_CACHE:
        src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                      options=dict(options))
        info = inspect_cubin(compiled.asm["cubin"])
        info["shared_bytes"] = int(compiled.metadata.shared) + info["static_shared"]
        _COMPILED_CACHE[key] = info
    return _COMPILED_CACHE[key]


def compile_all(archs: tuple[int, ...] = ARCHS, keep_sass: bool = False) -> list[dict]:
    rows = []
    seen: set[str] = set()
    for tag, kernel, args, meta in capture_launches():
        name = kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__
        name = name.strip("_").replace("_kernel", "") + f"[{tag}]"
        if name in seen:
            continue
        seen.add(name)
        options = {k: meta[k] for k in ("num_warps", "num_stages") if k in meta}
        kmeta = {k: v for k, v in meta.items() if k not in options}
        bm, bn, bh = (kmeta.get(x) for x in ("BLOCK_M", "BLOCK_N", "BLOCK_H"))
        for cc in archs:
            info = dict(compile_one(kernel, args, meta, cc))
            loop = info.pop("loop")
            sass = info.pop("sass")
            all_loops = info.pop("loops")
            row: dict[str, Any] = {"kernel": name, "arch": f"sm_{cc}"}
            row.update(info)
            row.pop("static_shared")
            # MUFU per (i, j, h) element in the element loop that runs (the shortest).
            row["loop_elems"] = row["loop_mufu_per_elem"] = None
            if bh is not None:
                elems = bm * bn * bh // (32 * options.get("num_warps", 4))
                cands = element_loops(all_loops, elems)
                if cands:
                    fast = min(cands, key=lambda lp: lp["instructions"])
                    row["loop_elems"] = elems
                    row["loop_mufu_per_elem"] = round(fast["mufu"] / elems, 3)
                    loop = [i for i in parse_sass(sass) if fast["start"] <= i[0] <= fast["end"]
                            and i[1] != "NOP"]
            if keep_sass:
                row["sass"] = sass
                row["loop_ops"] = [op for _, op, _ in loop]
            rows.append({k: row[k] for k in KEYS} | ({"sass": row["sass"],
                        "loop_ops": row["loop_ops"]} if keep_sass else {}))
    return rows

# ------------------------------------------------------------- per-element figures

# bench/shapes.py's GPU shapes (B, Tq, Tk, H, Dv), key_lengths given; DECODE is one decoder step.
PER_ELEMENT_SHAPES = {name: GPU_SHAPES[name].dims for name in ("TRAIN", "LONG", "MEM", "DECODE")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PASSES = ("forward", "backward")
# the fused energies (attnkern.additive_scores, attnkern::scores / scores_backward)
SCORES_PASSES = ("scores_forward", "scores_backward")
ALL_PASSES = PASSES + SCORES_PASSES
# aten ops that launch nothing (allocation, metadata)
_NO_LAUNCH = ("empty", "new_empty", "view", "as_strided", "alias", "detach", "lift_fresh", "t.",
              "transpose", "expand", "select", "slice", "unsqueeze", "squeeze", "permute")


def capture_pass(shape: str, dtype: torch.dtype, pass_: str,
                 with_sizes: bool = False) -> tuple[list, list]:
    """The Triton launches and the launching torch ops of one pass at one bench shape
    (with ``with_sizes``: (op, largest operand's numel) pairs)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    B, Tq, Tk, H, Dv = PER_ELEMENT_SHAPES[shape]
    records: list[tuple[Any, Any, tuple, dict]] = []
    ops: list[str] = []
    op_sizes: list[int] = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") \
                else str(func)
            out = func(*args, **(kwargs or {}))
            if not any(name.startswith(x.rstrip(".")) for x in _NO_LAUNCH):
                sizes = [t.numel() for t in (*args, out) if isinstance(t, torch.Tensor)]
                ops.append(f"aten.{name}")
                op_sizes.append(max(sizes, default=0))
            return out

    def record(kernel: Any, grid: Any, *args: Any, **meta: Any) -> None:
        records.append((kernel, grid, args, meta))

    q, k, v, w = _meta_inputs(B, Tq, Tk, H, Dv, dtype)
    lens = torch.empty(B, dtype=torch.int64, device="meta")
    lse = torch.empty(B, Tq, device="meta")
    go = torch.empty(B, Tq, Dv, dtype=dtype, device="meta")
    out = torch.empty(B, Tq, Dv, dtype=dtype, device="meta")
    saved = tk._launch
    tk._launch = record  # type: ignore[assignment]
    try:
        # The second call is the steady state: its plan and split-K counters are cached.
        for capture in (False, True):
            records.clear()
            ops.clear()
            op_sizes.clear()
            with Ops() if capture else contextlib.nullcontext():
                if pass_ == "forward":
                    tk.fwd(q, k, v, w, None, lens, False, False)
                elif pass_ == "backward":  # as autograd runs it: the delta pre-pass too
                    attn_ops.bwd_triton(go, None, q, k, v, w, out, lse, None, lens, False)
                elif pass_ == "scores_forward":
                    attn_ops.scores_triton(q, k, w, None, lens, False)
                elif pass_ == "scores_backward":  # the op autograd calls
                    ge = torch.empty(B, Tq, Tk, dtype=dtype, device="meta")
                    attn_ops.scores_backward_triton(ge, q, k, w, None, lens, False)
                else:
                    raise ValueError(f"unknown pass {pass_!r}")
    finally:
        tk._launch = saved  # type: ignore[assignment]
    if with_sizes:
        return records, list(zip(ops, op_sizes))
    return records, ops


def element_loops(all_loops: list[dict[str, Any]], elems: float) -> list[dict[str, Any]]:
    """The (i, j, h) element loops: innermost, at least half a MUFU op per element of one
    thread's iteration (``elems`` = BLOCK_M*BLOCK_N*BLOCK_H / threads)."""
    return [lp for lp in all_loops if lp["innermost"] and lp["mufu"] >= elems / 2]


def _kernel_figures(kernel: Any, grid: Any, args: tuple, meta: dict, cc: int) -> dict:
    info = compile_one(kernel, args, meta, cc)
    warps = meta.get("num_warps", 4)
    bm, bn, bh = (meta.get(x) for x in ("BLOCK_M", "BLOCK_N", "BLOCK_H"))
    row: dict[str, Any] = {
        "name": kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__,
        "grid": list(grid), "block": [bm, bn, bh], "num_warps": warps,
        "registers": info["registers"], "local_bytes": info["local_bytes"],
        "instructions_per_element": None, "mufu_per_element": None,
    }
    if bh is None:
        return row
    elems = bm * bn * bh / (32 * warps)
    cands = element_loops(info["loops"], elems)
    if not cands:
        return row
    fast = min(cands, key=lambda lp: lp["instructions"])
    slow = max(cands, key=lambda lp: lp["instructions"])
    row.update(elements_per_iteration=elems, loop_instructions=fast["instructions"],
               loop_mufu=fast["mufu"],
               instructions_per_element=round(fast["instructions"] / elems, 3),
               mufu_per_element=round(fast["mufu"] / elems, 3),
               fallback_instructions_per_element=round(slow["instructions"] / elems, 3))
    # The key-tile loop around an H-chunk element loop: its own instructions (beyond the
    # element loops it holds), over the elements of one tile (H / BLOCK_H iterations).
    H = args[kernel.arg_names.index("H")] if "H" in kernel.arg_names else None
    outer = [lp for lp in info["loops"] if lp["start"] <= fast["start"]
             and fast["end"] <= lp["end"] and lp is not fast]
    if outer and H is not None and row["name"] in ("_fwd_kernel", "_bwd_ds_kernel"):
        tile = min(outer, key=lambda lp: lp["instructions"])
        inner = sum(lp["instructions"] for lp in cands
                    if tile["start"] <= lp["start"] and lp["end"] <= tile["end"])
        per_tile = elems * triton.cdiv(int(H), bh)
        row["tile_instructions_per_element"] = round((tile["instructions"] - inner)
                                                     / per_tile, 3)
    return row


# torch ops a pass launches are PyTorch's own CUDA kernels, which this report cannot compile:
# their share is an estimate per element of their largest operand (vectorised elementwise:
# two loads, the op, a store and the indexing over 4-wide vectors, about 4 per element; a
# reduction: about 2 per element read), reported under other_kernels and flagged.
_ATEN_PER_ELEM = {"sum": 2.0, "mean": 2.0, "amax": 2.0}
_ATEN_DEFAULT = 4.0


def aten_estimate(op: str, numel: int) -> float:
    """Estimated thread-instructions of one torch op's CUDA kernel (see above)."""
    return _ATEN_PER_ELEM.get(op.removeprefix("aten.").split(".")[0], _ATEN_DEFAULT) * numel


def per_element(archs: tuple[int, ...] = ARCHS, shapes: tuple[str, ...] | None = None,
                dtypes: tuple[str, ...] | None = None,
                passes: tuple[str, ...] = ALL_PASSES) -> list[dict]:
    """The --per-element rows (see the module docstring)."""
    rows = []
    for shape in shapes or tuple(PER_ELEMENT_SHAPES):
        B, Tq, Tk, H, _ = PER_ELEMENT_SHAPES[shape]
        n_elem = B * Tq * Tk * H  # computed (i, j, h) elements: every key used
        for dname in dtypes or tuple(DTYPES):
            for pass_ in passes:
                records, ops = capture_pass(shape, DTYPES[dname], pass_, with_sizes=True)
                for cc in archs:
                    kernels = [_kernel_figures(kn, g, a, m, cc) for kn, g, a, m in records]
                    regions = dict.fromkeys(REGIONS, 0.0)
                    uncertain = 0.0
                    for kk, (kn, g, a, m) in zip(kernels, records):
                        allin = kernel_all_in(kn, g, a, m, cc)
                        kr_ = {r: round(v / n_elem, 3) for r, v in allin["regions"].items()}
                        if kk["name"] in ("_weights_kernel",):  # not part of the score pass
                            kr_ = {"other_kernels": round(sum(kr_.values()), 3)}
                        kk["all_in_per_element"] = round(sum(kr_.values()), 3)
                        kk["regions_per_element"] = {r: v for r, v in kr_.items() if v}
                        for r, v in kr_.items():
                            regions[r] += v
                        uncertain += allin["uncertain"] / n_elem
                    aten = []
                    for op, numel in ops:
                        est = round(aten_estimate(op, numel) / n_elem, 3)
                        aten.append({"name": op, "numel": numel, "estimated": True,
                                     "all_in_per_element": est})
                        regions["other_kernels"] += est

                    def total(key: str, ks: list = kernels) -> float | None:
                        vals = [kk.get(key) for kk in ks if kk.get(key) is not None]
                        return round(sum(vals), 3) if vals else None

                    rows.append({
                        "shape": shape, "dtype": dname, "arch": f"sm_{cc}", "pass": pass_,
                        "kernels": kernels + aten,
                        "launches": len(kernels) + len(ops),
                        "instructions_per_element": round(sum(regions.values()), 3),
                        "regions": {r: round(v, 3) for r, v in regions.items()},
                        "uncertain_instructions_per_element": round(uncertain, 3),
                        "estimated_instructions_per_element":
                            round(sum(a_["all_in_per_element"] for a_ in aten), 3),
                        "element_loop_instructions_per_element":
                            total("instructions_per_element"),
                        "mufu_per_element": total("mufu_per_element"),
                        "fallback_instructions_per_element":
                            total("fallback_instructions_per_element"),
                        "tile_instructions_per_element": total("tile_instructions_per_element"),
                        "local_bytes_max": max(kk["local_bytes"] for kk in kernels),
                    })
    return rows


# ------------------------------------------------------------ whole-pass (all-in) counting
#
# Every SASS instruction a pass executes, per computed (i, j, h) element: the SASS is split
# into basic blocks (leaders: branch targets and the instructions after branches), loops are
# the back edges (a branch to a lower address: [target, branch]), and each block's execution
# count per program comes from the branch probabilities those loops imply. A loop's trip
# count comes from the kernel's source loop it compiles (LOOP_MODELS below, from the launch
# arguments and tile sizes), matched by nesting and address order (the SASS keeps the
# source's loop order; a mismatch raises, so a kernel edit that changes its loops must update
# its model); ptxas's unrolling is read from the loop's induction increment (the register its
# controlling ISETP compares, stepped by ``u * step``), and a loop unrolled u times runs
# trips // u times (a trip count that is not a multiple of u leaves the remainder code's
# branches unclassified: 1/2, reported in ``uncertain_instructions_per_element``).
# Branch rules, in order: a loop's controlling branch (its latch, or the exit of a rotated
# loop) runs its trip count; a forward branch over whole loops skips them iff they run 0
# times (zero-trip loops: the rational fallbacks on the fast path, which is what is counted:
# every |q|, |k| <= 43 and finite) or runs them with their model's entry probability (the
# split-K combine: one program in num_splits); a forward branch from an unrolled loop's
# remainder code skips when the trip count is a multiple of the unroll. Other conditional
# branches are counted at 1/2 and reported. Key lengths are taken as Tk (every key used).

_BRANCH = re.compile(r"0x([0-9a-f]+)")


class Loop(dict):
    """A source loop of a kernel: name, region, trips per entry, step (of its induction
    variable, in the units the SASS counts), children (loops inside it), entry probability."""

    def __init__(self, name: str, region: str, trips: int, step: int | None,
                 children: list | None = None, entry: float = 1.0) -> None:
        super().__init__(name=name, region=region, trips=int(trips), step=step,
                         children=children or [], entry=entry)


def _cdiv(a: int, b: int) -> int:
    return -(-max(int(a), 0) // int(b))


WSUM_BLOCK = 256  # the chunk of the kernels' _wsum(W, H, swh, 256) prologue loop


def _model_fwd(a: dict, m: dict, pid: tuple) -> list:
    Tq, Tk, H = a["Tq"], a["Tk"], a["H"]
    bm, bn, bh = m["BLOCK_M"], m["BLOCK_N"], m["BLOCK_H"]
    hi = Tk
    if m["CAUSAL"]:
        hi = min(hi, min((pid[0] + 1) * bm, Tq) + (Tk - Tq))
    lo = pid[2] * a["blocks_per_split"] * bn
    end = min(hi, lo + a["blocks_per_split"] * bn)
    ht = _cdiv(H, bh)
    rational = m["BLOCK_M"] == 1 or m["FAST_TANH"]
    inner = ([Loop("h_rational", "element", ht, bh)] if rational else
             [Loop("h_factorised", "element", ht, bh),
              Loop("h_rational_fallback", "element", 0, bh)])
    loops = [] if rational else [Loop("wsum", "prologue_epilogue", _cdiv(H, WSUM_BLOCK),
                                      WSUM_BLOCK)]
    loops.append(Loop("key_tiles", "tile", _cdiv(end - lo, bn), bn, inner))
    if m["SPLIT"]:  # the last split of a (query block, batch row) to finish combines
        splits = a["grid"][2]
        loops += [Loop("combine_max", "prologue_epilogue", splits - 1, 1, entry=1 / splits),
                  Loop("combine_sum", "prologue_epilogue", splits, 1, entry=1 / splits)]
    return loops


def _model_bwd_ds(a: dict, m: dict, pid: tuple) -> list:
    Tq, Tk, H = a["Tq"], a["Tk"], a["H"]
    bm, bn, bh = m["BLOCK_M"], m["BLOCK_N"], m["BLOCK_H"]
    first = 0
    if m["CAUSAL"]:
        first = max(pid[0] * bn - (Tk - Tq), 0) // bm * bm
    if pid[0] * bn >= Tk:
        first = Tq
    ht = _cdiv(H, bh)
    rational = bm == 1 or m["FAST_TANH"]
    inner = ([Loop("h_rational", "element", ht, bh)] if rational else
             [Loop("h_factorised", "element", ht, bh),
              Loop("h_rational_fallback", "element", 0, bh)])
    loops = [] if rational else [Loop("wsum", "prologue_epilogue", _cdiv(H, WSUM_BLOCK),
                                      WSUM_BLOCK)]
    return loops + [Loop("query_tiles", "tile", _cdiv(Tq - first, bm), bm, inner)]


def _model_bwd_dqdk(a: dict, m: dict, pid: tuple) -> list:
    Tq, Tk = a["Tq"], a["Tk"]
    bm, bn = m["BLOCK_M"], m["BLOCK_N"]
    # with CAUSAL the key range of a query block ends at its diagonal: average over blocks
    # is not a single trip count; the model is exact without CAUSAL (the report's passes).
    kt = _cdiv(Tk, bn)
    fast = bool(m["FAST_TANH"])
    qloops = [Loop("keys_rational", "element", kt if fast else 0, bn),
              Loop("keys_factorised", "element", 0 if fast else kt, bn)]
    return [Loop("k_check", "prologue_epilogue", kt, bn),
            Loop("query_blocks", "query_block", _cdiv(Tq, bm), bm, qloops),
            Loop("dk_zero_tail", "prologue_epilogue", _cdiv(Tk - kt * bn, bn), bn)]


def _model_scores_fwd(a: dict, m: dict, pid: tuple) -> list:
    """One (key block, query block, row) tile: the H-chunk loops of ``_scores`` if the tile
    starts before the block's key end, else none (it stores -inf)."""
    Tq, Tk, H = a["Tq"], a["Tk"], a["H"]
    bm, bn, bh = m["BLOCK_M"], m["BLOCK_N"], m["BLOCK_H"]
    hi = Tk
    if m["CAUSAL"]:
        hi = min(hi, min((pid[1] + 1) * bm, Tq) + (Tk - Tq))
    visited = pid[0] * bn < hi
    ht = _cdiv(H, bh) if visited else 0
    if bm == 1 or m["FAST_TANH"]:
        return [Loop("h_rational", "element", ht, bh)]
    return [Loop("wsum", "prologue_epilogue", _cdiv(H, WSUM_BLOCK) if visited else 0,
                 WSUM_BLOCK),
            Loop("h_factorised", "element", ht, bh),
            Loop("h_rational_fallback", "element", 0, bh)]


LOOP_MODELS: dict[str, Any] = {
    "_fwd_kernel": _model_fwd, "_bwd_ds_kernel": _model_bwd_ds,
    "_bwd_dqdk_kernel": _model_bwd_dqdk, "_weights_kernel": lambda a, m, pid: [],
    # the fused energies (SCORES_PASSES): the backward's second kernel is _bwd_dqdk_kernel
    "_scores_fwd_kernel": _model_scores_fwd, "_scores_ds_kernel": lambda a, m, pid: [],
}


def _is_jump(op: str) -> bool:
    """BRA, or CALL.REL.NOINC: a call that pushes no return address, which sm_80 code uses
    as a (predicated) jump, e.g. to leave a loop."""
    return op.startswith("BRA") or op.startswith("CALL.REL.NOINC")


def _blocks(instrs: list[tuple[int, str, str, str]]) -> list[dict[str, Any]]:
    """Basic blocks of the SASS (NOPs dropped): [{start, end, n, succ: [(addr, kind)],
    pred (guard of the terminating branch or '')}]; kind: 'fall', 'taken', 'jump'."""
    import bisect

    addrs = [i[0] for i in instrs]

    def resolve(t: int) -> int:  # a target on a dropped NOP: the next instruction
        return addrs[min(bisect.bisect_left(addrs, t), len(addrs) - 1)]

    leaders = {instrs[0][0]}
    for i, (addr, _pred, op, rest) in enumerate(instrs):
        if op.startswith(("BRA", "EXIT", "RET", "CALL", "BRX", "JMP", "JMX")):
            if op.startswith(("BRX", "JMX")):
                raise NotImplementedError(f"SASS {op} at {addr:#x}: indirect control flow")
            if _is_jump(op):
                leaders.add(resolve(int(_BRANCH.search(rest).group(1), 16)))  # type: ignore[union-attr]
            if i + 1 < len(instrs):
                leaders.add(instrs[i + 1][0])
    blocks: list[dict[str, Any]] = []
    for addr, pred, op, rest in instrs:
        if addr in leaders or not blocks:
            blocks.append({"start": addr, "end": addr, "n": 0, "succ": [], "term": None})
        blk = blocks[-1]
        blk["end"] = addr
        blk["n"] += 1
        blk["term"] = (addr, pred.strip(), op, rest)
    starts = [b["start"] for b in blocks]
    for i, blk in enumerate(blocks):
        addr, pred, op, rest = blk["term"]
        nxt = starts[i + 1] if i + 1 < len(blocks) else None
        if _is_jump(op):
            tgt = resolve(int(_BRANCH.search(rest).group(1), 16))  # type: ignore[union-attr]
            if tgt == addr and not pred:  # the trailing `BRA self` after the last EXIT
                continue
            blk["succ"].append((tgt, "taken" if pred else "jump"))
            if pred and nxt is not None:
                blk["succ"].append((nxt, "fall"))
        elif (op.startswith("EXIT") and not pred) or op.startswith("RET"):
            pass
        elif op.startswith("CALL"):
            # a call that returns (an out-of-line slow path): it comes back here; the
            # callee, reached only by calls, is counted 0 times
            blk["call"] = True
            if nxt is not None:
                blk["succ"].append((nxt, "fall"))
        elif op.startswith("EXIT"):  # some threads (or programs) leave: see block_counts
            blk["exit"] = True
            if nxt is not None:
                blk["succ"].append((nxt, "fall"))
        elif nxt is not None:
            blk["succ"].append((nxt, "fall"))
    return blocks


def _sass_loops(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Loops from back edges, one per header: {start, end, latches, children} as a tree."""
    spans: dict[int, int] = {}
    for blk in blocks:
        for tgt, _ in blk["succ"]:
            if tgt <= blk["end"]:
                spans[tgt] = max(spans.get(tgt, 0), blk["end"])
    loops = [{"start": s, "end": e, "children": []} for s, e in sorted(spans.items())]
    roots: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    for lp in loops:  # sorted by start; a loop inside another starts after it, ends before
        while stack and not (stack[-1]["start"] <= lp["start"] and lp["end"] <= stack[-1]["end"]):
            stack.pop()
        if stack and lp["end"] > stack[-1]["end"]:
            raise ValueError(f"SASS loops overlap without nesting at {lp['start']:#x}")
        (stack[-1]["children"] if stack else roots).append(lp)
        stack.append(lp)
    return roots


def _match(sass: list, model: list, where: str) -> list[tuple[dict, dict]]:
    """Pair the SASS loops with the model's, level by level in address order. A childless
    SASS loop right after a childless one, where the SASS has more loops than the model, is
    ptxas's remainder loop of an unrolled loop (it runs trips % unroll times)."""
    try:
        return _match_level(sass, model, where)
    except ValueError:
        if not any(lp["trips"] <= 1 and lp["children"] for lp in model):
            raise
    # a loop of at most one trip known at compile time (Tq = 1 is a constexpr) has no back
    # edge: its body, and its loops, are straight code at this level
    flat = []
    for lp in model:
        flat += lp["children"] if lp["trips"] <= 1 and lp["children"] else [lp]
    return _match_level(sass, flat, where)


def _match_level(sass: list, model: list, where: str) -> list[tuple[dict, dict]]:
    out: list[tuple[dict, dict]] = []
    extra = len(sass) - len(model)
    j = 0
    prev_rem = False
    for i, s in enumerate(sass):
        if (extra > 0 and i > 0 and out and not s["children"] and not sass[i - 1]["children"]
                and j > 0 and not model[j - 1]["children"] and not prev_rem
                and (j >= len(model) or len(sass) - i > len(model) - j)):
            prev = model[j - 1]
            out.append((s, dict(prev, name=prev["name"] + "_remainder", remainder_of=prev)))
            extra -= 1
            prev_rem = True  # (a remainder loop follows its unrolled loop, never another)
            continue
        prev_rem = False
        if j >= len(model):
            break
        out.append((s, model[j]))
        out += _match(s["children"], model[j]["children"], f"{where}/{model[j]['name']}")
        j += 1
    if extra != 0 or j != len(model):
        raise ValueError(f"{where}: the SASS has {len(sass)} loops here "
                         f"({[hex(s['start']) for s in sass]}), the loop model "
                         f"{[lp['name'] for lp in model]}: update LOOP_MODELS")
    return out


_SETP = re.compile(r"^\s*(U?P\d|UPT|PT)\s*,\s*(U?P\d|UPT|PT)\s*,\s*(U?R\d+|URZ|RZ)")


def _unroll(instrs: list, lp: dict, ctrl: tuple[int, str], step: int | None) -> int:
    """ptxas's unroll factor of a loop: its controlling predicate's ISETP compares a
    register stepped by a constant in the loop; that constant / the source step."""
    if not step:
        return 1
    addr, pred = ctrl
    preg = pred.lstrip("@!")
    body = [i for i in instrs if lp["start"] <= i[0] <= lp["end"]]
    reg = None
    for _a, _, op, rest in reversed([i for i in body if i[0] < addr]):
        if op.startswith(("ISETP", "UISETP")):
            mm = _SETP.match(rest)
            if mm and preg in (mm.group(1), mm.group(2)):
                reg = mm.group(3)
                break
    if reg is None:
        return 1
    inc = re.compile(rf"^\s*{reg}\s*,\s*(?:U?P\d\s*,\s*)?{reg}\s*,\s*(-?0x[0-9a-f]+)")
    for _, _, op, rest in body:
        if op.startswith(("IADD3", "UIADD3", "VIADD", "IMAD.IADD")):
            mm = inc.match(rest)
            if mm:
                c = int(mm.group(1), 16)
                if c < 0:  # a down-counter of the iterations left
                    return -c
                if c % step == 0:
                    return c // step
    return 1


def block_counts(instrs: list, blocks: list, model: list, where: str) -> tuple:
    """Execution count per block for one program, and the instructions left to unclassified
    branches (counted at 1/2): (counts, blocks' loop, uncertain instructions)."""
    import numpy as np

    roots = _sass_loops(blocks)
    pairs = _match(roots, model, where)
    idx = {b["start"]: i for i, b in enumerate(blocks)}
    nb = len(blocks)

    def inside(lp: dict, addr: int) -> bool:
        return lp["start"] <= addr <= lp["end"]

    owner: list[tuple[dict, dict] | None] = []  # innermost loop of each block
    for blk in blocks:
        inn = None
        for s, lm in pairs:
            if inside(s, blk["start"]) and (inn is None or s["start"] >= inn[0]["start"]):
                inn = (s, lm)
        owner.append(inn)
    # per loop: its controlling branch, unroll, body runs per entry, remainder region
    info: dict[int, dict[str, Any]] = {}
    for s, lm in pairs:
        latch = [b for b in blocks if inside(s, b["end"]) and
                 any(t == s["start"] for t, _ in b["succ"]) and b["end"] == s["end"]]
        cond_latch = bool(latch and latch[0]["term"][1])
        exits = [b for b in blocks if inside(s, b["end"]) and b["term"][1] and
                 any(not inside(s, t) for t, k in b["succ"] if k == "taken")
                 and owner[idx[b["start"]]] is not None
                 and owner[idx[b["start"]]][0] is s]  # type: ignore[index]
        ctrl_blk = latch[0] if cond_latch else (exits[-1] if exits else None)
        # ptxas unrolls small innermost loops only (a loop holding loops: never)
        u = (_unroll(instrs, s, (ctrl_blk["term"][0], ctrl_blk["term"][1]), lm["step"])
             if ctrl_blk is not None and not s["children"] else 1)
        if u & (u - 1) or u > 16:
            raise ValueError(f"{where}/{lm['name']}: unroll {u} read from the SASS")
        if "remainder_of" in lm:  # runs what its unrolled sibling (matched before) left
            main = next(d for d in info.values() if d["model"] is lm["remainder_of"])
            u, runs, rem = 1, main["rem"], 0
        else:
            runs, rem = lm["trips"] // u, lm["trips"] % u
        info[s["start"]] = dict(loop=s, model=lm, cond_latch=cond_latch, unroll=u, runs=runs,
                                rem=rem, exits={b["start"] for b in exits})
    # an unrolled loop's remainder: from its end to the first join of the branches before it
    remainders = []
    for d in info.values():
        if d["unroll"] > 1:
            s = d["loop"]
            prev = max([e["loop"]["end"] for e in info.values()
                        if e["loop"]["end"] < s["start"]], default=-1)
            joins = [t for b in blocks if prev < b["end"] < s["start"] for t, k in b["succ"]
                     if k == "taken" and t > s["end"]]
            if joins:
                d["join"] = max(joins)
                remainders.append((s["end"], max(joins), d["rem"], d["unroll"]))
    # The remainder code of a loop unrolled u = 2^m times (straight code, when ptxas makes
    # no remainder loop): m forward branches, each skipping a chunk of u/2, u/4, ..., 1
    # iterations (taken where that bit of trips % u is 0); branches nested in a chunk (the
    # tail's masked loads) fall through.
    rem_p: dict[int, float | None] = {}
    for r0, r1, rem, u in remainders:
        top: list[tuple[int, int]] = []
        for b in blocks:
            if r0 < b["end"] < r1 and len(b["succ"]) == 2 and b["succ"][0][0] > b["end"]:
                a_, t_ = b["end"], b["succ"][0][0]
                if top and top[-1][0] < a_ < top[-1][1]:
                    rem_p[a_] = 0.0
                else:
                    top.append((a_, t_))
        m = u.bit_length() - 1
        for k, (a_, _) in enumerate(top):
            rem_p[a_] = (None if len(top) != m or 1 << m != u
                         else float(not (rem >> (m - 1 - k)) & 1))
    uncertain: list[int] = []
    P = np.zeros((nb, nb))
    entry_used: set[int] = set()
    for i, blk in enumerate(blocks):
        succ = blk["succ"]
        if blk.get("exit") and succ:
            # A predicated EXIT: the threads leave or stay together, except before code a
            # fraction of the programs runs (the split-K combine): those leave at 1 - entry.
            later = [d for d in info.values() if d["loop"]["start"] > blk["end"]
                     and d["model"]["entry"] < 1 and id(d["model"]) not in entry_used]
            stay = min([d["model"]["entry"] for d in later], default=1.0)
            entry_used.update(id(d["model"]) for d in later)
            P[i, idx[succ[0][0]]] += stay
            continue
        if len(succ) == 1:
            P[i, idx[succ[0][0]]] += 1.0
            continue
        if not succ:
            continue
        (tgt, _), (fall, _) = succ
        addr = blk["end"]
        p = None
        own = owner[i]
        if tgt <= addr and tgt in info:  # latch
            d = info[tgt]
            p = 1 - 1 / d["runs"] if d["runs"] >= 1 else 0.0
        elif own is not None and blk["start"] in info[own[0]["start"]]["exits"] \
                and not inside(own[0], tgt):
            d = info[own[0]["start"]]
            p = 0.0 if d["cond_latch"] else (1 / d["runs"] if d["runs"] >= 1 else 1.0)
        else:
            over = [info[s["start"]] for s, _ in pairs
                    if addr < s["start"] and s["end"] < tgt]
            over = [d for d in over if not any(
                e["loop"]["start"] < d["loop"]["start"] and d["loop"]["end"] < e["loop"]["end"]
                for e in over)]
            if over:
                # a branch to past an unrolled loop's remainder skips the remainder too
                if all(d["runs"] == 0 and not (d["rem"] and tgt >= d.get("join", tgt + 1))
                       for d in over):
                    p = 1.0
                else:
                    fresh = [d["model"]["entry"] for d in over
                             if id(d["model"]) not in entry_used]
                    entry_used.update(id(d["model"]) for d in over)
                    p = 1 - min(fresh, default=1.0)
            elif addr in rem_p:
                p = rem_p[addr]
        if p is None:
            p = 0.5
            uncertain.append(i)
            if os.environ.get("KERNEL_REPORT_DEBUG"):
                print(f"{where}: unclassified branch at {addr:#x}", file=sys.stderr)
        P[i, idx[tgt]] += p
        P[i, idx[fall]] += 1 - p
    # code no path from the entry reaches (a called slow path, the trailing `BRA self`)
    # runs 0 times; dropping its edges keeps the system regular
    seen, todo = {0}, [0]
    while todo:
        for tgt, _ in blocks[todo.pop()]["succ"]:
            if idx[tgt] not in seen:
                seen.add(idx[tgt])
                todo.append(idx[tgt])
    for i in range(nb):
        if i not in seen:
            P[i, :] = 0.0
    e = np.zeros(nb)
    e[0] = 1.0
    counts = np.linalg.solve(np.eye(nb) - P.T, e)
    counts = np.maximum(counts, 0.0)
    unc = 0.0
    for i in uncertain:  # half of the instructions the branch may skip (or repeat)
        lo_, hi_ = sorted((blocks[i]["end"], blocks[idx[blocks[i]["succ"][0][0]]]["start"]))
        unc += 0.5 * counts[i] * sum(b["n"] for b in blocks if lo_ < b["start"] < hi_)
    return counts, owner, unc


_SASS_CACHE: dict[str, tuple] = {}


def _parsed(info: dict) -> tuple:
    """(instructions without NOPs as (addr, guard, op, operands), basic blocks)."""
    key = info["sass"]
    if key not in _SASS_CACHE:
        instrs = []
        for line in info["sass"].splitlines():
            mm = _INSTR.search(line)
            if mm and mm.group(3) != "NOP":
                instrs.append((int(mm.group(1), 16), mm.group(2) or "", mm.group(3),
                               mm.group(4)))
        _SASS_CACHE[key] = (instrs, _blocks(instrs))
    return _SASS_CACHE[key]


REGIONS = ("element", "tile", "query_block", "prologue_epilogue", "other_kernels")


def kernel_all_in(kernel: Any, grid: Any, args: tuple, meta: dict, cc: int) -> dict:
    """Thread-instructions one launch executes, by region (REGIONS), over its programs."""
    import itertools

    name = kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__
    info = compile_one(kernel, args, meta, cc)
    instrs, blocks = _parsed(info)
    a = {n: args[i] for i, n in enumerate(kernel.arg_names) if i < len(args)}
    a["grid"] = tuple(grid)
    threads = 32 * meta.get("num_warps", 4)
    model = LOOP_MODELS[name]
    kmeta = {k: v for k, v in meta.items()}
    by_trips: dict[str, list] = {}
    for pid in itertools.product(*(range(g) for g in grid)):
        loops = model(a, kmeta, pid)
        by_trips.setdefault(json.dumps(loops, sort_keys=True), [pid, 0])[1] += 1
    regions = dict.fromkeys(REGIONS, 0.0)
    uncertain = 0.0
    for pid, n_progs in by_trips.values():
        counts, owner, unc = block_counts(instrs, blocks, model(a, kmeta, pid), name)
        for c, blk, own in zip(counts, blocks, owner):
            reg = own[1]["region"] if own is not None else "prologue_epilogue"
            regions[reg] += c * blk["n"] * threads * n_progs
        uncertain += unc * threads * n_progs
    return {"name": name, "regions": regions, "uncertain": uncertain,
            "programs": int(sum(v[1] for v in by_trips.values())), "threads": threads}


def format_per_element(rows: list[dict]) -> str:
    lines = ["| shape | dtype | arch | pass | launches | all-in SASS/elem | element loop | "
             "tile loop | query-block loop | prologue/epilogue | other kernels | "
             "MUFU/elem (loop) | spill B |", "|" + "---|" * 13]
    for r in rows:
        g = r["regions"]
        other = f"{g['other_kernels']}" + (" (est.)" if r["estimated_instructions_per_element"]
                                          else "")
        lines.append("| " + " | ".join(str(x) for x in (
            r["shape"], r["dtype"], r["arch"], r["pass"], r["launches"],
            r["instructions_per_element"], g["element"], g["tile"], g["query_block"],
            g["prologue_epilogue"], other, r["mufu_per_element"],
            r["local_bytes_max"])) + " |")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    head = ("kernel", "arch", "regs", "spill B", "smem B", "SASS", "MUFU", "loop MUFU/elem")
    lines = [head]
    for r in rows:
        lpe = "" if r["loop_mufu_per_elem"] is None else \
            f"{r['loop_mufu_per_elem']} ({r['loop_elems']} el/thr)"
        lines.append((r["kernel"], r["arch"], str(r["registers"]), str(r["local_bytes"]),
                      str(r["shared_bytes"]), str(r["sass_instructions"]), str(r["mufu"]), lpe))
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [fmt(x) for x in lines[1:]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ap.add_argument("--arch", type=int, action="append", choices=ARCHS,
                    help="compute capability (default: 80 and 90)")
    ap.add_argument("--sass", metavar="KERNEL",
                    help="also print the SASS of the innermost loop of KERNEL (sm_90)")
    ap.add_argument("--per-element", action="store_true",
                    help="per-(shape, dtype, arch, pass) SASS and MUFU per (i, j, h) element")
    ap.add_argument("--shape", action="append", choices=tuple(PER_ELEMENT_SHAPES),
                    help="with --per-element: only these shapes")
    ap.add_argument("--dtype", action="append", choices=tuple(DTYPES),
                    help="with --per-element: only these dtypes")
    args = ap.parse_args(argv)
    if args.per_element:
        prow = per_element(tuple(args.arch or ARCHS), tuple(args.shape or ()) or None,
                           tuple(args.dtype or ()) or None)
        print(json.dumps(prow, indent=1) if args.json else format_per_element(prow))
        return 0
    rows = compile_all(tuple(args.arch or ARCHS), keep_sass=bool(args.sass))
    if args.sass:
        for r in rows:
            if r["kernel"] == args.sass and r["arch"] == "sm_90":
                print("innermost loop:", " ".join(r["loop_ops"]))
        rows = [{k: r[k] for k in KEYS} for r in rows]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    spills = [f"{r['kernel']}@{r['arch']}" for r in rows if r["local_bytes"]]
    if spills:
        print("SPILLS:", ", ".join(spills), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
