#include "validate.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstring>
#include <string>

#include "tacq/packing.h"

namespace tacq {

void check_bits(const char* op, int64_t bits) {
  TORCH_CHECK(bits == 2 || bits == 3 || bits == 4, "tacq.", op, ": bits must be 2, 3 or 4, got ",
              bits);
}

int64_t check_group_size(const char* op, int64_t group_size, int64_t K, int64_t* group_len) {
  TORCH_CHECK(K >= 1, "tacq.", op, ": K must be >= 1, got ", K);
  if (group_size == -1 || group_size == K) {
    *group_len = K;
    return 1;
  }
  TORCH_CHECK(group_size > 0 && group_size % 32 == 0 && K % group_size == 0, "tacq.", op,
              ": group_size must be -1 (whole row), K, or a multiple of 32 that divides K = ", K,
              ", got ", group_size);
  *group_len = group_size;
  return K / group_size;
}

void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim,
               const char* layout) {
  TORCH_CHECK(t.dim() == dim, "tacq.", op, ": ", name, " must be ", dim, "-D ", layout,
              ", got shape ", t.sizes());
}

std::string dtype_name(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return "torch.float32";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kDouble: return "torch.float64";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(s);
  }
}

void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType expected) {
  TORCH_CHECK(t.scalar_type() == expected, "tacq.", op, ": ", name, " must have dtype ",
              dtype_name(expected), ", got ", dtype_name(t.scalar_type()));
}

void check_float_dtype(const char* op, const char* name, const at::Tensor& t, bool allow_fp32,
                       bool allow_fp16, bool allow_bf16) {
  const auto s = t.scalar_type();
  const bool ok = (allow_fp32 && s == at::kFloat) || (allow_fp16 && s == at::kHalf) ||
                  (allow_bf16 && s == at::kBFloat16);
  if (ok) return;
  std::string allowed;
  for (const auto& [allow, type] : {std::pair{allow_fp32, at::kFloat}, std::pair{allow_fp16, at::kHalf},
                                    std::pair{allow_bf16, at::kBFloat16}}) {
    if (!allow) continue;
    allowed += (allowed.empty() ? "" : " or ") + dtype_name(type);
  }
  TORCH_CHECK(false, "tacq.", op, ": ", name, " must have dtype ", allowed, ", got ",
              dtype_name(s));
}

void check_contiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), "tacq.", op, ": ", name,
              " must be contiguous (call .contiguous() first), got strides ", t.strides());
}

void check_same_device(const char* op, const char* name, const at::Tensor& t,
                       const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "tacq.", op, ": ", name, " is on ", t.device(),
              " but ", ref_name, " is on ", ref.device(), "; all tensors must share a device");
}

void check_size(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                int64_t expected, const char* meaning) {
  TORCH_CHECK(t.size(dim) == expected, "tacq.", op, ": ", name, ".shape[", dim, "] must be ",
              meaning, " = ", expected, ", got ", t.size(dim), " (shape ", t.sizes(), ")");
}

int64_t check_packed(const char* op, const at::Tensor& packed, int64_t bits, int64_t K) {
  check_dim(op, "packed", packed, 2, "[N, ceil(K/32)*bits]");
  check_dtype(op, "packed", packed, at::kInt);
  check_contiguous(op, "packed", packed);
  TORCH_CHECK(K >= 1, "tacq.", op, ": K must be >= 1, got ", K);
  check_size(op, "packed", packed, 1, packed_words_per_row(K, static_cast<int>(bits)),
             "ceil(K/32)*bits");
  return packed.size(0);
}

void check_scale_zero(const char* op, const at::Tensor& scale, const at::Tensor& zero,
                      const at::Tensor& packed, int64_t N, int64_t G) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"scale", scale},
                                std::pair<const char*, const at::Tensor&>{"zero", zero}}) {
    check_same_device(op, name, t, packed, "packed");
    check_dim(op, name, t, 2, "[N, G]");
    check_float_dtype(op, name, t, /*fp32=*/true, /*fp16=*/true, /*bf16=*/false);
    check_contiguous(op, name, t);
    check_size(op, name, t, 0, N, "N (rows of packed)");
    check_size(op, name, t, 1, G, "G (groups per row)");
  }
  TORCH_CHECK(scale.scalar_type() == zero.scalar_type(), "tacq.", op,
              ": scale and zero must have the same dtype, got ", dtype_name(scale.scalar_type()),
              " and ", dtype_name(zero.scalar_type()));
}

