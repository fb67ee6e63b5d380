// Python module tacq_ext._C: importing it runs the TORCH_LIBRARY registrations
// of this shared object; it also reports how the extension was built and the
// op contracts' limits and the stored layer's layout and header, and gives
// mixed_gemv, mixed_gemv_stored and mixed_gemv_layer a faster door (below).
#include <ATen/core/dispatch/Dispatcher.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/pybind.h>

#include "ops/cpu/mixed_gemv_route.h"
#include "ops/stored_layer.h"
#include "tacq/cpu_isa.h"
#include "tacq/limits.h"

namespace py = pybind11;

namespace {

// The tacq::mixed_gemv op called through the dispatcher's typed (unboxed)
// entry: the same op and the same dispatch (every device, the fake kernel,
// dispatch modes, autocast and the profiler see the call) without the boxed
// argument parsing of torch.ops.tacq.mixed_gemv, which costs ~1.7 us of the
// ~4 us that a 192 x 192 layer's call takes (Zen 4). Errors and warnings
// reach Python as torch's own ops raise them.
at::Tensor mixed_gemv_typed(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                            const at::Tensor& zero, int64_t bits, int64_t group_size, const at::Tensor& row_ptr,
                            const at::Tensor& col_idx, const at::Tensor& values, bool x_int8) {
  HANDLE_TH_ERRORS
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("tacq::mixed_gemv", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                            int64_t, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool)>();
  const py::gil_scoped_release no_gil;
  return op.call(x, packed, scale, zero, bits, group_size, row_ptr, col_idx, values, x_int8);
  END_HANDLE_TH_ERRORS_PYBIND
}

// tacq::mixed_gemv_stored through the typed entry, as mixed_gemv_typed.
at::Tensor mixed_gemv_stored_typed(const at::Tensor& x, const at::Tensor& storage, int64_t N, int64_t bits,
                                   int64_t group_size, int64_t nnz, bool x_int8) {
  HANDLE_TH_ERRORS
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("tacq::mixed_gemv_stored", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t, int64_t, bool)>();
  const py::gil_scoped_release no_gil;
  return op.call(x, storage, N, bits, group_size, nnz, x_int8);
  END_HANDLE_TH_ERRORS_PYBIND
}

// tacq::mixed_gemv_layer through the typed entry, as mixed_gemv_typed.
at::Tensor mixed_gemv_layer_typed(const at::Tensor& x, const at::Tensor& layer) {
  HANDLE_TH_ERRORS
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("tacq::mixed_gemv_layer", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  const py::gil_scoped_release no_gil;
  return op.call(x, layer);
  END_HANDLE_TH_ERRORS_PYBIND
}

// A stored layer's header (ops/stored_layer.h) as the 64 bytes to write at its start.
py::bytes stored_header_bytes(int64_t N, int64_t K, int64_t bits, int64_t group_size, int64_t nnz, bool x_int8) {
  const tacq::StoredHeader h{tacq::kStoredMagic, N, K, bits, group_size, nnz, x_int8 ? 1 : 0, 0};
  return py::bytes(reinterpret_cast<const char*>(&h), sizeof(h));
}

// Byte offsets of a stored layer's sections and its size (ops/stored_layer.h).
py::dict stored_layout_dict(int64_t N, int64_t K, int64_t bits, int64_t G, int64_t nnz) {
  const tacq::StoredLayout s = tacq::stored_layout(N, K, bits, G, nnz);
  py::dict d;
  d["header"] = s.header;
  d["packed"] = s.packed;
  d["scale"] = s.scale;
  d["zero"] = s.zero;
  d["row_ptr"] = s.row_ptr;
  d["col_idx"] = s.col_idx;
  d["values"] = s.values;
  d["bytes"] = s.bytes;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tacq_ext native kernels (ops are registered under torch.ops.tacq)";
  m.attr("MIXED_GEMV_MAX_ROWS") = tacq::kMixedGemvMaxRows;
  m.def("mixed_gemv", &mixed_gemv_typed, py::arg("x"), py::arg("packed"), py::arg("scale"), py::arg("zero"),
        py::arg("bits"), py::arg("group_size"), py::arg("row_ptr"), py::arg("col_idx"), py::arg("values"),
        py::arg("x_int8") = false,
        "tacq::mixed_gemv through the dispatcher's typed entry (same op and dispatch as torch.ops.tacq, "
        "less argument parsing); python/tacq_ext/ops.py chooses between the two.");
  m.def("mixed_gemv_stored", &mixed_gemv_stored_typed, py::arg("x"), py::arg("storage"), py::arg("N"),
        py::arg("bits"), py::arg("group_size"), py::arg("nnz"), py::arg("x_int8") = false,
        "tacq::mixed_gemv_stored through the dispatcher's typed entry (as mixed_gemv).");
  m.def("mixed_gemv_layer", &mixed_gemv_layer_typed, py::arg("x"), py::arg("layer"),
        "tacq::mixed_gemv_layer through the dispatcher's typed entry (as mixed_gemv).");
  m.def("stored_header", &stored_header_bytes, py::arg("N"), py::arg("K"), py::arg("bits"),
        py::arg("group_size"), py::arg("nnz"), py::arg("x_int8"),
        "The 64-byte header at the start of a stored layer (what mixed_gemv_layer reads its sizes from).");
  m.def("stored_layout", &stored_layout_dict, py::arg("N"), py::arg("K"), py::arg("bits"), py::arg("G"),
        py::arg("nnz"),
        "Byte offsets of a stored layer's sections (header, packed, scale, zero, row_ptr, col_idx, values) "
        "and its size in bytes ('bytes').");
  m.def("cpu_fused_rows_limit", &tacq::cpu_fused_rows_limit, py::arg("x_dtype"), py::arg("out_features"),
        py::arg("in_features"),
        "The most rows of x (of this dtype) that the CPU mixed_gemv of an out_features x in_features layer "
        "runs through its fused kernel, 16 rows a call, on the ISA in use; more rows take a GEMM over blocks "
        "of the dense weight.");
  m.def("cpu_has_avx512_bf16", &tacq::cpu_has_avx512_bf16,
        "AVX-512 BF16 present and not capped by TACQ_CPU_ISA: the CPU runs the bf16 kernels "
        "(bf16_gemv, the bf16 mixed_gemv and saliency paths).");
  m.def("build_info", []() {
    py::dict info;
    info["torch_version"] = TACQ_TORCH_VERSION;
#ifdef TACQ_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cpu_isa"] = tacq::cpu_isa_name(tacq::cpu_isa());
    info["avx512_bf16"] = tacq::cpu_has_avx512_bf16();
    info["avx512_vnni"] = tacq::cpu_has_avx512_vnni();
    return info;
  }, "Build facts: torch version built against, CUDA kernels on/off, CPU ISA in use and the "
     "AVX-512 extensions its kernels use.");
}
