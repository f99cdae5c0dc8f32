"""Compile every Triton kernel of attnkern for sm_80 and sm_90 without a GPU and report
what the hardware would run: registers/thread, local (spill) bytes, shared memory, SASS
instruction count and MUFU count.

    python bench/kernel_report.py          # table
    python bench/kernel_report.py --json   # [{"kernel", "arch", "registers", "local_bytes",
                                           #   "shared_bytes", "sass_instructions", "mufu",
                                           #   "loop_mufu_per_elem", "loop_elems"}, ...]

The kernels are compiled exactly as the launchers in attnkern/triton_kernels.py would launch
them (same configs, same constexprs): the launchers run on ``meta`` tensors with the launch
call intercepted, and each intercepted launch is compiled ahead of time with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``. ptxas and cuobjdump
come from the Triton wheel (triton/backends/nvidia/bin).

``loop_mufu_per_elem``: MUFU instructions in the innermost loop of the SASS divided by the
(i, j, h) elements one thread handles per iteration of it (the H-chunk loop of the score
tile, ``BLOCK_M*BLOCK_N*BLOCK_H / (32*num_warps)``); blank for kernels without that loop.
"""

from __future__ import annotations

import argparse
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

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from attnkern import triton_kernels as tk  # noqa: E402

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
        "sass": sass,
    }


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
        sig, constexprs, attrs = _signature(kernel, args, kmeta)
        src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
        bm, bn, bh = (kmeta.get(x) for x in ("BLOCK_M", "BLOCK_N", "BLOCK_H"))
        for cc in archs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                          options=dict(options))
            info = inspect_cubin(compiled.asm["cubin"])
            loop = info.pop("loop")
            sass = info.pop("sass")
            row: dict[str, Any] = {"kernel": name, "arch": f"sm_{cc}"}
            row.update(info)
            row["shared_bytes"] = int(compiled.metadata.shared) + row.pop("static_shared")
            # Per-thread (i,j,h) elements per iteration of the H-chunk loop, if it has one.
            loop_mufu = sum(op.startswith("MUFU") for _, op, _ in loop)
            if bh is not None and loop_mufu:
                elems = bm * bn * bh // (32 * options.get("num_warps", 4))
                row["loop_elems"] = elems
                row["loop_mufu_per_elem"] = round(loop_mufu / elems, 3)
            else:
                row["loop_elems"] = None
                row["loop_mufu_per_elem"] = None
            if keep_sass:
                row["sass"] = sass
                row["loop_ops"] = [op for _, op, _ in loop]
            rows.append({k: row[k] for k in KEYS} | ({"sass": row["sass"],
                        "loop_ops": row["loop_ops"]} if keep_sass else {}))
    return rows


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
    args = ap.parse_args(argv)
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
