// The checkpoint reader of tacq/tacq.h (docs/format.md, docs/c-api.md):
// tacq_config.json and the safetensors header are parsed with json.h, the
// weights file is checked against the config (size, sha256), and a layer's
// tensors are read with fread into 64-byte aligned buffers the first time the
// layer is asked for, then checked as the Python loader checks them
// (python/tacq_ext/checkpoint_checks.py). Nothing trusts the file: every
// offset, size and count is checked before it is used.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "host.h"
#include "json.h"
#include "sha256.h"
#include "tacq/packing.h"

namespace tacq::host {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // safetensors' own limit
constexpr uint64_t kMaxConfigBytes = uint64_t{64} << 20;

struct TensorInfo {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the data section
};

struct LayerSpec {
  std::string name;
  int64_t K = 0, N = 0, bits = 0, group_size = 0, nnz = 0;
  bool bias = false;
};

struct LoadedLayer {
  std::string name;
  AlignedBuffer packed, scale, zero, row_ptr, col_idx, values, bias;
  tacq_layer view{};
};

// A row split's tacq_config.json entry, its parts' widths and rows.
struct RowSplitSpec {
  std::string name;
  int64_t K = 0, N = 0;
  bool bias = false;
  std::vector<std::string> parts;
  std::vector<int64_t> part_bits, part_rows;
};

struct LoadedRowSplit {
  std::string name;
  std::vector<const char*> part_names;  // into RowSplitSpec::parts
  AlignedBuffer row_bits, bias;
  tacq_row_split view{};
};

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

tacq_status bad(const std::string& path, const std::string& what) {
  return fail(TACQ_ERROR_BAD_CHECKPOINT, "%s: %s", path.c_str(), what.c_str());
}

bool file_size(std::FILE* f, uint64_t* size) {
  if (fseeko(f, 0, SEEK_END) != 0) return false;
  const off_t end = ftello(f);
  if (end < 0 || fseeko(f, 0, SEEK_SET) != 0) return false;
  *size = static_cast<uint64_t>(end);
  return true;
}

bool read_at(std::FILE* f, uint64_t offset, void* out, uint64_t bytes) {
  if (offset > static_cast<uint64_t>(INT64_MAX)) return false;
  if (fseeko(f, static_cast<off_t>(offset), SEEK_SET) != 0) return false;
  return bytes == 0 || std::fread(out, 1, static_cast<size_t>(bytes), f) == bytes;
}

// Element size of a safetensors dtype, 0 if unknown.
uint64_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

bool get_int(const Json& obj, const char* key, int64_t* out) {
  const Json* v = obj.find(key);
  if (v == nullptr || !v->is_int()) return false;
  *out = v->integer;
  return true;
}

}  // namespace
}  // namespace tacq::host

struct tacq_checkpoint {
  std::string dir, weights_path;
  tacq::host::File file;
  uint64_t data_start = 0, data_bytes = 0;
  std::map<std::string, tacq::host::TensorInfo> tensors;
  std::vector<tacq::host::LayerSpec> layers;
  std::map<std::string, size_t> layer_index;
  std::vector<tacq::host::RowSplitSpec> splits;
  std::map<std::string, size_t> split_index;
  std::mutex mutex;  // guards file, loaded and loaded_splits
  std::map<std::string, std::unique_ptr<tacq::host::LoadedLayer>> loaded;
  std::map<std::string, std::unique_ptr<tacq::host::LoadedRowSplit>> loaded_splits;
};

static_assert(sizeof(void*) != 8 || sizeof(tacq_row_split) == 64, "tacq_row_split layout is ABI");

