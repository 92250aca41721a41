// A minimal JSON reader (objects, arrays, strings, numbers, true/false/null) and the few
// lookups daefr-trt-run needs in manifest.json. No third-party dependency on purpose: the
// runner must build wherever TensorRT does.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace daefr {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  // Member `key` of an object, or nullptr.
  const Json* get(const std::string& key) const {
    for (const auto& kv : object)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  const Json& at(const std::string& key) const {
    const Json* v = get(key);
    if (v == nullptr) throw std::runtime_error("manifest: missing key \"" + key + "\"");
    return *v;
  }
  std::int64_t as_int() const {
    if (type != Type::Number) throw std::runtime_error("manifest: expected a number");
    return static_cast<std::int64_t>(number);
  }
  const std::string& as_string() const {
    if (type != Type::String) throw std::runtime_error("manifest: expected a string");
    return string;
  }
};

class JsonParser {
 public:
  explicit JsonParser(std::string text) : s_(std::move(text)) {}

  Json parse() {
    Json v = value();
    skip_ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  std::string s_;
  std::size_t i_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("manifest: invalid JSON at byte " + std::to_string(i_) + ": " + what);
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  char peek() {
    skip_ws();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  bool literal(const char* word) {
    std::string w(word);
    if (s_.compare(i_, w.size(), w) != 0) return false;
    i_ += w.size();
    return true;
  }

  Json value() {
    Json v;
    char c = peek();
    if (c == '{') {
      v.type = Json::Type::Object;
      ++i_;
      if (peek() == '}') return ++i_, v;
      for (;;) {
        std::string key = str();
        expect(':');
        v.object.emplace_back(std::move(key), value());
        if (peek() == ',') { ++i_; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.type = Json::Type::Array;
      ++i_;
      if (peek() == ']') return ++i_, v;
      for (;;) {
        v.array.push_back(value());
        if (peek() == ',') { ++i_; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.type = Json::Type::String;
      v.string = str();
      return v;
    }
    if (literal("true")) { v.type = Json::Type::Bool; v.boolean = true; return v; }
    if (literal("false")) { v.type = Json::Type::Bool; return v; }
    if (literal("null")) return v;
    std::size_t used = 0;
    try {
      v.number = std::stod(s_.substr(i_, 64), &used);
    } catch (const std::exception&) {
      fail("expected a value");
    }
    v.type = Json::Type::Number;
    i_ += used;
    return v;
  }

  std::string str() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c != '\\') { out += c; continue; }
      if (i_ >= s_.size()) fail("bad escape");
      char e = s_[i_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {  // manifest text is ASCII; keep other code points as '?'
          if (i_ + 4 > s_.size()) fail("bad \\u escape");
          unsigned code = static_cast<unsigned>(std::stoul(s_.substr(i_, 4), nullptr, 16));
          out += code < 0x80 ? static_cast<char>(code) : '?';
          i_ += 4;
          break;
        }
        default: out += e;  // \" \\ \/
      }
    }
    expect('"');
    return out;
  }
};

inline Json read_json_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::stringstream buf;
  buf << f.rdbuf();
  return JsonParser(buf.str()).parse();
}

// The manifest's engine entry for `graph`, or nullptr.
inline const Json* find_engine(const Json& manifest, const std::string& graph) {
  for (const Json& e : manifest.at("engines").array)
    if (e.at("graph").as_string() == graph) return &e;
  return nullptr;
}

// The manifest's ONNX artifact entry for `graph` (first match), or nullptr.
inline const Json* find_artifact(const Json& manifest, const std::string& graph) {
  for (const Json& a : manifest.at("artifacts").array)
    if (a.at("graph").as_string() == graph) return &a;
  return nullptr;
}

}  // namespace daefr
