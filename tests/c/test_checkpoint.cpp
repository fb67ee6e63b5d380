// ctest: the checkpoint reader (tacq_checkpoint_*) on checkpoints this test
// writes itself (docs/format.md): a good one, then truncated, corrupted and
// inconsistent ones, each of which must fail with a status, never crash
// (the sanitizer build runs this too). Also the JSON parser and SHA-256.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>

#include "../../csrc/host/json.h"
#include "../../csrc/host/sha256.h"
#include "test_util.h"

namespace {

using tacq::host::Json;

std::string g_root;

struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string sha256(const std::string& s) {
  tacq::host::Sha256 h;
  h.update(s.data(), s.size());
  return h.hex_digest();
}

struct Checkpoint {
  std::map<std::string, Tensor> tensors;  // written in name order
  std::string layers_json;                 // the "layers" object of tacq_config.json
  std::string metadata = R"({"format":"pt","tacq_format_version":"1"})";

  std::string header() const {
    std::string h = "{\"__metadata__\":" + metadata;
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
      std::string shape;
      for (int64_t d : t.shape) shape += (shape.empty() ? "" : ",") + std::to_string(d);
      h += ",\"" + name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[" + shape + "],\"data_offsets\":[" +
           std::to_string(offset) + "," + std::to_string(offset + t.bytes.size()) + "]}";
      offset += t.bytes.size();
    }
    h += "}";
    while (h.size() % 8) h += ' ';
    return h;
  }
  std::string file(const std::string& header_text) const {
    std::string out;
    const uint64_t n = header_text.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
    out += header_text;
    for (const auto& kv : tensors) out += kv.second.bytes;
    return out;
  }
  std::string file() const { return file(header()); }
};

// `extra`: more members of tacq_config.json, each with a leading comma.
std::string config_for(const std::string& weights, const std::string& layers_json, int version = 1,
                       const std::string& extra = "") {
  return "{\"format_version\": " + std::to_string(version) + ", \"library_version\": \"0.1.0\", \"bits\": 3,"
         " \"weights_bytes\": " + std::to_string(weights.size()) + ", \"weights_sha256\": \"" + sha256(weights) +
         "\", \"layers\": " + layers_json + extra + ", \"report\": null}";
}

int g_dirs = 0;
std::string write_dir(const std::string& weights, const std::string& config) {
  const std::string dir = g_root + "/c" + std::to_string(g_dirs++);
  mkdir(dir.c_str(), 0755);
  auto put = [](const std::string& path, const std::string& data) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) std::abort();
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
  };
  if (!weights.empty() || config != "-") put(dir + "/model.safetensors", weights);
  if (config != "-") put(dir + "/tacq_config.json", config);
  return dir;
}

// A consistent directory (config matching the weights file) for `weights`.
std::string consistent(const std::string& weights, const std::string& layers_json) {
  return write_dir(weights, config_for(weights, layers_json));
}

struct Built {
  Checkpoint ck;
  Layer a, b;
  std::vector<float> bias;
};

// Two layers: "m.a" 3-bit, groups of 32, with an fp32 bias; "m.b" 2-bit, whole rows.
Built build(std::mt19937& rng) {
  Built B;
  B.a = random_layer(rng, 5, 64, 3, 32, true, 0.1);
  B.b = random_layer(rng, 3, 45, 2, -1, true, 0.05);
  for (int i = 0; i < 5; ++i) B.bias.push_back(0.5f * i);
  auto add = [&](const std::string& name, const Layer& L) {
    B.ck.tensors[name + ".packed"] = {"I32", {L.N, ref_words_per_row(L.K, L.bits)}, raw(L.packed)};
    B.ck.tensors[name + ".scale"] = {"F16", {L.N, L.G()}, raw(L.scale16)};
    B.ck.tensors[name + ".zero"] = {"F16", {L.N, L.G()}, raw(L.zero16)};
    B.ck.tensors[name + ".row_ptr"] = {"I32", {L.N + 1}, raw(L.row_ptr)};
    B.ck.tensors[name + ".col_idx"] = {"I32", {static_cast<int64_t>(L.col_idx.size())}, raw(L.col_idx)};
    B.ck.tensors[name + ".values"] = {"F16", {static_cast<int64_t>(L.values.size())}, raw(L.values)};
  };
  add("m.a", B.a);
  add("m.b", B.b);
  B.ck.tensors["m.a.bias"] = {"F32", {5}, raw(B.bias)};
  B.ck.tensors["m.embed.weight"] = {"BF16", {4, 8}, std::string(64, '\0')};
  B.ck.layers_json = "{\"m.a\": {\"in_features\": 64, \"out_features\": 5, \"bits\": 3, \"group_size\": 32, \"nnz\": " +
                     std::to_string(B.a.col_idx.size()) + ", \"bias\": true, \"avg_bits\": 3.5},"
                     " \"m.b\": {\"in_features\": 45, \"out_features\": 3, \"bits\": 2, \"group_size\": -1, \"nnz\": " +
                     std::to_string(B.b.col_idx.size()) + ", \"bias\": false, \"avg_bits\": 2.5}}";
  return B;
}

