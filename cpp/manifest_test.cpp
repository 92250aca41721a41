// daefr-manifest-test: unit tests of manifest.hpp and sha256.hpp (run by ctest and by
// tests/export/test_export_cmake.py). Needs no TensorRT: the engine choice daefr-trt-run makes
// is the header-only daefr::select_engine tested here. Exit 0 when every check passes.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>

#include "manifest.hpp"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::cerr << "FAIL " << what << "\n";
  }
}

// The error message of `fn`, or "" when it does not throw.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& err) {
    return err.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::string manifest(const std::string& sha, const std::string& trt = "11.1.0.106", const std::string& cc = "9.0",
                     const std::string& file = "daefr.0123.engine") {
  return std::string(R"({"format": "daefr-export/1", "engines_not_built": null, "engines": [)") +
         R"({"graph": "decoder", "file": "other.engine", "sha256": "00", "tensorrt": "11.1.0.106",)" +
         R"( "compute_capability": "9.0", "fp16": false, "plugins": false},)" +
         R"({"graph": "daefr", "file": ")" + file + R"(", "sha256": ")" + sha + R"(", "tensorrt": ")" + trt +
         R"(", "compute_capability": ")" + cc + R"(", "fp16": true, "plugins": false}]})";
}

void test_sha256() {
  daefr::Sha256 empty;
  check(empty.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256 of ''");
  daefr::Sha256 abc;
  abc.update(reinterpret_cast<const unsigned char*>("abc"), 3);
  check(abc.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256 of 'abc'");
  daefr::Sha256 two_blocks;  // 56 bytes: the padding spills into a second block
  const std::string text = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  two_blocks.update(reinterpret_cast<const unsigned char*>(text.data()), text.size());
  check(two_blocks.hex() == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "sha256, 2 blocks");
}

void test_bounded_json() {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  check(contains(error_of([&] { daefr::JsonParser(deep).parse(); }), "nesting deeper than 64 levels"), "deep JSON");
  const std::string ok_depth = std::string(64, '[') + std::string(64, ']');
  check(error_of([&] { daefr::JsonParser(ok_depth).parse(); }).empty(), "64 levels parse");
  const daefr::Json big = daefr::JsonParser(R"({"n": 99999999999999999999999, "m": -9223372036854775808})").parse();
  check(contains(error_of([&] { big.at("n").as_int(); }), "integer 99999999999999999999999 is out of range"),
        "huge integer");
  check(big.at("m").as_int() == INT64_MIN, "INT64_MIN itself reads exactly");
  const daefr::Json frac = daefr::JsonParser(R"({"r": 1.5, "e": 1e3})").parse();
  check(contains(error_of([&] { frac.at("r").as_int(); }), "expected an integer, got 1.5"), "fraction as int");
  check(contains(error_of([&] { frac.at("e").as_int(); }), "expected an integer"), "exponent as int");
  for (const char* bad : {"[01]", "[1.]", "[-]", "[inf]", "[nan]", "[0x10]", "[\"\\x\"]", "[\"\\u12g4\"]", "{1: 2}",
                          "[1e999]", "[\"a\tb\"]"})
    check(contains(error_of([&] { daefr::JsonParser(bad).parse(); }), "invalid JSON"), std::string("refuses ") + bad);
  check(daefr::JsonParser(R"(["\u0041\"\\\/"])").parse().array[0].string == "A\"\\/", "escapes");
}

void test_select_engine(const std::string& dir) {
  const std::string engine = dir + "/daefr.0123.engine";
  write(engine, "engine bytes");
  const std::string sha = daefr::sha256_file(engine);
  daefr::EngineQuery q;
  q.fp16 = true;
  q.tensorrt = "11.1.0.106";
  q.compute_capability = "9.0";
  auto select = [&](const std::string& text, const daefr::EngineQuery& query) {
    const daefr::Json m = daefr::JsonParser(text).parse();
    return daefr::select_engine(m, dir, query).at("file").as_string();
  };
  check(error_of([&] { check(select(manifest(sha), q) == "daefr.0123.engine", "selects the daefr engine"); }).empty(),
        "a matching entry is accepted");
  check(contains(error_of([&] { select(manifest(std::string(64, 'a')), q); }), "does not match the sha256"),
        "refuses a stale sha256");
  check(contains(error_of([&] { select(manifest(sha, "10.13.0.35"), q); }),
                 "built for TensorRT 10.13.0.35 on compute capability 9.0; this is TensorRT 11.1.0.106 on 9.0"),
        "refuses another TensorRT version");
  check(contains(error_of([&] { select(manifest(sha, "11.1.0.106", "8.0"), q); }),
                 "on compute capability 8.0; this is TensorRT 11.1.0.106 on 9.0"),
        "refuses another compute capability");
  daefr::EngineQuery fp32 = q;
  fp32.fp16 = false;
  check(contains(error_of([&] { select(manifest(sha), fp32); }), "lists no daefr engine (fp16=false, plugins=false)"),
        "refuses another precision");
  daefr::EngineQuery plugins = q;
  plugins.plugins = true;
  check(contains(error_of([&] { select(manifest(sha), plugins); }), "plugins=true"), "refuses another plugin flag");
  check(contains(error_of([&] { select(manifest(sha, "11.1.0.106", "9.0", "../daefr.0123.engine"), q); }),
                 "is not a file name"),
        "refuses a path outside the export dir");
  check(contains(error_of([&] { select(manifest(sha, "11.1.0.106", "9.0", "gone.engine"), q); }), "which is missing"),
        "refuses a missing engine");
  check(contains(error_of([&] { select(R"({"format": "other/2", "engines": []})", q); }), "not a daefr-export/1"),
        "refuses another manifest format");
  write(dir + "/manifest.json", manifest(sha));
  check(daefr::read_json_file(dir + "/manifest.json").at("format").as_string() == "daefr-export/1", "reads a file");
  check(contains(error_of([&] { daefr::read_json_file(dir); }), "cannot"), "a directory is an error");
}

}  // namespace

int main() {
  char tmpl[] = "/tmp/daefr-manifest-test-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) {
    std::cerr << "cannot make a temporary directory\n";
    return 1;
  }
  test_sha256();
  test_bounded_json();
  test_select_engine(dir);
  std::remove((std::string(dir) + "/daefr.0123.engine").c_str());
  std::remove((std::string(dir) + "/manifest.json").c_str());
  rmdir(dir);
  if (failures == 0) std::cout << "manifest tests: all passed\n";
  return failures == 0 ? 0 : 1;
}