void check_csr(const char* op, const at::Tensor& row_ptr, const at::Tensor& col_idx,
               const at::Tensor& values, const at::Tensor& packed, int64_t N, int64_t K,
               bool check_rows) {
  check_same_device(op, "row_ptr", row_ptr, packed, "packed");
  check_same_device(op, "col_idx", col_idx, packed, "packed");
  check_same_device(op, "values", values, packed, "packed");
  check_dim(op, "row_ptr", row_ptr, 1, "[N+1]");
  check_dim(op, "col_idx", col_idx, 1, "[nnz]");
  check_dim(op, "values", values, 1, "[nnz]");
  check_dtype(op, "row_ptr", row_ptr, at::kInt);
  check_dtype(op, "col_idx", col_idx, at::kInt);
  check_dtype(op, "values", values, at::kHalf);
  check_contiguous(op, "row_ptr", row_ptr);
  check_contiguous(op, "col_idx", col_idx);
  check_contiguous(op, "values", values);
  check_size(op, "row_ptr", row_ptr, 0, N + 1, "N+1");
  const int64_t nnz = col_idx.size(0);
  check_size(op, "values", values, 0, nnz, "nnz (length of col_idx)");
  TORCH_CHECK(nnz <= INT32_MAX, "tacq.", op, ": nnz must fit int32, got ", nnz);
  if (check_rows) check_csr_rows(op, row_ptr.data_ptr<int32_t>(), N, nnz);
}

void check_csr_rows(const char* op, const int32_t* rp, int64_t N, int64_t nnz) {
  TORCH_CHECK(rp[0] == 0, "tacq.", op, ": row_ptr[0] must be 0, got ", rp[0]);
  TORCH_CHECK(rp[N] == nnz, "tacq.", op, ": row_ptr[N] must equal nnz = ", nnz, ", got ", rp[N]);
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(rp[n] <= rp[n + 1], "tacq.", op, ": row_ptr must be non-decreasing, row_ptr[", n,
                "] = ", rp[n], " > row_ptr[", n + 1, "] = ", rp[n + 1]);
}

void check_csr_columns(const char* op, const int32_t* rp, const int32_t* ci, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = rp[n]; i < rp[n + 1]; ++i) {
      TORCH_CHECK(ci[i] >= 0 && ci[i] < K, "tacq.", op, ": col_idx[", i, "] = ", ci[i],
                  " (row ", n, ") is out of range [0, K = ", K, ")");
      TORCH_CHECK(i == rp[n] || ci[i] > ci[i - 1], "tacq.", op, ": col_idx must be strictly ",
                  "increasing within a row, row ", n, " has ", ci[i - 1], " then ", ci[i]);
    }
  }
}

void check_codes(const char* op, const at::Tensor& codes, int64_t bits) {
  check_dim(op, "codes", codes, 2, "[N, K]");
  check_dtype(op, "codes", codes, at::kByte);
  TORCH_CHECK(codes.size(1) >= 1, "tacq.", op, ": codes must have K >= 1 columns, got shape ",
              codes.sizes());
  if (codes.numel() == 0) return;
  const int64_t max_code = codes.max().item<int64_t>();
  TORCH_CHECK(max_code < (int64_t{1} << bits), "tacq.", op, ": codes must be < 2^bits = ",
              int64_t{1} << bits, ", got a code ", max_code);
}

void check_out_dtype(const char* op, at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, "tacq.", op,
              ": dtype must be torch.float32, torch.float16 or torch.bfloat16, got ", dtype_name(dtype));
}

void check_gather_columns_args(const char* op, const at::Tensor& y, const at::Tensor& index) {
  check_dim(op, "y", y, 2, "[M, N]");
  check_float_dtype(op, "y", y, true, true, true);
  check_contiguous(op, "y", y);
  check_dim(op, "index", index, 1, "[N_out]");
  check_dtype(op, "index", index, at::kLong);
  check_contiguous(op, "index", index);
  check_same_device(op, "index", index, y, "y");
}

void check_bf16_gemv_args(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() >= 1, "tacq.", op, ": x must be [..., K] (at least 1-D), got a 0-D tensor");
  check_dtype(op, "x", x, at::kBFloat16);
  check_dim(op, "weight", weight, 2, "[N, K]");
  check_dtype(op, "weight", weight, at::kBFloat16);
  check_contiguous(op, "weight", weight);
  check_same_device(op, "weight", weight, x, "x");
  check_size(op, "weight", weight, 1, x.size(-1), "K (x.shape[-1])");
  int64_t M = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) M *= x.size(d);
  TORCH_CHECK(M <= kMixedGemvMaxRows, "tacq.", op, ": x must have at most ",
              kMixedGemvMaxRows, " rows (the product of its leading sizes), got ", M, " (shape ", x.sizes(),
              "); use F.linear for more");
}