// Opens dir and reads every layer, running mixed_gemv on those that load.
// Returns the first failing status (TACQ_OK if all worked).
tacq_status open_all(const std::string& dir) {
  tacq_checkpoint* c = nullptr;
  tacq_status s = tacq_checkpoint_open(dir.c_str(), &c);
  if (s != TACQ_OK) {
    CHECK(c == nullptr);
    CHECK(tacq_last_error()[0] != '\0');
    return s;
  }
  int64_t count = 0;
  CHECK_STATUS(tacq_checkpoint_num_layers(c, &count), TACQ_OK);
  tacq_status first = TACQ_OK;
  for (int64_t i = 0; i < count; ++i) {
    const char* name = nullptr;
    CHECK_STATUS(tacq_checkpoint_layer_name(c, i, &name), TACQ_OK);
    tacq_layer layer;
    s = tacq_checkpoint_layer(c, name, &layer);
    if (s != TACQ_OK) {
      if (first == TACQ_OK) first = s;
      continue;
    }
    std::vector<float> x(static_cast<size_t>(layer.weights.K), 0.25f), y(static_cast<size_t>(layer.weights.N));
    CHECK_STATUS(tacq_mixed_gemv_f32(&layer.weights, x.data(), 1, y.data(), 1), TACQ_OK);
  }
  tacq_checkpoint_close(c);
  return first;
}

void test_json() {
  Json j;
  std::string err;
  const std::string ok = R"( {"a": [1, -2, 3.5, 1e3, 0, -0.0, 9223372036854775807], "b": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00",
                             "c": {"d": null, "e": true, "f": false}, "g": [], "h": {}, "é": "ü"} )";
  CHECK(tacq::host::parse_json(ok.data(), ok.size(), &j, &err));
  CHECK(j.is_object() && j.members.size() == 6);
  const Json* a = j.find("a");
  CHECK(a && a->items.size() == 7 && a->items[0].is_int() && a->items[1].integer == -2 && !a->items[2].is_int() &&
        a->items[2].number == 3.5 && !a->items[3].is_int() && a->items[6].integer == INT64_MAX);
  const Json* b = j.find("b");
  CHECK(b && b->string == "x\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80");
  const Json* big = nullptr;
  const std::string big_text = "[92233720368547758070]";
  CHECK(tacq::host::parse_json(big_text.data(), big_text.size(), &j, &err));
  big = &j.items[0];
  CHECK(!big->is_int());
  for (const char* bad : {"", " ", "{", "}", "[1,]", "{\"a\":1,}", "[01]", "[1.]", "[.5]", "[-]", "[1e]", "[+1]",
                          "\"\x01\"", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\xC3\"", "\"\xFF\"",
                          "\"\xED\xA0\x80\"", "\"\xC0\xAF\"", "{\"a\":1,\"a\":2}", "[1] x", "tru", "nul", "[1e999]",
                          "{1:2}", "{\"a\" 1}", "[1 2]", "\"abc", "NaN", "[Infinity]"}) {
    CHECK(!tacq::host::parse_json(bad, std::strlen(bad), &j, &err));
    CHECK(!err.empty());
  }
  // Nesting beyond the bound fails cleanly instead of overflowing the stack.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK(!tacq::host::parse_json(deep.data(), deep.size(), &j, &err));
  const std::string ok_deep = std::string(60, '[') + std::string(60, ']');
  CHECK(tacq::host::parse_json(ok_deep.data(), ok_deep.size(), &j, &err));
}

