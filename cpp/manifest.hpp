// A minimal, bounded JSON reader (objects, arrays, strings, numbers, true/false/null) and the
// lookups daefr-trt-run needs in manifest.json, including the choice of engine. No
// third-party dependency and no TensorRT on purpose: the runner must build wherever TensorRT
// does, and everything here builds and is tested everywhere (cpp/manifest_test.cpp).
//
// Bounded: nesting deeper than kMaxDepth, files above kMaxBytes, integers outside int64 and
// anything outside JSON's grammar are one-line errors, never a crash or a wrapped value.
#pragma once

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sha256.hpp"

namespace daefr {

constexpr int kMaxDepth = 64;                          // manifest.json nests 4 deep
constexpr std::size_t kMaxBytes = std::size_t(64) << 20;  // 64 MiB

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string number_text;  // the number as written, to read integers exactly
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
    if (type != Type::Object) throw std::runtime_error("manifest: expected an object holding \"" + key + "\"");
    const Json* v = get(key);
    if (v == nullptr) throw std::runtime_error("manifest: missing key \"" + key + "\"");
    return *v;
  }
  // The number as an exact int64: fractions, exponents and out-of-range values are errors.
  std::int64_t as_int() const {
    if (type != Type::Number) throw std::runtime_error("manifest: expected a number");
    std::int64_t out = 0;
    const char* first = number_text.data();
    const char* last = first + number_text.size();
    const auto [end, ec] = std::from_chars(first, last, out);
    if (ec == std::errc::result_out_of_range)
      throw std::runtime_error("manifest: integer " + number_text + " is out of range (int64)");
    if (ec != std::errc() || end != last) throw std::runtime_error("manifest: expected an integer, got " + number_text);
    return out;
  }
  const std::string& as_string() const {
    if (type != Type::String) throw std::runtime_error("manifest: expected a string");
    return string;
  }
  const std::vector<Json>& as_array() const {
    if (type != Type::Array) throw std::runtime_error("manifest: expected an array");
    return array;
  }
  // true/false; a missing member (null) is false, as Python's bool(entry.get(...)).
  bool as_flag() const {
    if (type == Type::Null) return false;
    if (type != Type::Bool) throw std::runtime_error("manifest: expected true or false");
    return boolean;
  }
};

class JsonParser {
 public:
  explicit JsonParser(std::string text) : s_(std::move(text)) {}

  Json parse() {
    Json v = value(0);
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
  bool digit() const { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }

  Json value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    Json v;
    char c = peek();
    if (c == '{') {
      v.type = Json::Type::Object;
      ++i_;
      if (peek() == '}') return ++i_, v;
      for (;;) {
        if (peek() != '"') fail("expected a string key");
        std::string key = str();
        expect(':');
        v.object.emplace_back(std::move(key), value(depth + 1));
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
        v.array.push_back(value(depth + 1));
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
    return number();
  }

  // JSON's number grammar exactly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  Json number() {
    const std::size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (!digit()) fail("expected a value");
    if (s_[i_] == '0') ++i_;
    else while (digit()) ++i_;
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (!digit()) fail("expected digits after '.'");
      while (digit()) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digit()) fail("expected digits in the exponent");
      while (digit()) ++i_;
    }
    Json v;
    v.type = Json::Type::Number;
    v.number_text = s_.substr(start, i_ - start);
    errno = 0;
    v.number = std::strtod(v.number_text.c_str(), nullptr);
    if (errno == ERANGE && (v.number > 1.0 || v.number < -1.0)) fail("number " + v.number_text + " is out of range");
    return v;
  }

  int hex_digit(char c) const {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fail("bad \\u escape");
  }

  std::string str() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') { out += c; continue; }
      if (i_ >= s_.size()) fail("bad escape");
      char e = s_[i_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case '"': case '\\': case '/': out += e; break;
        case 'u': {  // manifest text is ASCII; keep other code points as '?'
          if (i_ + 4 > s_.size()) fail("bad \\u escape");
          unsigned code = 0;
          for (int k = 0; k < 4; ++k) code = code * 16 + static_cast<unsigned>(hex_digit(s_[i_ + k]));
          out += code < 0x80 ? static_cast<char>(code) : '?';
          i_ += 4;
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
    expect('"');
    return out;
  }
};