void check_saliency_args(const char* op, const at::Tensor& acc, const at::Tensor& grad_out,
                         const at::Tensor& act) {
  check_dim(op, "acc", acc, 2, "[N, K]");
  check_dtype(op, "acc", acc, at::kFloat);
  TORCH_CHECK(grad_out.dim() == 2 || grad_out.dim() == 3, "tacq.", op,
              ": grad_out must be 2-D [T, N] or 3-D [B, T, N], got shape ", grad_out.sizes());
  TORCH_CHECK(act.dim() == grad_out.dim(), "tacq.", op, ": act must have the rank of grad_out (",
              grad_out.dim(), "-D), got shape ", act.sizes());
  check_float_dtype(op, "grad_out", grad_out, true, true, true);
  TORCH_CHECK(act.scalar_type() == grad_out.scalar_type(), "tacq.", op,
              ": act and grad_out must have the same dtype, got ", dtype_name(act.scalar_type()),
              " and ", dtype_name(grad_out.scalar_type()));
  check_same_device(op, "grad_out", grad_out, acc, "acc");
  check_same_device(op, "act", act, acc, "acc");
  const auto lead_g = grad_out.sizes().slice(0, grad_out.dim() - 1);
  const auto lead_a = act.sizes().slice(0, act.dim() - 1);
  TORCH_CHECK(lead_g == lead_a, "tacq.", op,
              ": grad_out and act must agree on the batch and token dimensions, got ",
              grad_out.sizes(), " and ", act.sizes());
  check_size(op, "grad_out", grad_out, grad_out.dim() - 1, acc.size(0), "N (rows of acc)");
  check_size(op, "act", act, act.dim() - 1, acc.size(1), "K (columns of acc)");
  check_contiguous(op, "acc", acc);
}

int64_t check_quantize_args(const char* op, const at::Tensor& w, int64_t bits, int64_t group_size,
                            const std::optional<at::Tensor>& keep_mask, int64_t* group_len) {
  check_bits(op, bits);
  check_dim(op, "w", w, 2, "[N, K]");
  check_float_dtype(op, "w", w, true, true, true);
  const int64_t G = check_group_size(op, group_size, w.size(1), group_len);
  if (keep_mask.has_value()) {
    check_dtype(op, "keep_mask", *keep_mask, at::kBool);
    check_same_device(op, "keep_mask", *keep_mask, w, "w");
    TORCH_CHECK(keep_mask->sizes() == w.sizes(), "tacq.", op, ": keep_mask must have the shape of w ",
                w.sizes(), ", got ", keep_mask->sizes());
  }
  check_finite(op, "w", w);
  return G;
}

PackedShape check_dequantize_args(const char* op, const at::Tensor& packed, const at::Tensor& scale,
                                  const at::Tensor& zero, int64_t bits, int64_t group_size,
                                  int64_t K, at::ScalarType out_dtype) {
  check_bits(op, bits);
  PackedShape shape{};
  shape.N = check_packed(op, packed, bits, K);
  shape.G = check_group_size(op, group_size, K, &shape.group_len);
  check_scale_zero(op, scale, zero, packed, shape.N, shape.G);
  check_out_dtype(op, out_dtype);
  return shape;
}

PackedShape check_mixed_gemv_args(const char* op, const at::Tensor& x, const at::Tensor& packed,
                                  const at::Tensor& scale, const at::Tensor& zero, int64_t bits,
                                  int64_t group_size, const at::Tensor& row_ptr,
                                  const at::Tensor& col_idx, const at::Tensor& values) {
  check_bits(op, bits);
  TORCH_CHECK(x.dim() >= 1, "tacq.", op, ": x must be [..., K] (at least 1-D), got a 0-D tensor");
  const int64_t K = x.size(-1);
  check_float_dtype(op, "x", x, true, true, true);
  PackedShape shape{};
  shape.N = check_packed(op, packed, bits, K);
  check_same_device(op, "x", x, packed, "packed");
  shape.G = check_group_size(op, group_size, K, &shape.group_len);
  check_scale_zero(op, scale, zero, packed, shape.N, shape.G);
  check_csr(op, row_ptr, col_idx, values, packed, shape.N, K, /*check_rows=*/x.is_cpu());
  return shape;
}