namespace tacq::host {
namespace {

// A row split entry: in/out features, bias, and parts named <name>.parts.<i>
// that are layers of the config (read before), without bias, of the split's
// in_features, widths increasing, rows adding up to out_features.
tacq_status read_row_split_spec(const tacq_checkpoint& c, const std::string& path, const std::string& name,
                                const Json& spec, RowSplitSpec* s) {
  const std::string where = "row split '" + name + "'";
  if (!spec.is_object()) return bad(path, where + " must be an object");
  s->name = name;
  if (!get_int(spec, "in_features", &s->K) || !get_int(spec, "out_features", &s->N) || s->K < 1 || s->N < 1 ||
      s->N > (int64_t{1} << 40))
    return bad(path, where + " needs positive integers in_features and out_features");
  const Json* bias = spec.find("bias");
  if (bias == nullptr || bias->type != Json::Type::kBool) return bad(path, where + " needs a boolean 'bias'");
  s->bias = bias->boolean;
  const Json* parts = spec.find("parts");
  if (parts == nullptr || parts->type != Json::Type::kArray || parts->items.empty() || parts->items.size() > 8)
    return bad(path, where + ": 'parts' must list 1 to 8 layer names");
  int64_t rows = 0;
  for (size_t i = 0; i < parts->items.size(); ++i) {
    const std::string expected = name + ".parts." + std::to_string(i);
    if (!parts->items[i].is_string() || parts->items[i].string != expected)
      return bad(path, where + ": part " + std::to_string(i) + " must be named '" + expected + "'");
    const auto it = c.layer_index.find(expected);
    if (it == c.layer_index.end()) return bad(path, where + ": its part '" + expected + "' is not a quantized layer");
    const LayerSpec& part = c.layers[it->second];
    if (part.K != s->K || part.bias)
      return bad(path, where + ": every part must have in_features " + std::to_string(s->K) + " and no bias");
    if (!s->part_bits.empty() && part.bits <= s->part_bits.back())
      return bad(path, where + ": the parts' bits must be distinct and increasing");
    s->parts.push_back(expected);
    s->part_bits.push_back(part.bits);
    s->part_rows.push_back(part.N);
    rows += part.N;
  }
  if (rows != s->N)
    return bad(path, where + ": its parts hold " + std::to_string(rows) + " rows, out_features is " +
                         std::to_string(s->N));
  return TACQ_OK;
}

tacq_status read_config(tacq_checkpoint& c, uint64_t* weights_bytes, std::string* weights_sha256) {
  const std::string path = c.dir + "/tacq_config.json";
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return fail(TACQ_ERROR_IO, "cannot open %s", path.c_str());
  uint64_t size = 0;
  if (!file_size(f.get(), &size)) return fail(TACQ_ERROR_IO, "cannot read %s", path.c_str());
  if (size > kMaxConfigBytes) return bad(path, "larger than 64 MiB");
  std::string text(static_cast<size_t>(size), '\0');
  if (!read_at(f.get(), 0, text.data(), size)) return fail(TACQ_ERROR_IO, "cannot read %s", path.c_str());
  Json config;
  std::string error;
  if (!parse_json(text.data(), text.size(), &config, &error)) return bad(path, "invalid JSON: " + error);
  if (!config.is_object()) return bad(path, "must be a JSON object");
  int64_t version = 0;
  if (!get_int(config, "format_version", &version) || version != 1)
    return bad(path, "format_version must be 1 (the format this library reads)");
  int64_t bytes = 0;
  const Json* sha = config.find("weights_sha256");
  if (!get_int(config, "weights_bytes", &bytes) || bytes < 0 || sha == nullptr || !sha->is_string() ||
      sha->string.size() != 64)
    return bad(path, "missing 'weights_sha256' / 'weights_bytes'; cannot verify the weights file");
  *weights_bytes = static_cast<uint64_t>(bytes);
  *weights_sha256 = sha->string;
  const Json* layers = config.find("layers");
  if (layers == nullptr || !layers->is_object()) return bad(path, "'layers' must be an object");
  for (const auto& [name, spec] : layers->members) {
    const std::string where = "layer '" + name + "'";
    if (!spec.is_object()) return bad(path, where + " must be an object");
    LayerSpec s;
    s.name = name;
    if (!get_int(spec, "in_features", &s.K) || !get_int(spec, "out_features", &s.N) ||
        !get_int(spec, "bits", &s.bits) || !get_int(spec, "group_size", &s.group_size) ||
        !get_int(spec, "nnz", &s.nnz))
      return bad(path, where + " needs integer in_features, out_features, bits, group_size and nnz");
    const Json* bias = spec.find("bias");
    if (bias == nullptr || bias->type != Json::Type::kBool) return bad(path, where + " needs a boolean 'bias'");
    s.bias = bias->boolean;
    if (s.bits < 2 || s.bits > 4) return bad(path, where + " has bits outside {2, 3, 4}");
    if (s.K < 1 || s.K > INT32_MAX || s.N < 1 || s.N > (int64_t{1} << 40) || s.nnz < 0 || s.nnz > INT32_MAX)
      return bad(path, where + " has a non-positive or too large size, or a negative nnz");
    const int64_t gs = s.group_size;
    if (gs != -1 && gs != s.K && (gs <= 0 || gs % 32 != 0 || s.K % gs != 0))
      return bad(path, where + " has a group_size that does not divide in_features in multiples of 32");
    c.layer_index[name] = c.layers.size();
    c.layers.push_back(std::move(s));
  }
  const Json* splits = config.find("row_splits");
  if (splits == nullptr) return TACQ_OK;
  if (!splits->is_object()) return bad(path, "'row_splits' must be an object");
  for (const auto& [name, spec] : splits->members) {
    RowSplitSpec s;
    const tacq_status st = read_row_split_spec(c, path, name, spec, &s);
    if (st != TACQ_OK) return st;
    c.split_index[name] = c.splits.size();
    c.splits.push_back(std::move(s));
  }
  return TACQ_OK;
}

tacq_status check_weights_file(tacq_checkpoint& c, uint64_t expected_bytes, const std::string& expected_sha) {
  const std::string& path = c.weights_path;
  uint64_t size = 0;
  if (!file_size(c.file.get(), &size)) return fail(TACQ_ERROR_IO, "cannot read %s", path.c_str());
  if (size != expected_bytes)
    return bad(path, "truncated or corrupted: " + std::to_string(size) + " bytes, tacq_config.json says " +
                         std::to_string(expected_bytes));
  Sha256 sha;
  std::vector<char> chunk(1 << 20);
  for (;;) {
    const size_t n = std::fread(chunk.data(), 1, chunk.size(), c.file.get());
    sha.update(chunk.data(), n);
    if (n < chunk.size()) break;
  }
  if (std::ferror(c.file.get())) return fail(TACQ_ERROR_IO, "cannot read %s", path.c_str());
  const std::string actual = sha.hex_digest();
  if (actual != expected_sha)
    return bad(path, "corrupted or from another checkpoint: its sha256 is " + actual + ", tacq_config.json says " +
                         expected_sha);
  return TACQ_OK;
}

tacq_status read_header(tacq_checkpoint& c, uint64_t size) {
  const std::string& path = c.weights_path;
  uint8_t prefix[8];
  if (size < 8 || !read_at(c.file.get(), 0, prefix, 8)) return bad(path, "too short for a safetensors header");
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | prefix[i];
  if (header_bytes > kMaxHeaderBytes || header_bytes > size - 8)
    return bad(path, "safetensors header length " + std::to_string(header_bytes) + " exceeds the file");
  std::string text(static_cast<size_t>(header_bytes), '\0');
  if (!read_at(c.file.get(), 8, text.data(), header_bytes)) return fail(TACQ_ERROR_IO, "cannot read %s", path.c_str());
  Json header;
  std::string error;
  if (!parse_json(text.data(), text.size(), &header, &error)) return bad(path, "invalid safetensors header: " + error);
  if (!header.is_object()) return bad(path, "the safetensors header must be a JSON object");
  c.data_start = 8 + header_bytes;
  c.data_bytes = size - c.data_start;
  bool have_version = false;
  for (const auto& [name, entry] : header.members) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return bad(path, "__metadata__ must be an object");
      for (const auto& [key, value] : entry.members) {
        if (!value.is_string()) return bad(path, "__metadata__ values must be strings");
        if (key == "tacq_format_version") {
          if (value.string != "1") return bad(path, "tacq_format_version must be \"1\"");
          have_version = true;
        }
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    const Json* dtype = entry.find("dtype");
    const Json* shape = entry.find("shape");
    const Json* offsets = entry.find("data_offsets");
    if (!entry.is_object() || entry.members.size() != 3 || dtype == nullptr || !dtype->is_string() ||
        shape == nullptr || shape->type != Json::Type::kArray || offsets == nullptr ||
        offsets->type != Json::Type::kArray || offsets->items.size() != 2)
      return bad(path, where + ": needs exactly dtype, shape and data_offsets");
    TensorInfo t;
    t.dtype = dtype->string;
    uint64_t numel = 1;
    for (const Json& d : shape->items) {
      if (!d.is_int() || d.integer < 0) return bad(path, where + ": shape entries must be non-negative integers");
      const auto dim = static_cast<uint64_t>(d.integer);
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) return bad(path, where + ": shape too large");
      numel *= dim;
      t.shape.push_back(d.integer);
    }
    if (!offsets->items[0].is_int() || !offsets->items[1].is_int() || offsets->items[0].integer < 0 ||
        offsets->items[1].integer < offsets->items[0].integer ||
        static_cast<uint64_t>(offsets->items[1].integer) > c.data_bytes)
      return bad(path, where + ": data_offsets outside the file");
    t.begin = static_cast<uint64_t>(offsets->items[0].integer);
    t.end = static_cast<uint64_t>(offsets->items[1].integer);
    const uint64_t element = dtype_size(t.dtype);
    if (element != 0 && (numel > (uint64_t{1} << 62) / element || t.end - t.begin != numel * element))
      return bad(path, where + ": data_offsets do not match its dtype and shape");
    c.tensors[name] = std::move(t);
  }
  if (!have_version) return bad(path, "the safetensors metadata lacks tacq_format_version");
  return TACQ_OK;
}

// ---- one layer ----------------------------------------------------------------

// Reads and checks the tensors `<layer>.<tensor>` of one layer (or row split).
class TensorReader {
 public:
  TensorReader(tacq_checkpoint& c, const std::string& layer) : c_(c), layer_(layer) {}