void test_sha256() {
  CHECK(sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  tacq::host::Sha256 h;  // a million 'a', fed in uneven pieces
  const std::string piece(997, 'a');
  size_t fed = 0;
  while (fed + piece.size() <= 1000000) { h.update(piece.data(), piece.size()); fed += piece.size(); }
  h.update(piece.data(), 1000000 - fed);
  CHECK(h.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

void test_good_checkpoint(const Built& B) {
  const std::string weights = B.ck.file();
  const std::string dir = consistent(weights, B.ck.layers_json);
  tacq_checkpoint* c = nullptr;
  CHECK_STATUS(tacq_checkpoint_open(dir.c_str(), &c), TACQ_OK);
  if (c == nullptr) return;
  int64_t count = -1;
  CHECK_STATUS(tacq_checkpoint_num_layers(c, &count), TACQ_OK);
  CHECK(count == 2);
  const char* name = nullptr;
  CHECK_STATUS(tacq_checkpoint_layer_name(c, 0, &name), TACQ_OK);
  CHECK(name && std::string(name) == "m.a");
  CHECK_STATUS(tacq_checkpoint_layer_name(c, 1, &name), TACQ_OK);
  CHECK(name && std::string(name) == "m.b");
  CHECK_STATUS(tacq_checkpoint_layer_name(c, 2, &name), TACQ_ERROR_NOT_FOUND);
  CHECK_STATUS(tacq_checkpoint_layer_name(c, -1, &name), TACQ_ERROR_NOT_FOUND);
  CHECK_STATUS(tacq_checkpoint_layer_name(nullptr, 0, &name), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_layer_name(c, 0, nullptr), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_num_layers(nullptr, &count), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_num_layers(c, nullptr), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_num_row_splits(c, &count), TACQ_OK);
  CHECK(count == 0);  // a checkpoint without "row_splits"
  tacq_layer layer;
  CHECK_STATUS(tacq_checkpoint_layer(c, "m.nope", &layer), TACQ_ERROR_NOT_FOUND);
  CHECK_STATUS(tacq_checkpoint_layer(c, "m.embed", &layer), TACQ_ERROR_NOT_FOUND);
  CHECK_STATUS(tacq_checkpoint_layer(nullptr, "m.a", &layer), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_layer(c, nullptr, &layer), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_layer(c, "m.a", nullptr), TACQ_ERROR_NULL_POINTER);
  for (int pass = 0; pass < 2; ++pass) {  // the second lookup returns the cached layer
    for (const Layer* L : {&B.a, &B.b}) {
      const char* lname = L == &B.a ? "m.a" : "m.b";
      CHECK_STATUS(tacq_checkpoint_layer(c, lname, &layer), TACQ_OK);
      const tacq_weights& w = layer.weights;
      CHECK(std::string(layer.name) == lname);
      CHECK(w.N == L->N && w.K == L->K && w.bits == L->bits && w.group_size == L->group_size);
      CHECK(w.scale_dtype == TACQ_DTYPE_F16 && w.nnz == static_cast<int64_t>(L->col_idx.size()));
      CHECK(reinterpret_cast<uintptr_t>(w.packed) % 64 == 0);
      CHECK(std::memcmp(w.packed, L->packed.data(), L->packed.size() * 4) == 0);
      CHECK(std::memcmp(w.scale, L->scale16.data(), L->scale16.size() * 2) == 0);
      CHECK(std::memcmp(w.row_ptr, L->row_ptr.data(), L->row_ptr.size() * 4) == 0);
      CHECK(layer.has_bias == (L == &B.a));
      if (L == &B.a) {
        CHECK(layer.bias_dtype == TACQ_DTYPE_F32 && std::memcmp(layer.bias, B.bias.data(), 20) == 0);
      } else {
        CHECK(layer.bias == nullptr);
      }
      std::vector<float> x(static_cast<size_t>(w.K));
      for (int64_t k = 0; k < w.K; ++k) x[k] = std::sin(static_cast<float>(k));
      std::vector<float> y(static_cast<size_t>(w.N));
      CHECK_STATUS(tacq_mixed_gemv_f32(&w, x.data(), 1, y.data(), 0), TACQ_OK);
      std::vector<double> ref, mag;
      ref_gemv(*L, x, 1, &ref, &mag);
      bool ok = true;
      for (size_t i = 0; i < y.size(); ++i) ok &= std::fabs(y[i] - ref[i]) <= 1e-5 * mag[i] + 1e-6;
      CHECK(ok);
    }
  }
  tacq_checkpoint_close(c);
  tacq_checkpoint_close(nullptr);
}

void test_bad_directories(const Built& B) {
  const std::string weights = B.ck.file();
  tacq_checkpoint* c = reinterpret_cast<tacq_checkpoint*>(&g_dirs);  // must be reset to NULL
  CHECK_STATUS(tacq_checkpoint_open(nullptr, &c), TACQ_ERROR_NULL_POINTER);
  CHECK(c == nullptr);
  CHECK_STATUS(tacq_checkpoint_open(g_root.c_str(), nullptr), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_open((g_root + "/missing").c_str(), &c), TACQ_ERROR_IO);
  CHECK(open_all(write_dir(weights, "-")) == TACQ_ERROR_IO);                        // no config
  CHECK(open_all(write_dir("", config_for(weights, B.ck.layers_json))) != TACQ_OK);  // empty weights file
  {
    const std::string dir = write_dir(weights, config_for(weights, B.ck.layers_json));
    std::remove((dir + "/model.safetensors").c_str());
    CHECK(open_all(dir) == TACQ_ERROR_IO);
  }
  CHECK(open_all(consistent(weights, B.ck.layers_json)) == TACQ_OK);
}

void test_bad_configs(const Built& B) {
  const std::string w = B.ck.file();
  const std::string sha = sha256(w), bytes = std::to_string(w.size());
  auto config = [&](const std::string& body) { return open_all(write_dir(w, body)); };
  const std::string head = "{\"format_version\": 1, \"weights_bytes\": " + bytes + ", \"weights_sha256\": \"" + sha + "\", ";
  CHECK(config(head + "\"layers\": " + B.ck.layers_json + "}") == TACQ_OK);
  CHECK(config("") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(config("[]") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(config(head + "\"layers\": " + B.ck.layers_json) == TACQ_ERROR_BAD_CHECKPOINT);  // truncated JSON
  CHECK(config(config_for(w, B.ck.layers_json, 2)) == TACQ_ERROR_BAD_CHECKPOINT);          // format 2
  CHECK(config("{\"format_version\": 1, \"weights_bytes\": " + bytes + ", \"layers\": {}}") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(config("{\"format_version\": 1, \"weights_bytes\": " + std::to_string(w.size() + 1) + ", \"weights_sha256\": \"" +
               sha + "\", \"layers\": {}}") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(config(head + "\"layers\": []}") == TACQ_ERROR_BAD_CHECKPOINT);
  const std::string spec_ok = "\"in_features\": 64, \"out_features\": 5, \"group_size\": 32, \"nnz\": " +
                              std::to_string(B.a.col_idx.size());
  auto layer = [&](const std::string& fields) { return config(head + "\"layers\": {\"m.a\": {" + fields + "}}}"); };
  CHECK(layer(spec_ok + ", \"bits\": 3, \"bias\": true") == TACQ_OK);
  CHECK(layer(spec_ok + ", \"bits\": 5, \"bias\": true") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer(spec_ok + ", \"bits\": 3.0, \"bias\": true") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer(spec_ok + ", \"bits\": true, \"bias\": true") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer(spec_ok + ", \"bits\": 3, \"bias\": 1") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer(spec_ok + ", \"bits\": 3") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer("\"in_features\": 64, \"out_features\": 5, \"group_size\": 48, \"nnz\": 0, \"bits\": 3, \"bias\": false") ==
        TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer("\"in_features\": 64, \"out_features\": 5, \"group_size\": 32, \"nnz\": -1, \"bits\": 3, \"bias\": false") ==
        TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer("\"in_features\": 0, \"out_features\": 5, \"group_size\": -1, \"nnz\": 0, \"bits\": 3, \"bias\": false") ==
        TACQ_ERROR_BAD_CHECKPOINT);
  // Spec and tensors disagree: caught when the layer is read.
  CHECK(layer("\"in_features\": 96, \"out_features\": 5, \"group_size\": 32, \"nnz\": 3, \"bits\": 3, \"bias\": false") ==
        TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer(spec_ok + ", \"bits\": 4, \"bias\": false") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(layer("\"in_features\": 64, \"out_features\": 5, \"group_size\": 32, \"nnz\": 0, \"bits\": 3, \"bias\": false") ==
        TACQ_ERROR_BAD_CHECKPOINT);
}

void test_truncated_and_corrupted_files(const Built& B) {
  const std::string w = B.ck.file();
  // The config describes the full file: any shorter file fails the size check.
  for (size_t len : {size_t{0}, size_t{4}, size_t{8}, size_t{100}, w.size() / 2, w.size() - 1})
    CHECK(open_all(write_dir(w.substr(0, len), config_for(w, B.ck.layers_json))) == TACQ_ERROR_BAD_CHECKPOINT);
  // One flipped byte: the sha256 check.
  std::string flipped = w;
  flipped[w.size() - 3] ^= 0x40;
  CHECK(open_all(write_dir(flipped, config_for(w, B.ck.layers_json))) == TACQ_ERROR_BAD_CHECKPOINT);
  // Truncated with a config that matches the truncated file: the safetensors checks.
  for (size_t len = 0; len < w.size(); len += (len < 16 ? 1 : 37))
    CHECK(open_all(consistent(w.substr(0, len), B.ck.layers_json)) == TACQ_ERROR_BAD_CHECKPOINT);
  // Header corruptions, each with a consistent config.
  const std::string h = B.ck.header();
  auto with_header = [&](const std::string& header_text) { return open_all(consistent(B.ck.file(header_text), B.ck.layers_json)); };
  CHECK(with_header(h) == TACQ_OK);
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = h;
    const size_t at = s.find(from);
    CHECK(at != std::string::npos);
    if (at != std::string::npos) s.replace(at, from.size(), to);
    return s;
  };
  CHECK(with_header("[]      ") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header("{}      ") == TACQ_ERROR_BAD_CHECKPOINT);  // no tacq_format_version
  CHECK(with_header(h.substr(0, h.size() / 2)) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"tacq_format_version\":\"1\"", "\"tacq_format_version\":\"2\"")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"format\":\"pt\"", "\"format\":7")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"m.a.packed\":{\"dtype\":\"I32\"", "\"m.a.packed\":{\"dtype\":\"F32\"")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"m.a.packed\":{\"dtype\":\"I32\",\"shape\":[5,6]", "\"m.a.packed\":{\"dtype\":\"I32\",\"shape\":[6,5]")) ==
        TACQ_ERROR_BAD_CHECKPOINT);  // right size, wrong shape: caught on reading the layer
  CHECK(with_header(replaced("\"shape\":[5,6]", "\"shape\":[5,7]")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"shape\":[5,6]", "\"shape\":[5,-6]")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"shape\":[5,6]", "\"shape\":[5,6.0]")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"shape\":[5,6]", "\"shape\":[4611686018427387904,4611686018427387904]")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"data_offsets\":[0,", "\"data_offsets\":[99999999,")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"data_offsets\":[0,", "\"data_offsets\":[-4,")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"data_offsets\":[0,", "\"data_offsets\":[0,1,")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"m.a.values\"", "\"m.a.valuez\"")) == TACQ_ERROR_BAD_CHECKPOINT);  // missing tensor
  CHECK(with_header(replaced("\"m.a.bias\"", "\"m.a.biaz\"")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"m.a.bias\":{\"dtype\":\"F32\"", "\"m.a.bias\":{\"dtype\":\"I32\"")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with_header(replaced("\"m.b.packed\"", "\"m.a.packed\"")) == TACQ_ERROR_BAD_CHECKPOINT);  // duplicate key
  CHECK(with_header(replaced("\"dtype\":\"BF16\"", "\"dtype\":\"F8_E4M3\"")) == TACQ_ERROR_BAD_CHECKPOINT);  // size mismatch
  CHECK(with_header(replaced("{\"__metadata__\"", std::string(5000, '[') + "{\"__metadata__\"")) == TACQ_ERROR_BAD_CHECKPOINT);
  {  // header length field beyond the file, and absurdly large
    for (uint64_t n : {uint64_t{w.size()}, uint64_t{1} << 40, ~uint64_t{0}}) {
      std::string bad = w;
      for (int i = 0; i < 8; ++i) bad[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
      CHECK(open_all(consistent(bad, B.ck.layers_json)) == TACQ_ERROR_BAD_CHECKPOINT);
    }
  }
}