StoredShape check_mixed_gemv_stored_args(const char* op, const at::Tensor& x, const at::Tensor& storage,
                                         int64_t N, int64_t bits, int64_t group_size, int64_t nnz,
                                         const char* storage_name) {
  check_bits(op, bits);
  TORCH_CHECK(x.dim() >= 1, "tacq.", op, ": x must be [..., K] (at least 1-D), got a 0-D tensor");
  const int64_t K = x.size(-1);
  check_float_dtype(op, "x", x, true, true, true);
  TORCH_CHECK(K >= 1, "tacq.", op, ": x must have K >= 1 columns, got shape ", x.sizes());
  TORCH_CHECK(N >= 0 && N <= INT32_MAX, "tacq.", op, ": N must be in [0, 2^31 - 1], got ", N);
  TORCH_CHECK(nnz >= 0 && nnz <= INT32_MAX, "tacq.", op, ": nnz must be in [0, 2^31 - 1], got ", nnz);
  StoredShape s{};
  s.shape.N = N;
  s.shape.G = check_group_size(op, group_size, K, &s.shape.group_len);
  s.layout = stored_layout(N, K, bits, s.shape.G, nnz);
  check_same_device(op, storage_name, storage, x, "x");
  check_dtype(op, storage_name, storage, at::kByte);
  check_contiguous(op, storage_name, storage);
  TORCH_CHECK(storage.numel() == s.layout.bytes, "tacq.", op, ": ", storage_name, " must hold ", s.layout.bytes,
              " bytes for N = ", N, ", K = ", K, ", bits = ", bits, ", G = ", s.shape.G, ", nnz = ", nnz,
              " (tacq_ext.ops.stored_layout), got ", storage.numel());
  TORCH_CHECK(reinterpret_cast<uintptr_t>(storage.data_ptr()) % kStoredAlign == 0, "tacq.", op, ": ",
              storage_name, " must start at a multiple of ", kStoredAlign, " bytes (a tensor of its own, "
              "not a slice at an odd offset)");
  if (storage.is_cpu())
    check_csr_rows(op, reinterpret_cast<const int32_t*>(storage.data_ptr<uint8_t>() + s.layout.row_ptr), N, nnz);
  return s;
}

StoredHeader read_stored_header(const char* op, const at::Tensor& x, const at::Tensor& layer) {
  TORCH_CHECK(x.dim() >= 1, "tacq.", op, ": x must be [..., K] (at least 1-D), got a 0-D tensor");
  check_same_device(op, "layer", layer, x, "x");
  check_dim(op, "layer", layer, 2, "[N, bytes / N] (a stored layer as QuantizedLinear keeps it)");
  check_dtype(op, "layer", layer, at::kByte);
  check_contiguous(op, "layer", layer);
  TORCH_CHECK(layer.numel() >= kStoredAlign, "tacq.", op, ": layer must hold at least its ", kStoredAlign,
              "-byte header, got ", layer.numel(), " bytes");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(layer.data_ptr()) % kStoredAlign == 0, "tacq.", op,
              ": layer must start at a multiple of ", kStoredAlign, " bytes (a tensor of its own, "
              "not a slice at an odd offset)");
  StoredHeader h;
  std::memcpy(&h, layer.data_ptr(), sizeof(h));
  TORCH_CHECK(h.magic == kStoredMagic, "tacq.", op, ": layer's header does not start with \"TACQSL01\": "
              "not a stored layer, or a corrupt one");
  TORCH_CHECK(h.N == layer.size(0), "tacq.", op, ": layer's header says N = ", h.N, " rows but layer is ",
              layer.sizes());
  TORCH_CHECK(h.K == x.size(-1), "tacq.", op, ": x has K = ", x.size(-1), " columns but layer's header says K = ",
              h.K);
  TORCH_CHECK(h.x_int8 == 0 || h.x_int8 == 1, "tacq.", op, ": layer's header has x_int8 = ", h.x_int8,
              ", not 0 or 1");
  return h;
}

at::Tensor activation_rows(const at::Tensor& x) {
  return x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});
}

std::vector<int64_t> output_shape(const at::Tensor& x, int64_t N) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  return shape;
}

void check_finite(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(at::isfinite(t).all().item<bool>(), "tacq.", op, ": ", name,
              " contains NaN or infinity");
}

}  // namespace tacq
