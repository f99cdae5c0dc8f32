// The work plans of forward_impl and backward_impl: how one call is split into work items
// (the ForwardPlan / BackwardPlan structs and their invariants are in api.h). Pure integer
// arithmetic on the shapes (and, for the forward's spans only, the thread count); the
// callers decide the thread count (at::in_parallel_region, size threshold, get_num_threads).
//
// Why here: the plans use the kernels' blocking constants (common.h), so they are compiled
// like every kernel file, once per ISA into attnkern::<isa>. An inline function shared by the
// glue and a kernel file would be merged by the linker with one ISA's instructions in it (see
// api.h), and a glue-side copy would be a second set of constants to keep equal. The glue
// (and so the tests, through attnkern._C.plan_forward / plan_backward) reaches the plans of
// the ISA in use through its KernelTable, as it reaches the kernels.
#include "kernels.h"

namespace attnkern {
namespace ATTNKERN_ISA {

namespace {
constexpr int64_t kItems = 16;       // items wanted per call (dynamic schedule, 2..16 threads)
constexpr int64_t kMinSpanRows = 64;  // rows per span: the span shares one exp(2k) build

// Keys to process per chunk: a chunk's key-side data (bytes_per_key each) is built once and
// swept by every query block of its task, so it is sized to stay in L2 (kChunkBytes).
// At least kChunkMinKeys so that re-deriving each query block's exp(2q) per chunk stays a
// small fraction of the chunk's work. A multiple of kBK; depends only on the shapes.
inline int64_t chunk_keys(int64_t Tk, int64_t bytes_per_key) {
  const int64_t kc = round_up(kChunkBytes / std::max<int64_t>(bytes_per_key, 1) - kBK + 1, kBK);
  return std::min(std::max(kc, kChunkMinKeys), std::max(round_up(Tk, kBK), kBK));
}

// Splits per batch: enough items to keep threads busy for small batches, bounded so the dq
// partials stay small (at most 8 x one batch's dq). B = 0 (an empty batch, which bwd does
// run) must not divide by zero.
int64_t key_splits(int64_t B, int64_t Tk) {
  const int64_t nkb = (Tk + kBK - 1) / kBK;
  if (B >= 8 || nkb <= 1) return 1;
  return std::max<int64_t>(1, std::min(nkb, (8 + B - 1) / std::max<int64_t>(B, 1)));
}
}  // namespace

// Query spans first (as many as keep >= kMinSpanRows rows each), then key splits of whole
// chunks for the items still missing; both from the shapes alone, as the splits change
// the rounding (partial states merged). If that leaves threads idle, the spans are cut
// finer (down to one block): spans do not change any row's arithmetic, only which item
// computes it, so this may depend on the thread count.
ForwardPlan plan_forward(int64_t B, int64_t Tq, int64_t Tk, int64_t Hp, int64_t Dv,
                         int64_t threads) {
  const int64_t nqb = (Tq + kBQ - 1) / kBQ;
  const int64_t KC = chunk_keys(Tk, (Hp + Dv) * int64_t(sizeof(float)));
  const int64_t nkc = (Tk + KC - 1) / KC;
  const int64_t want = (kItems + B - 1) / std::max<int64_t>(B, 1);
  const int64_t nqb1 = std::max<int64_t>(nqb, 1);
  const int64_t nspan0 = std::clamp<int64_t>(std::min(want, Tq / kMinSpanRows), 1, nqb1);
  const int64_t nsplit = std::clamp<int64_t>((want + nspan0 - 1) / nspan0, 1, std::max<int64_t>(nkc, 1));
  const int64_t nt = threads;
  const int64_t nspan1 = B * nspan0 * nsplit >= nt
                             ? nspan0
                             : std::min(nqb1, (nt + B * nsplit - 1) / std::max<int64_t>(B * nsplit, 1));
  const int64_t span = (nqb1 + nspan1 - 1) / nspan1;  // query blocks per span
  const int64_t nspan = (nqb1 + span - 1) / span;
  const int64_t KS = ((nkc + nsplit - 1) / nsplit) * KC;  // keys per split (whole chunks)
  const int64_t items = B * nspan * nsplit;
  return ForwardPlan{KC, nsplit, KS, span, nspan, items};
}

BackwardPlan plan_backward(int64_t B, int64_t Tk, int64_t Hp, int64_t Dv) {
  int64_t nsplit = key_splits(B, Tk);
  const int64_t KS = round_up((Tk + nsplit - 1) / std::max<int64_t>(nsplit, 1), kBK);
  nsplit = Tk > 0 ? (Tk + KS - 1) / KS : 1;
  const int64_t items = B * nsplit;
  // Key chunk: exp(2k) in both layouts, gk, v and dv of each key stay in cache while every
  // query block of the batch sweeps the chunk.
  const int64_t KC = chunk_keys(std::min(KS, Tk), (3 * Hp + 2 * Dv) * int64_t(sizeof(float)));
  return BackwardPlan{nsplit, KS, KC, items};
}

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