// Layer content that the Python loader rejects, in otherwise consistent files.
void test_bad_content(const Built& B) {
  auto with = [&](const char* tensor, auto mutate) {
    Checkpoint ck = B.ck;
    std::string& bytes = ck.tensors[tensor].bytes;
    mutate(bytes);
    return open_all(consistent(ck.file(), ck.layers_json));
  };
  auto set16 = [](size_t i, uint16_t v) { return [=](std::string& s) { std::memcpy(&s[2 * i], &v, 2); }; };
  auto set32 = [](size_t i, int32_t v) { return [=](std::string& s) { std::memcpy(&s[4 * i], &v, 4); }; };
  CHECK(with("m.a.scale", set16(3, 0x0000)) == TACQ_ERROR_BAD_CHECKPOINT);  // 0
  CHECK(with("m.a.scale", set16(3, 0xBC00)) == TACQ_ERROR_BAD_CHECKPOINT);  // -1
  CHECK(with("m.a.scale", set16(3, 0x7C00)) == TACQ_ERROR_BAD_CHECKPOINT);  // inf
  CHECK(with("m.a.scale", set16(3, 0x7E00)) == TACQ_ERROR_BAD_CHECKPOINT);  // NaN
  CHECK(with("m.a.scale", set16(3, 0x0001)) == TACQ_OK);                    // tiny but positive
  CHECK(with("m.a.zero", set16(1, 0x4800)) == TACQ_ERROR_BAD_CHECKPOINT);   // 8 > 2^3 - 1
  CHECK(with("m.a.zero", set16(1, 0x3E00)) == TACQ_ERROR_BAD_CHECKPOINT);   // 1.5
  CHECK(with("m.a.zero", set16(1, 0xBC00)) == TACQ_ERROR_BAD_CHECKPOINT);   // -1
  CHECK(with("m.a.zero", set16(1, 0x4700)) == TACQ_OK);                     // 7
  CHECK(with("m.a.values", set16(0, 0xFC00)) == TACQ_ERROR_BAD_CHECKPOINT); // -inf
  CHECK(with("m.a.row_ptr", set32(0, 1)) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with("m.a.row_ptr", set32(5, 0)) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with("m.a.row_ptr", set32(2, -7)) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with("m.a.row_ptr", set32(2, INT32_MAX)) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with("m.a.col_idx", set32(0, 64)) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(with("m.a.col_idx", set32(0, -1)) == TACQ_ERROR_BAD_CHECKPOINT);
  // Make row 0 hold two equal columns.
  Checkpoint ck = B.ck;
  {
    std::vector<int32_t> rp(B.a.row_ptr), ci(B.a.col_idx);
    if (rp[1] - rp[0] >= 2) {
      ci[1] = ci[0];
      ck.tensors["m.a.col_idx"].bytes = raw(ci);
      CHECK(open_all(consistent(ck.file(), ck.layers_json)) == TACQ_ERROR_BAD_CHECKPOINT);
    }
  }
}

// Random byte changes anywhere in the file, with a matching config: every
// outcome is a status (the sanitizer build checks memory safety).
void test_random_corruption(const Built& B, std::mt19937& rng) {
  const std::string w = B.ck.file();
  int failures = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::string bad = w;
    const int changes = 1 + iter % 4;
    for (int c = 0; c < changes; ++c) {
      // Mostly the header, where the structure lives.
      const size_t limit = iter % 3 == 0 ? bad.size() : std::min(bad.size(), B.ck.header().size() + 8);
      const size_t at = std::uniform_int_distribution<size_t>(0, limit - 1)(rng);
      bad[at] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
    }
    const tacq_status s = open_all(consistent(bad, B.ck.layers_json));
    if (s != TACQ_OK) ++failures;
    CHECK(s == TACQ_OK || s == TACQ_ERROR_BAD_CHECKPOINT);
  }
  CHECK(failures > 0);
}

}  // namespace

