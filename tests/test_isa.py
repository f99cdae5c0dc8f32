"""The ISA paths of the C++ CPU kernels: selection (ATTNKERN_CPU_ISA, attnkern.cpu_isa()),
that each ISA's instructions stay inside its own path, and a run on an emulated AVX2-only
CPU (qemu-x86_64 -cpu Haswell). The kernels' numerics per path: tests/test_cpp.py runs
once per path.
"""

from __future__ import annotations

import collections
import importlib
import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

import attnkern
from attnkern import _cpu, ops

pytestmark = pytest.mark.skipif(
    not ops.HAS_CPP, reason=f"attnkern._C is not built ({ops.CPP_IMPORT_ERROR})"
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _ext():
    return importlib.import_module("attnkern._C")


def _run(code: str, isa: str | None, timeout: float = 120, prefix: tuple[str, ...] = ()):
    """Runs `code` in a fresh interpreter with ATTNKERN_CPU_ISA=isa (unset for None)."""
    env = dict(os.environ)
    env.pop("ATTNKERN_CPU_ISA", None)
    if isa is not None:
        env["ATTNKERN_CPU_ISA"] = isa
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([*prefix, sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_build_holds_every_path_of_its_architecture():
    built = tuple(_ext().built_isas())
    assert built[-1] == "scalar"
    if X86:
        assert built == ("avx512", "avx2", "scalar")
    available = tuple(_ext().available_isas())
    assert set(available) <= set(built) and "scalar" in available


def test_auto_picks_the_best_path():
    available = tuple(_ext().available_isas())
    assert _cpu.requested_isa(" AUTO ") == _cpu.requested_isa("") == "auto"
    for value in (None, ""):
        r = _run("import attnkern; print(attnkern.cpu_isa())", value)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == available[0], value


@pytest.mark.parametrize("isa", _cpu.ISAS)
def test_forcing_a_path(isa):
    r = _run("import attnkern; print(attnkern.cpu_isa())", isa)
    if isa in _ext().available_isas():
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == isa
    else:  # a clear error at import, naming what this CPU has
        assert r.returncode != 0
        assert "RuntimeError" in r.stderr and f"ATTNKERN_CPU_ISA={isa}" in r.stderr
        assert "it has " + ", ".join(_ext().available_isas()) in r.stderr


def test_unknown_value_names_the_allowed_ones():
    r = _run("import attnkern", "sse9")
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "'sse9'" in r.stderr
    assert "auto, avx512, avx2, neon, scalar" in r.stderr
    with pytest.raises(ValueError, match="unknown ISA"):
        _cpu.requested_isa("avx-512")


def test_set_isa_rejects_paths_the_cpu_lacks():
    ext = _ext()
    missing = [i for i in _cpu.ISAS if i not in ext.available_isas()]
    assert missing  # neon on x86-64, avx2/avx512 on aarch64
    before = attnkern.cpu_isa()
    with pytest.raises(ValueError):
        ext.set_isa(missing[0])
    assert attnkern.cpu_isa() == before


def _vector_functions(so: str) -> dict[str, set[str]]:
    """Functions of `so` that use AVX-512 registers (zmm, k masks) or AVX registers (ymm)."""
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", so], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    hits: dict[str, set[str]] = collections.defaultdict(set)
    fn = None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            fn = m.group(1)
        elif fn is not None and "\t" in line:
            # operands only: objdump's "# <symbol>" comments hold names such as
            # c10::Type::symmetric(), which contain "ymm"
            ins = line.split("\t", 1)[1].split("#", 1)[0]
            if re.search(r"%zmm\d|%k[0-7]\b", ins):
                hits["avx512"].add(fn)
            elif re.search(r"%ymm\d", ins):
                hits["avx"].add(fn)
    return hits


def _in_namespace(fn: str, isa: str) -> bool:
    # demangled (attnkern::avx2::f) or, for OpenMP outlined bodies, mangled (8attnkern4avx2)
    return f"attnkern::{isa}::" in fn or f"8attnkern{len(isa)}{isa}" in fn


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="needs x86-64 objdump")
@pytest.mark.skipif(ops.HAS_CPP and bool(getattr(_ext(), "native_build", 0)),
                    reason="ATTNKERN_NATIVE=1 build: every path may use this CPU's instructions")
def test_isa_instructions_stay_in_their_path():
    """No function outside attnkern::avx512 uses an AVX-512 register and none outside
    attnkern::avx2 / avx512 an AVX one: the glue, the scalar path and anything the linker
    merged (inline functions of shared headers) run on any x86-64 CPU."""
    so = _ext().__file__
    hits = _vector_functions(so)
    assert any(_in_namespace(f, "avx512") for f in hits["avx512"])  # the scan sees them
    bad512 = sorted(f for f in hits["avx512"] if not _in_namespace(f, "avx512"))
    bad_avx = sorted(f for f in hits["avx"]
                     if not (_in_namespace(f, "avx512") or _in_namespace(f, "avx2")))
    assert not bad512 and not bad_avx, (bad512[:10], bad_avx[:10])


HASWELL_CHECK = r"""
import torch, attnkern
from attnkern import _cpu
assert torch.backends.cpu.get_cpu_capability() == "AVX2"
assert attnkern.cpu_isa() == "avx2", attnkern.cpu_isa()
try:
    _cpu.select("avx512")
    raise SystemExit("forcing avx512 did not raise")
except RuntimeError as e:
    assert "it has avx2, scalar" in str(e), e
g = torch.Generator().manual_seed(0)
for isa in ("avx2", "scalar"):
    _cpu.select(isa)
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        q, k, v = (torch.randn(2, n, h, generator=g, dtype=dtype)
                   for n, h in ((9, 24), (70, 24), (70, 5)))
        w = torch.randn(24, generator=g, dtype=dtype)
        lens = torch.tensor([70, 33])
        args = [t.requires_grad_() for t in (q, k, v, w)]
        out = attnkern.additive_attention(*args, key_lengths=lens, backend="cpp")
        grads = torch.autograd.grad(out.square().sum(), args)
        ref = attnkern.reference.additive_attention(*args, key_lengths=lens)
        rgrads = torch.autograd.grad(ref.square().sum(), args)
        for a, b in zip((out, *grads), (ref, *rgrads)):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="x86-64 only")
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                    reason="qemu-x86_64 not installed (Debian: apt-get install qemu-user)")
def test_runs_on_an_avx2_only_cpu_under_qemu():
    """Under qemu-x86_64 -cpu Haswell (AVX2, FMA, no AVX-512) an AVX-512 instruction is an
    illegal instruction: auto picks avx2, and the avx2 and scalar paths match the reference
    (float32 and float64, forward and every gradient). Slow: torch imports under emulation."""
    r = _run(HASWELL_CHECK, None, timeout=600, prefix=("qemu-x86_64", "-cpu", "Haswell"))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stderr[-3000:])
