// This ISA's kernel table (the glue picks one table at import; see api.h, isa.cpp).
#include "kernels.h"

namespace attnkern {
namespace ATTNKERN_ISA {

#define ATTNKERN_STR2(x) #x
#define ATTNKERN_STR(x) ATTNKERN_STR2(x)
const KernelTable table = {ATTNKERN_STR(ATTNKERN_ISA), &forward_impl<float>,
                           &forward_impl<double>, &backward_impl<float>,
                           &backward_impl<double>, &plan_forward, &plan_backward,
                           &location1_forward_impl<float>, &location1_forward_impl<double>,
                           &location1_backward_impl<float>,
                           &location1_backward_impl<double>,
                           &scores_forward_impl<float>, &scores_forward_impl<double>,
                           &scores_backward_impl<float>, &scores_backward_impl<double>,
#if ATTNKERN_VEC
                           &rows_linear_impl, &rows_linear_grad_impl};
#else
                           nullptr, nullptr};
#endif

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