  tacq_status fail_tensor(const char* tensor, const std::string& what) {
    return fail(TACQ_ERROR_BAD_CHECKPOINT, "%s: checkpoint layer '%s', tensor '%s': %s", c_.weights_path.c_str(),
                layer_.c_str(), tensor, what.c_str());
  }

  // Reads `<layer>.<tensor>` into out after checking its dtype and shape.
  tacq_status read(const char* tensor, const char* dtype, std::vector<int64_t> shape, AlignedBuffer* out) {
    const auto it = c_.tensors.find(layer_ + "." + tensor);
    if (it == c_.tensors.end()) return fail_tensor(tensor, "missing from the weights file");
    const TensorInfo& t = it->second;
    if (dtype != nullptr && t.dtype != dtype) return fail_tensor(tensor, "dtype must be " + std::string(dtype) + ", got " + t.dtype);
    if (t.shape != shape) {
      std::string want, got;
      for (int64_t d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
      for (int64_t d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
      return fail_tensor(tensor, "shape must be [" + want + "], got [" + got + "]");
    }
    const uint64_t bytes = t.end - t.begin;
    if (bytes > SIZE_MAX / 2 || !out->allocate(static_cast<size_t>(bytes)))
      return fail(TACQ_ERROR_OUT_OF_MEMORY, "out of memory reading %s.%s (%llu bytes)", layer_.c_str(), tensor,
                  static_cast<unsigned long long>(bytes));
    if (!read_at(c_.file.get(), c_.data_start + t.begin, out->get(), bytes))
      return fail(TACQ_ERROR_IO, "cannot read %s.%s from %s", layer_.c_str(), tensor, c_.weights_path.c_str());
    return TACQ_OK;
  }

  // Reads `<layer>.bias`, a float tensor [N], and its tacq_dtype.
  tacq_status read_bias(int64_t N, AlignedBuffer* out, int32_t* dtype) {
    const auto it = c_.tensors.find(layer_ + ".bias");
    if (it == c_.tensors.end()) return fail_tensor("bias", "missing from the weights file");
    const std::string& d = it->second.dtype;
    if (d == "F32") *dtype = TACQ_DTYPE_F32;
    else if (d == "F16") *dtype = TACQ_DTYPE_F16;
    else if (d == "BF16") *dtype = TACQ_DTYPE_BF16;
    else if (d == "F64") *dtype = TACQ_DTYPE_F64;
    else return fail_tensor("bias", "must be a float tensor, got " + d);
    return read("bias", nullptr, {N}, out);
  }

 private:
  tacq_checkpoint& c_;
  const std::string& layer_;
};

class LayerReader {
 public:
  LayerReader(tacq_checkpoint& c, const LayerSpec& s) : t_(c, s.name), s_(s) {}

  tacq_status fail_tensor(const char* tensor, const std::string& what) { return t_.fail_tensor(tensor, what); }
  tacq_status read(const char* tensor, const char* dtype, std::vector<int64_t> shape, AlignedBuffer* out) {
    return t_.read(tensor, dtype, std::move(shape), out);
  }

  tacq_status load(LoadedLayer* l) {
    const int64_t N = s_.N, K = s_.K, nnz = s_.nnz;
    const int bits = static_cast<int>(s_.bits);
    const int64_t G = (s_.group_size == -1 || s_.group_size == K) ? 1 : K / s_.group_size;
    tacq_status st;
    if ((st = read("packed", "I32", {N, packed_words_per_row(K, bits)}, &l->packed)) != TACQ_OK) return st;
    if ((st = read("scale", "F16", {N, G}, &l->scale)) != TACQ_OK) return st;
    if ((st = read("zero", "F16", {N, G}, &l->zero)) != TACQ_OK) return st;
    if ((st = read("row_ptr", "I32", {N + 1}, &l->row_ptr)) != TACQ_OK) return st;
    if ((st = read("col_idx", "I32", {nnz}, &l->col_idx)) != TACQ_OK) return st;
    if ((st = read("values", "F16", {nnz}, &l->values)) != TACQ_OK) return st;

    const auto* scale = l->scale.as<uint16_t>();
    const auto* zero = l->zero.as<uint16_t>();
    const float max_zero = static_cast<float>((1 << bits) - 1);
    for (int64_t i = 0; i < N * G; ++i) {
      const float s = half_to_float(scale[i]), z = half_to_float(zero[i]);
      if (!(std::isfinite(s) && s > 0.f)) return fail_tensor("scale", "every scale must be finite and > 0");
      if (!(z >= 0.f && z <= max_zero && z == std::nearbyint(z)))
        return fail_tensor("zero", "every zero must be an integer in [0, " + std::to_string(1 << bits) + " - 1]");
    }
    const auto* rp = l->row_ptr.as<int32_t>();
    const auto* ci = l->col_idx.as<int32_t>();
    const auto* values = l->values.as<uint16_t>();
    if (rp[0] != 0 || rp[N] != nnz)
      return fail_tensor("row_ptr", "must start at 0 and end at nnz = " + std::to_string(nnz) + ", got " +
                                        std::to_string(rp[0]) + " .. " + std::to_string(rp[N]));
    for (int64_t n = 0; n < N; ++n)
      if (rp[n] > rp[n + 1]) return fail_tensor("row_ptr", "must be non-decreasing; row " + std::to_string(n) + " has a negative count");
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t i = rp[n]; i < rp[n + 1]; ++i) {
        if (ci[i] < 0 || ci[i] >= K)
          return fail_tensor("col_idx", "column index " + std::to_string(ci[i]) + " at position " + std::to_string(i) +
                                            " is outside [0, " + std::to_string(K) + ")");
        if (i > rp[n] && ci[i] <= ci[i - 1])
          return fail_tensor("col_idx", "row " + std::to_string(n) + " is not strictly increasing (" +
                                            std::to_string(ci[i - 1]) + " then " + std::to_string(ci[i]) + ")");
      }
    }
    for (int64_t i = 0; i < nnz; ++i)
      if (!std::isfinite(half_to_float(values[i]))) return fail_tensor("values", "every kept weight must be finite");

    int32_t bias_dtype = TACQ_DTYPE_F32;
    if (s_.bias && (st = t_.read_bias(N, &l->bias, &bias_dtype)) != TACQ_OK) return st;

    l->name = s_.name;
    tacq_layer& v = l->view;
    v.name = l->name.c_str();
    v.weights.N = N;
    v.weights.K = K;
    v.weights.bits = bits;
    v.weights.scale_dtype = TACQ_DTYPE_F16;
    v.weights.group_size = s_.group_size;
    v.weights.packed = l->packed.as<int32_t>();
    v.weights.scale = l->scale.get();
    v.weights.zero = l->zero.get();
    v.weights.nnz = nnz;
    v.weights.row_ptr = rp;
    v.weights.col_idx = ci;
    v.weights.values = values;
    v.has_bias = s_.bias ? 1 : 0;
    v.bias_dtype = bias_dtype;
    v.bias = s_.bias ? l->bias.get() : nullptr;
    return TACQ_OK;
  }

