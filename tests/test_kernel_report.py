"""AOT-compile every Triton kernel for sm_80 and sm_90 (no GPU needed) and check the report.

Needs the ptxas and cuobjdump that the Triton wheel bundles; if they are missing the test
fails (it never skips silently: the CI gate would then prove nothing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os

import pytest

from attnkern import ops

REPORT = os.path.join(os.path.dirname(__file__), "..", "bench", "kernel_report.py")
KEYS = {"kernel", "arch", "registers", "local_bytes", "shared_bytes", "sass_instructions",
        "mufu"}


@pytest.fixture(scope="module")
def kr():
    """bench/kernel_report.py, loaded once: its compile cache is shared by the tests."""
    if not ops.HAS_TRITON:
        pytest.fail("Triton is not installed: the kernel report cannot be checked")
    spec = importlib.util.spec_from_file_location("kernel_report", REPORT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for tool in ("ptxas", "cuobjdump"):
        mod.nvidia_bin(tool)  # raises FileNotFoundError, naming the path, if absent
    return mod


@pytest.fixture(scope="module")
def rows(kr):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert kr.main(["--json"]) == 0
    return json.loads(buf.getvalue())


def test_json_has_the_keys_and_both_archs(rows):
    assert rows and all(KEYS <= set(r) for r in rows)
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90"}
    for arch in ("sm_80", "sm_90"):
        names = [r["kernel"] for r in rows if r["arch"] == arch]
        assert any(n.startswith("fwd") for n in names)
        assert any(n.startswith("bwd_ds") for n in names)
        assert any(n.startswith("bwd_dqdk") for n in names)
        assert any(n.startswith("weights") for n in names)
        # the fused energies (additive_scores): forward, and backward's two kernels
        for tag in ("scores-train", "scores-step"):
            assert f"scores_fwd[{tag}]" in names and f"scores_ds[{tag}]" in names, names
            assert f"bwd_dqdk[{tag}]" in names, names
    for r in rows:
        assert r["registers"] > 0 and r["sass_instructions"] > 0 and r["shared_bytes"] >= 0


def test_no_spills(rows):
    spills = [(r["kernel"], r["arch"], r["local_bytes"]) for r in rows if r["local_bytes"]]
    assert not spills, f"register spills (local memory bytes): {spills}"


def test_one_mufu_per_element_in_every_element_loop(rows):
    loops = [r for r in rows if r["kernel"].startswith(("fwd", "bwd", "scores_fwd"))]
    assert loops
    for r in loops:
        assert r["loop_mufu_per_elem"] is not None, r
        assert r["loop_mufu_per_elem"] <= 1.0, r


# ----------------------------------------------------------- --per-element static goals

# Issue 13's static goals at sm_90: SASS instructions and MUFU ops per (i, j, h) element in
# the element loops, summed over a pass's kernels.
GOALS = {"forward": (6.0, 1.05), "backward": (20.0, 2.05)}
PE_KEYS = {"shape", "dtype", "arch", "pass", "kernels", "launches",
           "instructions_per_element", "mufu_per_element", "local_bytes_max", "regions",
           "element_loop_instructions_per_element", "uncertain_instructions_per_element",
           "estimated_instructions_per_element"}


@pytest.fixture(scope="module")
def per_element(kr):
    return kr.per_element(archs=(90,))


def test_per_element_rows_cover_every_shape_dtype_and_pass(per_element):
    assert all(PE_KEYS <= set(r) for r in per_element)
    assert {(r["shape"], r["dtype"], r["pass"]) for r in per_element} == {
        (s, d, p) for s in ("TRAIN", "LONG", "MEM", "DECODE") for d in ("float32", "bfloat16")
        for p in ("forward", "backward", "scores_forward", "scores_backward")}


@pytest.mark.parametrize("shape", ["TRAIN", "LONG", "MEM"])
def test_static_goals_at_sm90(per_element, shape):
    for r in (r for r in per_element if r["shape"] == shape and r["pass"] in GOALS):
        ipe, mpe = GOALS[r["pass"]]
        where = f"{shape} {r['dtype']} {r['pass']}: {r}"
        assert r["element_loop_instructions_per_element"] <= ipe, where
        assert r["mufu_per_element"] <= mpe, where
        assert r["local_bytes_max"] == 0, where


# Issue 22's all-in goals at sm_90: every instruction of the pass per computed element.
ALL_IN_GOALS = {"forward": 6.0, "backward": 16.0}
# Rows that miss them today (docs/results.md has the table): strict, so a kernel change
# that meets one fails here until the entry is removed.
ALL_IN_MISSED = {("TRAIN", "float32", "forward"), ("TRAIN", "bfloat16", "forward"),
                 ("TRAIN", "float32", "backward"), ("TRAIN", "bfloat16", "backward"),
                 ("LONG", "float32", "backward")}


@pytest.mark.parametrize("case", [(s, d, p) for s in ("TRAIN", "LONG", "MEM")
                                  for d in ("float32", "bfloat16")
                                  for p in ("forward", "backward")])
def test_all_in_goals_at_sm90(per_element, case, request):
    if case in ALL_IN_MISSED:
        request.applymarker(pytest.mark.xfail(strict=True, reason="all-in goal not met yet"))
    (r,) = [r for r in per_element if (r["shape"], r["dtype"], r["pass"]) == case]
    assert r["instructions_per_element"] <= ALL_IN_GOALS[case[2]], r["regions"]


def test_all_in_count_is_consistent(per_element):
    for r in (r for r in per_element if r["pass"] in ("forward", "backward")):
        g = r["regions"]
        assert set(g) == {"element", "tile", "query_block", "prologue_epilogue",
                          "other_kernels"}
        assert abs(sum(g.values()) - r["instructions_per_element"]) < 0.01, r
        # the element-loop region is the old element-loop figure, the rest comes on top
        # (at DECODE the old heuristic, the shortest MUFU-dense loop, picks e.g. the split-K
        # combine's exp loop, which the all-in count places in the prologue/epilogue)
        if r["shape"] != "DECODE":
            assert abs(g["element"] - r["element_loop_instructions_per_element"]) < 0.01, r
        assert g["prologue_epilogue"] > 0 and r["local_bytes_max"] == 0
        if r["shape"] != "DECODE":
            assert g["tile"] > 0, r
            # every branch classified, but the split-K combine's peeled loop (0.002)
            assert r["uncertain_instructions_per_element"] <= 0.005, r
        if r["pass"] == "backward":  # the delta pre-pass and the dweight sum: torch ops
            names = [k["name"] for k in r["kernels"]]
            assert "aten.mul" in names and "aten.sum" in names, names
            assert g["other_kernels"] > 0, r
            # (Tq = 1 is a constexpr: a decode step's query-block loop is straight code)
            assert g["query_block"] > 0 or r["shape"] == "DECODE", r


# The fused energies (issue 22: additive_scores's kernels, counted all-in as the attention's
# passes). No goals of their own: bounds a little above today's sm_90 figures (forward
# 4.65-5.13, backward 9.08-9.80 at TRAIN/LONG/MEM, docs/results.md), so that a change that
# makes them worse fails here; and what must hold: one MUFU op per element in each pass (the
# backward recomputes tanh once, in pass 2), no spills, every branch classified, and the
# backward well under the attention's (no softmax, no dv).
SCORES_BOUNDS = {"scores_forward": 5.5, "scores_backward": 10.2}


@pytest.mark.parametrize("shape", ["TRAIN", "LONG", "MEM", "DECODE"])
def test_scores_passes_are_counted_all_in(per_element, shape):
    rows = {(r["dtype"], r["pass"]): r for r in per_element if r["shape"] == shape}
    for dtype in ("float32", "bfloat16"):
        fwd, bwd = rows[dtype, "scores_forward"], rows[dtype, "scores_backward"]
        assert [k["name"] for k in fwd["kernels"]] == ["_scores_fwd_kernel"], fwd
        names = [k["name"] for k in bwd["kernels"]]
        assert names[:3] == ["_scores_ds_kernel", "_bwd_dqdk_kernel", "aten.sum"], names
        assert fwd["launches"] == 1 and bwd["launches"] == len(names)
        for r in (fwd, bwd):
            g = r["regions"]
            where = f"{shape} {dtype} {r['pass']}: {r}"
            assert abs(sum(g.values()) - r["instructions_per_element"]) < 0.01, where
            assert g["element"] > 0 and g["prologue_epilogue"] > 0, where
            assert g["tile"] == 0, where  # one tile per program: no tile loop
            assert r["mufu_per_element"] == 1.0, where
            assert r["local_bytes_max"] == 0, where
            assert r["uncertain_instructions_per_element"] == 0, where
            if shape != "DECODE":
                assert r["instructions_per_element"] <= SCORES_BOUNDS[r["pass"]], where
                assert abs(g["element"] - r["element_loop_instructions_per_element"]) < 0.01
        assert bwd["regions"]["query_block"] > 0 or shape == "DECODE", bwd
        attn_bwd = rows[dtype, "backward"]
        assert bwd["instructions_per_element"] < attn_bwd["instructions_per_element"]


_SASS = """
        /*0000*/                   MOV R1, RZ ;
        /*0010*/                   ISETP.GE.AND P0, PT, R1, UR4, PT ;
        /*0020*/               @P0 BRA 0x80 ;
        /*0030*/                   FADD R2, R2, R3 ;
        /*0040*/                   IADD3 R1, R1, 0x20, RZ ;
        /*0050*/                   ISETP.LT.AND P1, PT, R1, UR4, PT ;
        /*0060*/               @P1 BRA 0x30 ;
        /*0070*/                   FADD R2, R2, R2 ;
        /*0080*/               @P2 BRA 0xc0 ;
        /*0090*/                   FMUL R4, R4, R4 ;
        /*00a0*/               @P3 BRA 0x90 ;
        /*00b0*/                   FMUL R4, R4, R4 ;
        /*00c0*/                   EXIT ;
        /*00d0*/                   BRA 0xd0 ;