// A layer "m.s" of 5 rows split into a 2-bit part of 3 rows and a 3-bit part
// of 2 (docs/format.md, Row splits), row_bits [2, 3, 2, 3, 2], an fp32 bias.
struct BuiltSplit {
  Checkpoint ck;
  Layer two, three;
  std::vector<uint8_t> row_bits{2, 3, 2, 3, 2};
  std::vector<float> bias{1.f, 2.f, 3.f, 4.f, 5.f};
  std::string splits_json;
};

std::string part_json(const std::string& name, const Layer& L) {
  return "\"" + name + "\": {\"in_features\": " + std::to_string(L.K) + ", \"out_features\": " +
         std::to_string(L.N) + ", \"bits\": " + std::to_string(L.bits) + ", \"group_size\": -1, \"nnz\": " +
         std::to_string(L.col_idx.size()) + ", \"bias\": false, \"avg_bits\": 3.0}";
}

BuiltSplit build_split(std::mt19937& rng) {
  BuiltSplit B;
  B.two = random_layer(rng, 3, 32, 2, -1, true, 0.1);
  B.three = random_layer(rng, 2, 32, 3, -1, true, 0.1);
  auto add = [&](const std::string& name, const Layer& L) {
    B.ck.tensors[name + ".packed"] = {"I32", {L.N, ref_words_per_row(L.K, L.bits)}, raw(L.packed)};
    B.ck.tensors[name + ".scale"] = {"F16", {L.N, 1}, raw(L.scale16)};
    B.ck.tensors[name + ".zero"] = {"F16", {L.N, 1}, raw(L.zero16)};
    B.ck.tensors[name + ".row_ptr"] = {"I32", {L.N + 1}, raw(L.row_ptr)};
    B.ck.tensors[name + ".col_idx"] = {"I32", {static_cast<int64_t>(L.col_idx.size())}, raw(L.col_idx)};
    B.ck.tensors[name + ".values"] = {"F16", {static_cast<int64_t>(L.values.size())}, raw(L.values)};
  };
  add("m.s.parts.0", B.two);
  add("m.s.parts.1", B.three);
  B.ck.tensors["m.s.row_bits"] = {"U8", {5}, raw(B.row_bits)};
  B.ck.tensors["m.s.bias"] = {"F32", {5}, raw(B.bias)};
  B.ck.layers_json = "{" + part_json("m.s.parts.0", B.two) + ", " + part_json("m.s.parts.1", B.three) + "}";
  B.splits_json = R"(, "row_splits": {"m.s": {"in_features": 32, "out_features": 5, "bias": true,)"
                  R"( "parts": ["m.s.parts.0", "m.s.parts.1"], "avg_bits": 3.0}})";
  return B;
}

