"""Compile every Triton kernel of attnkern for sm_80 and sm_90 without a GPU and report
what the hardware would run: registers/thread, local (spill) bytes, shared memory, SASS
instruction count and MUFU count.

    python bench/kernel_report.py          # table
    python bench/kernel_report.py --json   # [{"kernel", "arch", "registers", "local_bytes",
                                           #   "shared_bytes", "sass_instructions", "mufu",
                                           #   "loop_mufu_per_elem", "loop_elems"}, ...]
    python bench/kernel_report.py --per-element [--json] [--shape LONG] [--dtype float32]

``--per-element``: one row per (shape in TRAIN/LONG/MEM/DECODE, bench/shapes.py's, with
key_lengths) x (dtype float32/bfloat16) x (arch) x (pass forward/backward):
``{"shape", "dtype", "arch", "pass", "kernels", "launches", "instructions_per_element",
"mufu_per_element", "local_bytes_max", ...}``. The element loop of a kernel is the innermost
SASS loop (a backward branch's target to the branch) holding at least half a MUFU op per
(i, j, h) element its thread handles per iteration (``BLOCK_M*BLOCK_N*BLOCK_H / threads``);
where a kernel has two (the factorised loop and the rational fallback's), the shorter is the
one that runs (the fallback runs only for tiles with |q| or |k| > 43, NaN or Inf) and the
other is reported as ``fallback_instructions_per_element``. Per-element figures are a loop's
instructions (MUFU ops) over its elements, summed over the pass's kernels (each visits every
element once). ``tile_instructions_per_element``: what the enclosing key-tile loop adds
(softmax, P@V, masks) per element, for kernels whose element loop is an H-chunk loop.
``launches`` counts the Triton launches and the torch ops the launcher runs (e.g. the
dweight sum).

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
# aten ops that launch nothing (allocation, metadata)
_NO_LAUNCH = ("empty", "view", "as_strided", "alias", "detach", "lift_fresh", "t.",
              "transpose", "expand", "select", "slice", "unsqueeze", "squeeze", "permute")


def capture_pass(shape: str, dtype: torch.dtype, pass_: str) -> tuple[list, list[str]]:
    """The Triton launches and the launching torch ops of one pass at one bench shape."""
    from torch.utils._python_dispatch import TorchDispatchMode

    B, Tq, Tk, H, Dv = PER_ELEMENT_SHAPES[shape]
    records: list[tuple[Any, Any, tuple, dict]] = []
    ops: list[str] = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") \
                else str(func)
            if not any(name.startswith(x.rstrip(".")) for x in _NO_LAUNCH):
                ops.append(f"aten.{name}")
            return func(*args, **(kwargs or {}))

    def record(kernel: Any, grid: Any, *args: Any, **meta: Any) -> None:
        records.append((kernel, grid, args, meta))

    q, k, v, w = _meta_inputs(B, Tq, Tk, H, Dv, dtype)
    lens = torch.empty(B, dtype=torch.int64, device="meta")
    lse = torch.empty(B, Tq, device="meta")
    go = torch.empty(B, Tq, Dv, dtype=dtype, device="meta")
    saved = tk._launch
    tk._launch = record  # type: ignore[assignment]
    try:
        # The second call is the steady state: its plan and split-K counters are cached.
        for capture in (False, True):
            records.clear()
            with Ops() if capture else contextlib.nullcontext():
                if pass_ == "forward":
                    tk.fwd(q, k, v, w, None, lens, False, False)
                else:
                    tk.bwd(go, None, q, k, v, w, lse, lse, None, lens, False)
    finally:
        tk._launch = saved  # type: ignore[assignment]
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


def per_element(archs: tuple[int, ...] = ARCHS, shapes: tuple[str, ...] | None = None,
                dtypes: tuple[str, ...] | None = None,
                passes: tuple[str, ...] = PASSES) -> list[dict]:
    """The --per-element rows (see the module docstring)."""
    rows = []
    for shape in shapes or tuple(PER_ELEMENT_SHAPES):
        for dname in dtypes or tuple(DTYPES):
            for pass_ in passes:
                records, ops = capture_pass(shape, DTYPES[dname], pass_)
                for cc in archs:
                    kernels = [_kernel_figures(kn, g, a, m, cc) for kn, g, a, m in records]

                    def total(key: str, ks: list = kernels) -> float | None:
                        vals = [kk.get(key) for kk in ks if kk.get(key) is not None]
                        return round(sum(vals), 3) if vals else None

                    rows.append({
                        "shape": shape, "dtype": dname, "arch": f"sm_{cc}", "pass": pass_,
                        "kernels": kernels + [{"name": op} for op in ops],
                        "launches": len(kernels) + len(ops),
                        "instructions_per_element": total("instructions_per_element"),
                        "mufu_per_element": total("mufu_per_element"),
                        "fallback_instructions_per_element":
                            total("fallback_instructions_per_element"),
                        "tile_instructions_per_element": total("tile_instructions_per_element"),
                        "local_bytes_max": max(kk["local_bytes"] for kk in kernels),
                    })
    return rows


def format_per_element(rows: list[dict]) -> str:
    lines = ["| shape | dtype | arch | pass | launches | SASS/elem | MUFU/elem | fallback "
             "SASS/elem | tile SASS/elem | spill B |", "|" + "---|" * 10]
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in (
            r["shape"], r["dtype"], r["arch"], r["pass"], r["launches"],
            r["instructions_per_element"], r["mufu_per_element"],
            r["fallback_instructions_per_element"], r["tile_instructions_per_element"],
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