"""


@pytest.mark.parametrize("trips", [32, 8, 4])
def test_block_counts_on_a_known_cfg(kr, trips):
    """A loop of `trips` source iterations of step 8, unrolled 4 times by ptxas (its
    counter steps by 0x20), runs trips / 4 times; the zero-trip fallback loop is skipped."""
    instrs = kr._parsed({"sass": _SASS})[0]
    blocks = kr._blocks(instrs)
    model = [kr.Loop("a", "element", trips, 8), kr.Loop("fallback", "element", 0, 8)]
    counts, owner, unc = kr.block_counts(instrs, blocks, model, "synthetic")
    per = {b["start"]: round(float(c), 6) for b, c in zip(blocks, counts)}
    assert per == {0x0: 1, 0x30: trips // 4, 0x70: 1, 0x80: 1, 0x90: 0, 0xb0: 0, 0xc0: 1,
                   0xd0: 0}
    assert unc == 0
    assert [o[1]["name"] if o else None for o in owner] == [None, "a", None, None,
                                                             "fallback", None, None, None]


def test_loop_model_mismatch_raises(kr):
    instrs = kr._parsed({"sass": _SASS})[0]
    with pytest.raises(ValueError, match="update LOOP_MODELS"):
        kr.block_counts(instrs, kr._blocks(instrs), [kr.Loop(n, "element", 8, 8)
                                                     for n in "abc"], "x")


def test_decode_is_one_launch_without_spills(per_element):
    rows = [r for r in per_element if r["shape"] == "DECODE"]
    assert len(rows) == 8
    for r in rows:
        assert r["local_bytes_max"] == 0, r
        if r["pass"] in ("forward", "scores_forward"):
            assert r["launches"] == 1, r  # split-K combine inside the forward kernel


def test_per_element_cli_prints_json(kr):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert kr.main(["--per-element", "--json", "--arch", "90", "--shape", "DECODE",
                        "--dtype", "bfloat16"]) == 0
    out = json.loads(buf.getvalue())
    assert [(r["pass"], r["arch"]) for r in out] == [
        ("forward", "sm_90"), ("backward", "sm_90"), ("scores_forward", "sm_90"),
        ("scores_backward", "sm_90")]


# ------------------------------------------- bench/gpu_check.sh and its summary (no GPU)

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_gpu_check_dry_run_lists_the_steps(tmp_path):
    import subprocess

    script = os.path.join(ROOT, "bench", "gpu_check.sh")
    subprocess.run(["bash", "-n", script], check=True)
    out = subprocess.run(["bash", script, "--dry-run", str(tmp_path)], check=True,
                         capture_output=True, text=True).stdout
    assert "tests/test_triton.py" in out and "bench/gpu.py --quick" in out
    assert "--shapes TRAIN,LONG,MEM,DECODE" in out and "gpu_summary.py" in out


def test_gpu_summary_checks_the_speed_goals():
    spec = importlib.util.spec_from_file_location(
        "gpu_summary", os.path.join(ROOT, "bench", "gpu_summary.py"))
    assert spec is not None and spec.loader is not None
    gs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gs)

    def row(shape, t, eager, comp):
        return {"shape": shape, "dtype": "float32", "mode": "fwd", "results": {
            "triton": {"ms": t, "peak_bytes": 2**20},
            "eager": {"ms": eager, "peak_bytes": 2**30},
            "compile": {"ms": comp, "peak_bytes": 2**29}}}

    lines = gs.summarise({"rows": [row("LONG", 1.0, 8.0, 2.5), row("MEM", 1.0, 8.0, 1.5),
                                   row("DECODE", 1.0, 1.9, 0.1)]})
    body = [ln for ln in lines if ln.startswith("| LONG") or ln.startswith("| MEM")
            or ln.startswith("| DECODE")]
    assert "met (>= 2x compile)" in body[0] and "2.50x" in body[0]
    assert "MISSED (>= 2x compile)" in body[1]
    assert "MISSED (>= 2x eager)" in body[2]  # decode is judged against eager
    assert "1.0 / 1024.0" in body[0]


_SASS_SM80 = """
        /*0000*/                   MOV R1, RZ ;
        /*0010*/                   NOP ;
        /*0020*/                   FADD R2, R2, R3 ;
        /*0030*/                   ISETP.GE.AND P1, PT, R1, UR4, PT ;
        /*0040*/               @P1 CALL.REL.NOINC 0x70 ;
        /*0050*/                   IADD3 R1, R1, 0x1, RZ ;
        /*0060*/                   BRA 0x10 ;
        /*0070*/                   EXIT ;
        /*0080*/                   BRA 0x80 ;
"""


def test_block_counts_rotated_loop_with_a_noinc_call_exit(kr):
    """sm_80's loop idiom: the exit is a predicated CALL.REL.NOINC (a jump), the latch an
    unconditional BRA to a NOP before the header; 5 trips run the header 5 times."""
    instrs = kr._parsed({"sass": _SASS_SM80})[0]
    blocks = kr._blocks(instrs)
    counts, _, unc = kr.block_counts(instrs, blocks, [kr.Loop("a", "tile", 5, None)], "x")
    per = {b["start"]: round(float(c), 6) for b, c in zip(blocks, counts)}
    assert per == {0x0: 1, 0x20: 5, 0x50: 4, 0x70: 1, 0x80: 0}
    assert unc == 0
