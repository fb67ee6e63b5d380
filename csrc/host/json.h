// A small, strict JSON parser (RFC 8259) for checkpoint headers and configs:
// bounded nesting, no duplicate keys, UTF-8 checked, numbers kept as int64
// when they are integers. Torch-free; used by checkpoint.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tacq::host {

struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  bool is_integer = false;  // a number written without fraction or exponent that fits int64
  int64_t integer = 0;
  double number = 0;
  std::string string;
  std::vector<Json> items;                            // array elements
  std::vector<std::pair<std::string, Json>> members;  // object members, in file order

  const Json* find(const std::string& key) const;  // object member or nullptr
  bool is_object() const { return type == Type::kObject; }
  bool is_string() const { return type == Type::kString; }
  bool is_int() const { return type == Type::kNumber && is_integer; }
};

constexpr int kJsonMaxDepth = 64;

// Parses exactly one value (whitespace around it allowed). On failure returns
// false and describes the problem and its byte offset in *error.
bool parse_json(const char* data, size_t size, Json* out, std::string* error);

}  // namespace tacq::host