// Opens a split checkpoint and reads "m.s"; the first failing status.
tacq_status open_split(const Checkpoint& ck, const std::string& layers_json, const std::string& splits_json) {
  const std::string w = ck.file();
  tacq_checkpoint* c = nullptr;
  tacq_status s = tacq_checkpoint_open(write_dir(w, config_for(w, layers_json, 1, splits_json)).c_str(), &c);
  if (s != TACQ_OK) return s;
  tacq_row_split split;
  s = tacq_checkpoint_row_split(c, "m.s", &split);
  tacq_checkpoint_close(c);
  return s;
}

void test_row_splits(const BuiltSplit& B) {
  const std::string w = B.ck.file();
  tacq_checkpoint* c = nullptr;
  CHECK_STATUS(tacq_checkpoint_open(write_dir(w, config_for(w, B.ck.layers_json, 1, B.splits_json)).c_str(), &c),
               TACQ_OK);
  if (c == nullptr) return;
  int64_t count = -1;
  CHECK_STATUS(tacq_checkpoint_num_row_splits(c, &count), TACQ_OK);
  CHECK(count == 1);
  const char* name = nullptr;
  CHECK_STATUS(tacq_checkpoint_row_split_name(c, 0, &name), TACQ_OK);
  CHECK(name && std::string(name) == "m.s");
  CHECK_STATUS(tacq_checkpoint_row_split_name(c, 1, &name), TACQ_ERROR_NOT_FOUND);
  CHECK_STATUS(tacq_checkpoint_row_split_name(nullptr, 0, &name), TACQ_ERROR_NULL_POINTER);
  CHECK_STATUS(tacq_checkpoint_num_row_splits(c, nullptr), TACQ_ERROR_NULL_POINTER);
  tacq_row_split split;
  CHECK_STATUS(tacq_checkpoint_row_split(c, "m.s.parts.0", &split), TACQ_ERROR_NOT_FOUND);
  CHECK_STATUS(tacq_checkpoint_row_split(c, "m.s", nullptr), TACQ_ERROR_NULL_POINTER);
  for (int pass = 0; pass < 2; ++pass) {  // the second lookup returns the cached split
    CHECK_STATUS(tacq_checkpoint_row_split(c, "m.s", &split), TACQ_OK);
    CHECK(std::string(split.name) == "m.s" && split.N == 5 && split.K == 32 && split.num_parts == 2);
    CHECK(std::string(split.parts[0]) == "m.s.parts.0" && std::string(split.parts[1]) == "m.s.parts.1");
    CHECK(std::memcmp(split.row_bits, B.row_bits.data(), 5) == 0);
    CHECK(split.has_bias == 1 && split.bias_dtype == TACQ_DTYPE_F32 && std::memcmp(split.bias, B.bias.data(), 20) == 0);
  }
  // y of the whole layer from its parts' y and row_bits, against the reference rows in place
  std::vector<float> x(32);
  for (int k = 0; k < 32; ++k) x[k] = std::cos(static_cast<float>(k));
  std::vector<std::vector<float>> part_y(2);
  for (int p = 0; p < 2; ++p) {
    tacq_layer part;
    CHECK_STATUS(tacq_checkpoint_layer(c, split.parts[p], &part), TACQ_OK);
    part_y[p].resize(static_cast<size_t>(part.weights.N));
    CHECK_STATUS(tacq_mixed_gemv_f32(&part.weights, x.data(), 1, part_y[p].data(), 1), TACQ_OK);
  }
  std::vector<double> ref_two, ref_three, mag;
  ref_gemv(B.two, x, 1, &ref_two, &mag);
  ref_gemv(B.three, x, 1, &ref_three, &mag);
  size_t taken[2] = {0, 0};
  bool ok = true;
  for (int64_t n = 0; n < 5; ++n) {
    const int p = split.row_bits[n] == 2 ? 0 : 1;
    const double ref = (p == 0 ? ref_two : ref_three)[taken[p]];
    ok &= std::fabs(part_y[p][taken[p]++] - ref) <= 1e-5 * (1 + std::fabs(ref));
  }
  CHECK(ok && taken[0] == 3 && taken[1] == 2);
  tacq_checkpoint_close(c);

  // configs the reader refuses at open, and tensors it refuses when the split is read
  const std::string parts_ok = R"("parts": ["m.s.parts.0", "m.s.parts.1"])";
  auto splits = [](const std::string& body) { return R"(, "row_splits": {"m.s": {)" + body + "}}"; };
  const std::string sizes = R"("in_features": 32, "out_features": 5, "bias": true, )";
  CHECK(open_split(B.ck, B.ck.layers_json, splits(sizes + parts_ok)) == TACQ_OK);
  CHECK(open_split(B.ck, B.ck.layers_json, R"(, "row_splits": [])") == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(open_split(B.ck, B.ck.layers_json, splits(sizes + R"("parts": ["m.s.parts.1", "m.s.parts.0"])")) ==
        TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(open_split(B.ck, B.ck.layers_json, splits(sizes + R"("parts": ["m.s.parts.0"])")) ==
        TACQ_ERROR_BAD_CHECKPOINT);  // 3 rows, out_features 5
  CHECK(open_split(B.ck, B.ck.layers_json, splits(sizes + R"("parts": [])")) == TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(open_split(B.ck, B.ck.layers_json,
                   splits(R"("in_features": 32, "out_features": 6, "bias": true, )" + parts_ok)) ==
        TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(open_split(B.ck, B.ck.layers_json,
                   splits(R"("in_features": 64, "out_features": 5, "bias": true, )" + parts_ok)) ==
        TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(open_split(B.ck, B.ck.layers_json, splits(R"("in_features": 32, "out_features": 5, )" + parts_ok)) ==
        TACQ_ERROR_BAD_CHECKPOINT);
  CHECK(open_split(B.ck, "{" + part_json("m.s.parts.0", B.two) + "}", splits(sizes + parts_ok)) ==
        TACQ_ERROR_BAD_CHECKPOINT);  // a part that is not a layer
  Layer swapped = B.three;
  swapped.bits = 2;  // both parts 2-bit: widths not increasing
  CHECK(open_split(B.ck, "{" + part_json("m.s.parts.0", B.two) + ", " + part_json("m.s.parts.1", swapped) + "}",
                   splits(sizes + parts_ok)) == TACQ_ERROR_BAD_CHECKPOINT);
  auto with_row_bits = [&](const std::string& dtype, std::vector<uint8_t> bits) {
    Checkpoint ck = B.ck;
    ck.tensors["m.s.row_bits"] = {dtype, {static_cast<int64_t>(bits.size())}, raw(bits)};
    return open_split(ck, B.ck.layers_json, B.splits_json);
  };
  CHECK(with_row_bits("U8", {3, 2, 2, 3, 2}) == TACQ_OK);
  CHECK(with_row_bits("U8", {2, 3, 2, 3, 4}) == TACQ_ERROR_BAD_CHECKPOINT);  // no 4-bit part
  CHECK(with_row_bits("U8", {2, 2, 2, 3, 2}) == TACQ_ERROR_BAD_CHECKPOINT);  // 4 rows 2-bit, the part holds 3
  CHECK(with_row_bits("U8", {2, 3, 2, 3}) == TACQ_ERROR_BAD_CHECKPOINT);     // shape [4]
  CHECK(with_row_bits("I8", {2, 3, 2, 3, 2}) == TACQ_ERROR_BAD_CHECKPOINT);
  Checkpoint no_row_bits = B.ck;
  no_row_bits.tensors.erase("m.s.row_bits");
  CHECK(open_split(no_row_bits, B.ck.layers_json, B.splits_json) == TACQ_ERROR_BAD_CHECKPOINT);
  Checkpoint no_bias = B.ck;
  no_bias.tensors.erase("m.s.bias");
  CHECK(open_split(no_bias, B.ck.layers_json, B.splits_json) == TACQ_ERROR_BAD_CHECKPOINT);
}

int main() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/tacq_ckpt_test_XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return 2;
  g_root = pattern;
  std::mt19937 rng(42);
  test_json();
  test_sha256();
  const Built B = build(rng);
  test_good_checkpoint(B);
  test_bad_directories(B);
  test_bad_configs(B);
  test_truncated_and_corrupted_files(B);
  test_bad_content(B);
  test_random_corruption(B, rng);
  test_row_splits(build_split(rng));
  std::system(("rm -rf '" + g_root + "'").c_str());
  return finish("test_checkpoint");
}
