// daefr-manifest-info <export-dir> [--select GRAPH --tensorrt VERSION --compute-capability CC
//                                   [--fp16] [--plugins]]
//
// Without --select: print what manifest.json holds, one line per artifact and engine. With
// --select: print the engine daefr-trt-run would run for that TensorRT version and GPU (the
// same daefr::select_engine), or why none can (exit 1). Builds without TensorRT, so CI
// compiles and runs the manifest reader and the engine choice that daefr-trt-run uses.
// Exit codes: 0 ok, 1 bad manifest or no runnable engine, 2 usage error.
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace {

constexpr const char* kUsage =
    "usage: daefr-manifest-info <export-dir> [--select GRAPH --tensorrt VERSION --compute-capability CC "
    "[--fp16] [--plugins]]";

// The listing, built whole before anything is printed: a bad entry prints nothing but the error.
std::string describe_manifest(const daefr::Json& m) {
  std::ostringstream out;
  out << "preset " << m.at("preset").as_string() << " resolution " << m.at("resolution").as_int()
            << " tokens " << m.at("num_tokens").as_int() << "\n";
  for (const auto& a : m.at("artifacts").as_array()) {
    out << "artifact " << a.at("graph").as_string() << " " << a.at("precision").as_string() << " "
              << a.at("variant").as_string() << " " << a.at("file").as_string() << " inputs";
    for (const auto& t : a.at("inputs").as_array()) out << " " << t.at("name").as_string();
    out << " outputs";
    for (const auto& t : a.at("outputs").as_array()) out << " " << t.at("name").as_string();
    out << "\n";
  }
  for (const auto& e : m.at("engines").as_array())
    out << "engine " << e.at("graph").as_string() << " " << e.at("file").as_string() << "\n";
  const daefr::Json& why = m.at("engines_not_built");
  if (why.type == daefr::Json::Type::String) out << "engines not built: " << why.string << "\n";
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0].rfind("--", 0) == 0) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  const std::string dir = args[0];
  bool select = false;
  daefr::EngineQuery query;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--select" && has_value) select = true, query.graph = args[++i];
    else if (a == "--tensorrt" && has_value) query.tensorrt = args[++i];
    else if (a == "--compute-capability" && has_value) query.compute_capability = args[++i];
    else if (a == "--fp16") query.fp16 = true;
    else if (a == "--plugins") query.plugins = true;
    else {
      std::cerr << "daefr-manifest-info: unexpected argument '" << a << "'\n" << kUsage << "\n";
      return 2;
    }
  }
  if (select && (query.tensorrt.empty() || query.compute_capability.empty())) {
    std::cerr << "daefr-manifest-info: --select needs --tensorrt and --compute-capability\n" << kUsage << "\n";
    return 2;
  }
  const std::string path = dir + "/manifest.json";
  daefr::Json m;
  try {
    m = daefr::read_json_file(path);  // its errors name the file
  } catch (const std::exception& err) {
    std::cerr << "daefr-manifest-info: " << err.what() << "\n";
    return 1;
  }
  try {
    if (!select) {
      std::cout << describe_manifest(m);
      return 0;
    }
    const daefr::Json& e = daefr::select_engine(m, dir, query);  // its errors name the file
    std::cout << "engine " << e.at("file").as_string() << " sha256 " << e.at("sha256").as_string() << "\n";
  } catch (const daefr::SelectionError& err) {
    std::cerr << "daefr-manifest-info: " << err.what() << "\n";
    return 1;
  } catch (const std::exception& err) {
    std::cerr << "daefr-manifest-info: " << path << ": " << err.what() << "\n";
    return 1;
  }
  return 0;
}
