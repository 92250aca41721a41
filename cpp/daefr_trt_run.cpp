// daefr-trt-run: restore a batch of faces with the TensorRT engine named in manifest.json,
// without Python (the --plugins kernels are embedded in the engine as PTX).
//
//   daefr-trt-run <export-dir> <input.f32> <batch> <restored.f32> [code_idx.i32] [--graph daefr]
//
// input.f32: raw little-endian float32, (batch, 3, R, R) in [-1, 1], R from the manifest.
// restored.f32: raw float32 (batch, 3, R, R); code_idx.i32: raw int32 (batch, N).
// Exit codes: 0 ok, 1 runtime failure, 2 usage or input error.
//
// Uses the TensorRT 10/11 name-based API: setInputShape / setTensorAddress / enqueueV3.
#include <cuda_runtime_api.h>

#include <NvInfer.h>
#if __has_include(<NvInferPlugin.h>)
#include <NvInferPlugin.h>
#define DAEFR_HAS_PLUGIN_LIB 1
#endif

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
  }
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError(path + ": cannot open");
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const void* data, std::size_t bytes) {
  const std::string tmp = path + ".tmp";  // atomic: never a half-written output under `path`
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f || !f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes)))
      throw std::runtime_error(tmp + ": cannot write");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename");
}

std::size_t element_size(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    case nvinfer1::DataType::kINT64: return 8;
    default: throw std::runtime_error("unsupported I/O tensor type");
  }
}

std::int64_t volume(const nvinfer1::Dims& d) {
  std::int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

int run(const std::vector<std::string>& args) {
  std::string graph = "daefr";
  std::vector<std::string> pos;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--graph" && i + 1 < args.size()) graph = args[++i];
    else pos.push_back(args[i]);
  }
  if (pos.size() < 4 || pos.size() > 5)
    throw UsageError("usage: daefr-trt-run <export-dir> <input.f32> <batch> <restored.f32> [code_idx.i32] [--graph daefr]");
  const std::string dir = pos[0];
  const int batch = std::stoi(pos[2]);

  const daefr::Json manifest = daefr::read_json_file(dir + "/manifest.json");
  const daefr::Json* entry = daefr::find_engine(manifest, graph);
  if (entry == nullptr) throw UsageError(dir + "/manifest.json: no engine for graph '" + graph + "' (built on a machine with TensorRT?)");
  const daefr::Json& profile = entry->at("profile");
  if (batch < profile.at("min").as_int() || batch > profile.at("max").as_int())
    throw UsageError("batch " + std::to_string(batch) + " is outside the engine profile " +
                     std::to_string(profile.at("min").as_int()) + ".." + std::to_string(profile.at("max").as_int()));
  const std::int64_t res = manifest.at("resolution").as_int();

  Logger logger;
#ifdef DAEFR_HAS_PLUGIN_LIB
  initLibNvInferPlugins(&logger, "");
#endif
  const std::vector<char> blob = read_file(dir + "/" + entry->at("file").as_string());
  std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
  std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(blob.data(), blob.size()));
  if (!engine) throw std::runtime_error("cannot deserialize the engine (TensorRT version or GPU differ? rebuild it)");
  std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());

  const std::vector<char> input = read_file(pos[1]);
  const std::size_t want = static_cast<std::size_t>(batch) * 3 * res * res * sizeof(float);
  if (input.size() != want)
    throw UsageError(pos[1] + ": " + std::to_string(input.size()) + " bytes, expected " + std::to_string(want) +
                     " for (" + std::to_string(batch) + ", 3, " + std::to_string(res) + ", " + std::to_string(res) + ") float32");

  cudaStream_t stream;
  check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  std::map<std::string, void*> device;
  std::map<std::string, std::size_t> bytes;
  for (int i = 0; i < engine->getNbIOTensors(); ++i) {  // bind by name, never by position
    const char* name = engine->getIOTensorName(i);
    if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT &&
        !context->setInputShape(name, nvinfer1::Dims4{batch, 3, res, res}))
      throw std::runtime_error(std::string("the engine refuses input shape (") + std::to_string(batch) + ", 3, " +
                               std::to_string(res) + ", " + std::to_string(res) + ") for " + name);
  }
  for (int i = 0; i < engine->getNbIOTensors(); ++i) {
    const char* name = engine->getIOTensorName(i);
    bytes[name] = static_cast<std::size_t>(volume(context->getTensorShape(name))) * element_size(engine->getTensorDataType(name));
    check_cuda(cudaMalloc(&device[name], bytes[name]), "cudaMalloc");
    context->setTensorAddress(name, device[name]);
  }
  check_cuda(cudaMemcpyAsync(device.at("lq_image"), input.data(), want, cudaMemcpyHostToDevice, stream), "copy in");
  if (!context->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
  std::vector<char> restored(bytes.at("restored")), codes(bytes.count("code_idx") ? bytes.at("code_idx") : 0);
  check_cuda(cudaMemcpyAsync(restored.data(), device.at("restored"), restored.size(), cudaMemcpyDeviceToHost, stream), "copy out");
  if (!codes.empty())
    check_cuda(cudaMemcpyAsync(codes.data(), device.at("code_idx"), codes.size(), cudaMemcpyDeviceToHost, stream), "copy out");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  for (auto& kv : device) cudaFree(kv.second);
  cudaStreamDestroy(stream);

  write_file(pos[3], restored.data(), restored.size());
  if (pos.size() == 5 && !codes.empty()) write_file(pos[4], codes.data(), codes.size());
  std::cout << "restored " << batch << " face(s) with " << entry->at("file").as_string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const UsageError& err) {
    std::cerr << "daefr-trt-run: " << err.what() << "\n";
    return 2;
  } catch (const std::exception& err) {
    std::cerr << "daefr-trt-run: " << err.what() << "\n";
    return 1;
  }
}
