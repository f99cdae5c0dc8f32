// Runtime ISA dispatch (glue, built for the baseline ISA): which kernel tables this build
// holds, which of them the CPU (and OS) can run, and the one in use. attnkern/_cpu.py picks
// it at import from ATTNKERN_CPU_ISA. This file also defines the Python module attnkern._C
// (importing it loads the library and so registers the kernels of ops.cpp), with test hooks
// for the kernels' work plans.
#include <Python.h>

#include <atomic>
#include <cstring>

#include "kernels/api.h"

namespace attnkern {
namespace {

// Best first. Each entry: the table and whether this CPU can run it.
struct Isa {
  const KernelTable* table;
  bool (*supported)();
};

bool always() { return true; }
#if defined(__x86_64__)
// __builtin_cpu_supports also checks that the OS saves the wider register state (XGETBV),
// so an AVX-512 CPU under an OS or hypervisor without AVX-512 state reports false.
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool has_avx512() {
  __builtin_cpu_init();
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
const Isa kIsas[] = {{&avx512::table, has_avx512}, {&avx2::table, has_avx2},
                     {&scalar::table, always}};
#elif defined(__aarch64__)
// Advanced SIMD (NEON) is part of every ARMv8-A CPU.
const Isa kIsas[] = {{&neon::table, always}, {&scalar::table, always}};
#else
const Isa kIsas[] = {{&scalar::table, always}};
#endif

const KernelTable* best() {
  for (const Isa& i : kIsas)
    if (i.supported()) return i.table;
  return &scalar::table;
}

std::atomic<const KernelTable*> g_active{nullptr};

// _C.available_isas() -> tuple of the names this build holds and this CPU runs, best first.
PyObject* available_isas(PyObject*, PyObject*) {
  PyObject* out = PyList_New(0);
  if (out == nullptr) return nullptr;
  for (const Isa& i : kIsas) {
    if (!i.supported()) continue;
    PyObject* s = PyUnicode_FromString(i.table->name);
    if (s == nullptr || PyList_Append(out, s) != 0) {
      Py_XDECREF(s);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(s);
  }
  PyObject* t = PyList_AsTuple(out);
  Py_DECREF(out);
  return t;
}

// _C.built_isas() -> tuple of the names this build holds, best first.
PyObject* built_isas(PyObject*, PyObject*) {
  const Py_ssize_t n = sizeof(kIsas) / sizeof(kIsas[0]);
  PyObject* t = PyTuple_New(n);
  if (t == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* s = PyUnicode_FromString(kIsas[i].table->name);
    if (s == nullptr) {
      Py_DECREF(t);
      return nullptr;
    }
    PyTuple_SET_ITEM(t, i, s);
  }
  return t;
}

// _C.get_isa() -> name of the table in use.
PyObject* get_isa(PyObject*, PyObject*) { return PyUnicode_FromString(active_kernels().name); }

// _C.set_isa(name): use that table; ValueError if the build lacks it or the CPU cannot run it.
PyObject* set_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  for (const Isa& i : kIsas) {
    if (std::strcmp(i.table->name, name) != 0) continue;
    if (!i.supported()) {
      PyErr_Format(PyExc_ValueError, "attnkern: this CPU cannot run the '%s' kernels", name);
      return nullptr;
    }
    g_active.store(i.table);
    Py_RETURN_NONE;
  }
  PyErr_Format(PyExc_ValueError, "attnkern: this build has no '%s' kernels", name);
  return nullptr;
}

// Test hooks for the work plans of the table in use (tests/test_plan.py): pure integer
// functions of the shapes, so they are module functions here rather than torch ops.
// _C.plan_forward(B, Tq, Tk, Hp, Dv, threads) -> dict of the ForwardPlan fields (api.h).
PyObject* plan_forward(PyObject*, PyObject* args) {
  long long B, Tq, Tk, Hp, Dv, threads;
  if (!PyArg_ParseTuple(args, "LLLLLL", &B, &Tq, &Tk, &Hp, &Dv, &threads)) return nullptr;
  if (B < 0 || Tq < 0 || Tk < 0 || Hp < 0 || Dv < 0 || threads < 1) {
    PyErr_SetString(PyExc_ValueError, "attnkern: plan_forward needs sizes >= 0, threads >= 1");
    return nullptr;
  }
  const ForwardPlan p = active_kernels().plan_fwd(B, Tq, Tk, Hp, Dv, threads);
  return Py_BuildValue("{s:L,s:L,s:L,s:L,s:L,s:L}", "KC", (long long)p.KC, "nsplit",
                       (long long)p.nsplit, "KS", (long long)p.KS, "span", (long long)p.span,
                       "nspan", (long long)p.nspan, "items", (long long)p.items);
}

// _C.plan_backward(B, Tk, Hp, Dv) -> dict of the BackwardPlan fields (api.h).
PyObject* plan_backward(PyObject*, PyObject* args) {
  long long B, Tk, Hp, Dv;
  if (!PyArg_ParseTuple(args, "LLLL", &B, &Tk, &Hp, &Dv)) return nullptr;
  if (B < 0 || Tk < 0 || Hp < 0 || Dv < 0) {
    PyErr_SetString(PyExc_ValueError, "attnkern: plan_backward needs sizes >= 0");
    return nullptr;
  }
  const BackwardPlan p = active_kernels().plan_bwd(B, Tk, Hp, Dv);
  return Py_BuildValue("{s:L,s:L,s:L,s:L}", "nsplit", (long long)p.nsplit, "KS",
                       (long long)p.KS, "KC", (long long)p.KC, "items", (long long)p.items);
}

PyMethodDef kMethods[] = {
    {"available_isas", available_isas, METH_NOARGS,
     "ISA paths this build holds and this CPU can run, best first."},
    {"built_isas", built_isas, METH_NOARGS, "ISA paths this build holds, best first."},
    {"get_isa", get_isa, METH_NOARGS, "The ISA path in use."},
    {"set_isa", set_isa, METH_O, "Use the named ISA path (see attnkern/_cpu.py)."},
    {"plan_forward", plan_forward, METH_VARARGS,
     "plan_forward(B, Tq, Tk, Hp, Dv, threads): the forward's work plan (tests)."},
    {"plan_backward", plan_backward, METH_VARARGS,
     "plan_backward(B, Tk, Hp, Dv): the backward's work plan (tests)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

const KernelTable& active_kernels() {
  const KernelTable* t = g_active.load(std::memory_order_relaxed);
  if (t == nullptr) {  // first call: the best this CPU has
    t = best();
    g_active.store(t);
  }
  return *t;
}

}  // namespace attnkern

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1,
                                   attnkern::kMethods};
  PyObject* m = PyModule_Create(&def);
#ifdef ATTNKERN_NATIVE_BUILD
  const long native = 1;
#else
  const long native = 0;
#endif
  // native_build: built with ATTNKERN_NATIVE=1 (-march=native: this CPU only)
  if (m != nullptr && PyModule_AddIntConstant(m, "native_build", native) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