 private:
  TensorReader t_;
  const LayerSpec& s_;
};

// row_bits uint8 [N]: every entry a part's width, each part given exactly its rows.
tacq_status load_row_split(tacq_checkpoint& c, const RowSplitSpec& s, LoadedRowSplit* l) {
  TensorReader t(c, s.name);
  tacq_status st;
  if ((st = t.read("row_bits", "U8", {s.N}, &l->row_bits)) != TACQ_OK) return st;
  const auto* row_bits = l->row_bits.as<uint8_t>();
  std::vector<int64_t> rows(s.parts.size(), 0);
  for (int64_t n = 0; n < s.N; ++n) {
    size_t p = 0;
    while (p < s.part_bits.size() && s.part_bits[p] != row_bits[n]) ++p;
    if (p == s.part_bits.size())
      return t.fail_tensor("row_bits", "row " + std::to_string(n) + " has width " + std::to_string(row_bits[n]) +
                                           ", which no part stores");
    ++rows[p];
  }
  for (size_t p = 0; p < s.parts.size(); ++p)
    if (rows[p] != s.part_rows[p])
      return t.fail_tensor("row_bits", "gives " + std::to_string(rows[p]) + " rows " +
                                           std::to_string(s.part_bits[p]) + " bits, the part '" + s.parts[p] +
                                           "' holds " + std::to_string(s.part_rows[p]));
  int32_t bias_dtype = TACQ_DTYPE_F32;
  if (s.bias && (st = t.read_bias(s.N, &l->bias, &bias_dtype)) != TACQ_OK) return st;
  l->name = s.name;
  for (const std::string& part : s.parts) l->part_names.push_back(part.c_str());
  tacq_row_split& v = l->view;
  v.name = l->name.c_str();
  v.N = s.N;
  v.K = s.K;
  v.num_parts = static_cast<int32_t>(s.parts.size());
  v.has_bias = s.bias ? 1 : 0;
  v.parts = l->part_names.data();
  v.row_bits = row_bits;
  v.bias_dtype = bias_dtype;
  v.reserved = 0;
  v.bias = s.bias ? l->bias.get() : nullptr;
  return TACQ_OK;
}

// The name of entry `index` of `specs` (layers or row splits), for
// tacq_checkpoint_layer_name and tacq_checkpoint_row_split_name (`fn`).
template <typename Spec>
tacq_status name_at(const std::vector<Spec>& specs, int64_t index, const char** name, const char* fn) {
  if (index < 0 || index >= static_cast<int64_t>(specs.size()))
    return fail(TACQ_ERROR_NOT_FOUND, "%s: index %lld outside [0, %lld)", fn, static_cast<long long>(index),
                static_cast<long long>(specs.size()));
  *name = specs[static_cast<size_t>(index)].name.c_str();
  return TACQ_OK;
}

// The read behind tacq_checkpoint_layer and tacq_checkpoint_row_split (`fn`):
// the entry `name` of `index` (a `what`), read by load(position, &entry) the
// first time, under the checkpoint's lock, and kept in `loaded`; its view
// copied to *out. A failed read is not kept, so it fails again the next time.
template <typename Loaded, typename View, typename Load>
tacq_status cached_read(tacq_checkpoint& c, const char* name, const std::map<std::string, size_t>& index,
                        std::map<std::string, std::unique_ptr<Loaded>>& loaded, Load load, View* out,
                        const char* fn, const char* what) {
  const auto it = index.find(name);
  if (it == index.end()) return fail(TACQ_ERROR_NOT_FOUND, "%s: no %s named '%s'", fn, what, name);
  std::lock_guard<std::mutex> lock(c.mutex);
  auto& slot = loaded[name];
  if (!slot) {
    auto entry = std::make_unique<Loaded>();
    const tacq_status st = load(it->second, entry.get());
    if (st != TACQ_OK) {
      loaded.erase(name);
      return st;
    }
    slot = std::move(entry);
  }
  *out = slot->view;
  return TACQ_OK;
}

bool little_endian() {
  const uint32_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

}  // namespace
}  // namespace tacq::host

