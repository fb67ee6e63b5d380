// CPU entry point of tacq.gather_columns: tensor checks, the index range
// check, and torch's threads over the output rows
// (csrc/kernels/cpu/gather_columns.cpp); registration.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <string>

#include "../../kernels/cpu/gather_columns.h"
#include "../validate.h"

namespace tacq {
namespace {

at::Tensor gather_columns_cpu(const at::Tensor& y, const at::Tensor& index) {
  constexpr const char* op = "gather_columns";
  check_gather_columns_args(op, y, index);
  const int64_t M = y.size(0), n_in = y.size(1), n_out = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  const int64_t bad = cpu::first_index_out_of_range(idx, n_out, n_in);
  TORCH_CHECK(bad < 0, "tacq.", op, ": index[", bad, "] = ", bad < 0 ? 0 : idx[bad],
              " is outside [0, ", n_in, "), the columns of y");
  at::Tensor out = at::empty({M, n_out}, y.options());
  const int element_bytes = static_cast<int>(y.element_size());
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, n_out));
  at::parallel_for(0, M, grain, [&](int64_t begin, int64_t end) {
    cpu::gather_columns_rows(y.data_ptr(), n_in, idx, n_out, element_bytes, out.data_ptr(), begin, end);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("gather_columns", &gather_columns_cpu); }

}  // namespace tacq
