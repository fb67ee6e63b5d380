#include "json.h"

#include <charconv>
#include <cstdio>
#include <cstring>

namespace tacq::host {

const Json* Json::find(const std::string& key) const {
  if (type != Type::kObject) return nullptr;
  for (const auto& m : members)
    if (m.first == key) return &m.second;
  return nullptr;
}

namespace {

class Parser {
 public:
  Parser(const char* data, size_t size) : p_(data), begin_(data), end_(data + size) {}

  bool parse(Json* out, std::string* error) {
    skip_space();
    bool ok = value(out, 0);
    if (ok) {
      skip_space();
      if (p_ != end_) ok = set_error("unexpected data after the JSON value");
    }
    if (!ok && error != nullptr) {
      char where[64];
      std::snprintf(where, sizeof where, " at byte %lld", static_cast<long long>(error_at_ - begin_));
      *error = message_ + where;
    }
    return ok;
  }

 private:
  const char* p_;
  const char* begin_;
  const char* end_;
  const char* error_at_ = nullptr;
  std::string message_;

  bool set_error(const char* message) {
    if (error_at_ == nullptr) {
      error_at_ = p_;
      message_ = message;
    }
    return false;
  }

  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return set_error("invalid literal");
    p_ += n;
    return true;
  }

  bool value(Json* out, int depth) {
    if (depth > kJsonMaxDepth) return set_error("JSON nested too deeply");
    if (p_ == end_) return set_error("unexpected end of JSON");
    switch (*p_) {
      case '{': return object(out, depth);
      case '[': return array(out, depth);
      case '"': out->type = Json::Type::kString; return string(&out->string);
      case 't': out->type = Json::Type::kBool; out->boolean = true; return literal("true");
      case 'f': out->type = Json::Type::kBool; out->boolean = false; return literal("false");
      case 'n': out->type = Json::Type::kNull; return literal("null");
      default: return number(out);
    }
  }

  bool object(Json* out, int depth) {
    out->type = Json::Type::kObject;
    ++p_;  // '{'
    skip_space();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      skip_space();
      if (p_ == end_ || *p_ != '"') return set_error("expected a string key");
      std::string key;
      if (!string(&key)) return false;
      if (out->find(key) != nullptr) return set_error("duplicate key in a JSON object");
      skip_space();
      if (p_ == end_ || *p_ != ':') return set_error("expected ':'");
      ++p_;
      skip_space();
      out->members.emplace_back(std::move(key), Json{});
      if (!value(&out->members.back().second, depth + 1)) return false;
      skip_space();
      if (p_ == end_) return set_error("unterminated object");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        return true;
      }
      return set_error("expected ',' or '}'");
    }
  }

  bool array(Json* out, int depth) {
    out->type = Json::Type::kArray;
    ++p_;  // '['
    skip_space();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      skip_space();
      out->items.emplace_back();
      if (!value(&out->items.back(), depth + 1)) return false;
      skip_space();
      if (p_ == end_) return set_error("unterminated array");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == ']') {
        ++p_;
        return true;
      }
      return set_error("expected ',' or ']'");
    }
  }

  static void append_utf8(std::string* s, uint32_t cp) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool hex4(uint32_t* out) {
    if (end_ - p_ < 4) return set_error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = p_[i];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else return set_error("invalid \\u escape");
    }
    p_ += 4;
    *out = v;
    return true;
  }

  // One UTF-8 encoded code point starting at p_ (a byte >= 0x80), copied to s.
  bool utf8_sequence(std::string* s) {
    const auto lead = static_cast<unsigned char>(*p_);
    int extra;
    uint32_t cp;
    if (lead >= 0xC2 && lead <= 0xDF) { extra = 1; cp = lead & 0x1F; }
    else if (lead >= 0xE0 && lead <= 0xEF) { extra = 2; cp = lead & 0x0F; }
    else if (lead >= 0xF0 && lead <= 0xF4) { extra = 3; cp = lead & 0x07; }
    else return set_error("invalid UTF-8 in a string");
    if (end_ - p_ <= extra) return set_error("truncated UTF-8 in a string");
    for (int i = 1; i <= extra; ++i) {
      const auto c = static_cast<unsigned char>(p_[i]);
      if ((c & 0xC0) != 0x80) return set_error("invalid UTF-8 in a string");
      cp = (cp << 6) | (c & 0x3F);
    }
    const uint32_t min_cp = extra == 1 ? 0x80 : (extra == 2 ? 0x800 : 0x10000);
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return set_error("invalid UTF-8 in a string");
    s->append(p_, static_cast<size_t>(extra + 1));
    p_ += extra + 1;
    return true;
  }

  bool string(std::string* out) {
    ++p_;  // opening quote
    for (;;) {
      if (p_ == end_) return set_error("unterminated string");
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return set_error("control character in a string");
      if (c >= 0x80) {
        if (!utf8_sequence(out)) return false;
        continue;
      }
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++p_;
        continue;
      }
      ++p_;
      if (p_ == end_) return set_error("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(&cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return set_error("unpaired low surrogate");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low = 0;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return set_error("unpaired high surrogate");
            p_ += 2;
            if (!hex4(&low)) return false;
            if (low < 0xDC00 || low > 0xDFFF) return set_error("unpaired high surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: return set_error("invalid escape");
      }
    }
  }

  static bool digit(char c) { return c >= '0' && c <= '9'; }

  bool number(Json* out) {
    const char* start = p_;
    bool integral = true;
    if (p_ != end_ && *p_ == '-') ++p_;
    if (p_ == end_ || !digit(*p_)) return set_error("invalid value");
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    if (p_ != end_ && *p_ == '.') {
      integral = false;
      ++p_;
      if (p_ == end_ || !digit(*p_)) return set_error("invalid number");
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integral = false;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !digit(*p_)) return set_error("invalid number");
      while (p_ != end_ && digit(*p_)) ++p_;
    }
    out->type = Json::Type::kNumber;
    const auto d = std::from_chars(start, p_, out->number);
    if (d.ec == std::errc::result_out_of_range) {
      const char* save = p_;
      p_ = start;
      set_error("number out of range");
      p_ = save;
      return false;
    }
    if (integral) {
      const auto r = std::from_chars(start, p_, out->integer);
      out->is_integer = r.ec == std::errc() && r.ptr == p_;
    }
    return true;
  }
};

}  // namespace

bool parse_json(const char* data, size_t size, Json* out, std::string* error) {
  *out = Json{};
  if (data == nullptr && size != 0) {
    if (error != nullptr) *error = "no data";
    return false;
  }
  Parser parser(data, size);
  return parser.parse(out, error);
}

}  // namespace tacq::host
