// Python module tacq_ext._C: importing it runs the TORCH_LIBRARY registrations
// of this shared object; it also reports how the extension was built and the
// op contracts' limits.
#include <pybind11/pybind11.h>

#include "tacq/cpu_isa.h"
#include "tacq/limits.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "tacq_ext native kernels (ops are registered under torch.ops.tacq)";
  m.attr("MIXED_GEMV_MAX_ROWS") = tacq::kMixedGemvMaxRows;
  m.def("build_info", []() {
    py::dict info;
    info["torch_version"] = TACQ_TORCH_VERSION;
#ifdef TACQ_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cpu_isa"] = tacq::cpu_isa_name(tacq::cpu_isa());
    return info;
  }, "Build facts: torch version built against, CUDA kernels on/off, CPU ISA in use.");
}