inline Json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::string text;
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(f.gcount()));
    if (text.size() > kMaxBytes)
      throw std::runtime_error(path + ": larger than " + std::to_string(kMaxBytes >> 20) + " MiB, not a manifest");
  }
  if (f.bad()) throw std::runtime_error(path + ": cannot read (a directory?)");
  try {
    return JsonParser(std::move(text)).parse();
  } catch (const std::runtime_error& err) {
    throw std::runtime_error(path + ": " + err.what());
  }
}

// The manifest's ONNX artifact entry for `graph` (first match), or nullptr.
inline const Json* find_artifact(const Json& manifest, const std::string& graph) {
  for (const Json& a : manifest.at("artifacts").as_array())
    if (a.at("graph").as_string() == graph) return &a;
  return nullptr;
}

// What the runner can run: the graph and build flags asked for, and this machine's TensorRT
// version (as Python's tensorrt.__version__, "major.minor.patch.build") and GPU.
struct EngineQuery {
  std::string graph = "daefr";
  bool fp16 = false;
  bool plugins = false;
  std::string tensorrt;            // e.g. "11.1.0.106"
  std::string compute_capability;  // e.g. "9.0"
};

struct SelectionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Member `key` as a flag; missing is false (Python: bool(entry.get(key))).
inline bool flag(const Json& entry, const std::string& key) {
  const Json* v = entry.get(key);
  return v != nullptr && v->as_flag();
}

constexpr const char* kManifestFormat = "daefr-export/1";  // export/manifest.py FORMAT

// The manifest entry of the engine that can run here, mirroring
// daefr.runtime.backends.trt_backend.select_engine: same graph and flags, same TensorRT
// version and compute capability, and a file whose sha256 matches; else SelectionError
// saying to rebuild.
inline const Json& select_engine(const Json& manifest, const std::string& dir, const EngineQuery& q) {
  const std::string where = dir + "/manifest.json";
  const std::string rebuild = "rebuild the engines with daefr-export into " + dir;
  const Json* format = manifest.get("format");
  if (format == nullptr || format->type != Json::Type::String || format->string != kManifestFormat)
    throw SelectionError(where + ": not a " + kManifestFormat + " manifest; " + rebuild);
  const std::string wanted = q.graph + " engine (fp16=" + (q.fp16 ? "true" : "false") +
                             ", plugins=" + (q.plugins ? "true" : "false") + ")";
  std::vector<const Json*> candidates;
  for (const Json& e : manifest.at("engines").as_array())
    if (e.at("graph").as_string() == q.graph && flag(e, "fp16") == q.fp16 && flag(e, "plugins") == q.plugins)
      candidates.push_back(&e);
  if (candidates.empty()) {
    const Json* why = manifest.get("engines_not_built");
    std::string said = why != nullptr && why->type == Json::Type::String ? " (export said: " + why->string + ")" : "";
    throw SelectionError(where + ": lists no " + wanted + said + "; " + rebuild);
  }
  const Json* entry = nullptr;
  for (const Json* e : candidates)
    if (e->at("tensorrt").as_string() == q.tensorrt && e->at("compute_capability").as_string() == q.compute_capability) {
      entry = e;
      break;
    }
  if (entry == nullptr) {
    const Json& e = *candidates.front();
    throw SelectionError(where + ": the " + wanted + " was built for TensorRT " + e.at("tensorrt").as_string() +
                         " on compute capability " + e.at("compute_capability").as_string() + "; this is TensorRT " +
                         q.tensorrt + " on " + q.compute_capability + "; " + rebuild);
  }
  const std::string& file = entry->at("file").as_string();
  if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
    throw SelectionError(where + ": engine file \"" + file + "\" is not a file name in " + dir + "; " + rebuild);
  const std::string path = dir + "/" + file;
  if (!std::ifstream(path, std::ios::binary)) throw SelectionError(where + ": lists " + file + ", which is missing; " + rebuild);
  if (sha256_file(path) != entry->at("sha256").as_string())
    throw SelectionError(path + ": does not match the sha256 in " + where + " (stale or foreign engine); " + rebuild);
  return *entry;
}

}  // namespace daefr