extern "C" {

tacq_status tacq_checkpoint_open(const char* dir, tacq_checkpoint** out) {
  using namespace tacq::host;
  return guarded([&]() -> tacq_status {
    if (out == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_open: out is NULL");
    *out = nullptr;
    if (dir == nullptr) return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_open: dir is NULL");
    if (!little_endian()) return fail(TACQ_ERROR_INTERNAL, "the checkpoint reader needs a little-endian CPU");
    auto c = std::make_unique<tacq_checkpoint>();
    c->dir = dir;
    c->weights_path = c->dir + "/model.safetensors";
    uint64_t weights_bytes = 0;
    std::string weights_sha;
    tacq_status st = read_config(*c, &weights_bytes, &weights_sha);
    if (st != TACQ_OK) return st;
    c->file.reset(std::fopen(c->weights_path.c_str(), "rb"));
    if (!c->file) return fail(TACQ_ERROR_IO, "cannot open %s", c->weights_path.c_str());
    if ((st = check_weights_file(*c, weights_bytes, weights_sha)) != TACQ_OK) return st;
    if ((st = read_header(*c, weights_bytes)) != TACQ_OK) return st;
    *out = c.release();
    return TACQ_OK;
  });
}

void tacq_checkpoint_close(tacq_checkpoint* checkpoint) { delete checkpoint; }

tacq_status tacq_checkpoint_num_layers(const tacq_checkpoint* checkpoint, int64_t* count) {
  using namespace tacq::host;
  clear_error();
  if (checkpoint == nullptr || count == nullptr)
    return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_num_layers: checkpoint and count must not be NULL");
  *count = static_cast<int64_t>(checkpoint->layers.size());
  return TACQ_OK;
}

tacq_status tacq_checkpoint_layer_name(const tacq_checkpoint* checkpoint, int64_t index, const char** name) {
  using namespace tacq::host;
  clear_error();
  if (checkpoint == nullptr || name == nullptr)
    return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_layer_name: checkpoint and name must not be NULL");
  return name_at(checkpoint->layers, index, name, "tacq_checkpoint_layer_name");
}

tacq_status tacq_checkpoint_layer(tacq_checkpoint* checkpoint, const char* name, tacq_layer* out) {
  using namespace tacq::host;
  return guarded([&]() -> tacq_status {
    if (checkpoint == nullptr || name == nullptr || out == nullptr)
      return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_layer: checkpoint, name and out must not be NULL");
    const auto load = [&](size_t i, LoadedLayer* layer) {
      return LayerReader(*checkpoint, checkpoint->layers[i]).load(layer);
    };
    return cached_read(*checkpoint, name, checkpoint->layer_index, checkpoint->loaded, load, out,
                       "tacq_checkpoint_layer", "quantized layer");
  });
}

tacq_status tacq_checkpoint_num_row_splits(const tacq_checkpoint* checkpoint, int64_t* count) {
  using namespace tacq::host;
  clear_error();
  if (checkpoint == nullptr || count == nullptr)
    return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_num_row_splits: checkpoint and count must not be NULL");
  *count = static_cast<int64_t>(checkpoint->splits.size());
  return TACQ_OK;
}

tacq_status tacq_checkpoint_row_split_name(const tacq_checkpoint* checkpoint, int64_t index, const char** name) {
  using namespace tacq::host;
  clear_error();
  if (checkpoint == nullptr || name == nullptr)
    return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_row_split_name: checkpoint and name must not be NULL");
  return name_at(checkpoint->splits, index, name, "tacq_checkpoint_row_split_name");
}

tacq_status tacq_checkpoint_row_split(tacq_checkpoint* checkpoint, const char* name, tacq_row_split* out) {
  using namespace tacq::host;
  return guarded([&]() -> tacq_status {
    if (checkpoint == nullptr || name == nullptr || out == nullptr)
      return fail(TACQ_ERROR_NULL_POINTER, "tacq_checkpoint_row_split: checkpoint, name and out must not be NULL");
    const auto load = [&](size_t i, LoadedRowSplit* split) {
      return load_row_split(*checkpoint, checkpoint->splits[i], split);
    };
    return cached_read(*checkpoint, name, checkpoint->split_index, checkpoint->loaded_splits, load, out,
                       "tacq_checkpoint_row_split", "row split");
  });
}

}  // extern "C"
