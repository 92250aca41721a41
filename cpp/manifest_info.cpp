// daefr-manifest-info <export-dir>: print what manifest.json holds, one line per artifact and
// engine. Builds without TensorRT, so CI compiles and runs the manifest reader that
// daefr-trt-run uses.
#include <iostream>

#include "manifest.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: daefr-manifest-info <export-dir>\n";
    return 2;
  }
  try {
    const daefr::Json m = daefr::read_json_file(std::string(argv[1]) + "/manifest.json");
    std::cout << "preset " << m.at("preset").as_string() << " resolution " << m.at("resolution").as_int()
              << " tokens " << m.at("num_tokens").as_int() << "\n";
    for (const auto& a : m.at("artifacts").array) {
      std::cout << "artifact " << a.at("graph").as_string() << " " << a.at("precision").as_string() << " "
                << a.at("variant").as_string() << " " << a.at("file").as_string() << " inputs";
      for (const auto& t : a.at("inputs").array) std::cout << " " << t.at("name").as_string();
      std::cout << " outputs";
      for (const auto& t : a.at("outputs").array) std::cout << " " << t.at("name").as_string();
      std::cout << "\n";
    }
    for (const auto& e : m.at("engines").array)
      std::cout << "engine " << e.at("graph").as_string() << " " << e.at("file").as_string() << "\n";
    const daefr::Json& why = m.at("engines_not_built");
    if (why.type == daefr::Json::Type::String) std::cout << "engines not built: " << why.string << "\n";
  } catch (const std::exception& err) {
    std::cerr << "daefr-manifest-info: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
