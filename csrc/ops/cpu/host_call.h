// Glue-side handling of the host layer's tacq_status (csrc/host/host.h): the
// glue checks tensors first with the messages of validate.h, so a status other
// than TACQ_OK here is out of memory or a check the glue does not repeat;
// it becomes a c10::Error quoting the host layer's detail.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "../../host/host.h"

namespace tacq {

inline void check_host(const char* op, tacq_status status) {
  TORCH_CHECK(status == TACQ_OK, "tacq.", op, ": ", tacq_status_string(status), ": ", host::last_error());
}

// The host layer's thread count for a torch op: torch's intra-op threads.
inline int torch_threads() { return at::get_num_threads(); }

inline tacq_weights weights_view(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& zero,
                                 int64_t bits, int64_t group_size, int64_t K) {
  tacq_weights w{};
  w.N = packed.size(0);
  w.K = K;
  w.bits = static_cast<int32_t>(bits);
  w.scale_dtype = scale.scalar_type() == at::kHalf ? TACQ_DTYPE_F16 : TACQ_DTYPE_F32;
  w.group_size = group_size;
  w.packed = packed.data_ptr<int32_t>();
  w.scale = scale.data_ptr();
  w.zero = zero.data_ptr();
  return w;
}

}  // namespace tacq
