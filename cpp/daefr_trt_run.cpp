// daefr-trt-run: run one graph's TensorRT engine named in manifest.json, without Python (the
// --plugins kernels are embedded in the engine as PTX).
//
//   daefr-trt-run <export-dir> <batch> <out-dir> [--graph daefr] [--fp16] [--plugins] INPUT...
//
// INPUT: NAME=FILE for each engine input, or just FILE when the engine has one input. Each
// file is the raw little-endian tensor in the engine's dtype and shape, the batch axis set to
// <batch> (daefr: lq_image float32 (batch, 3, R, R) in [-1, 1]). Every engine output is
// written to <out-dir>/<name>.bin the same way (daefr: restored, code_idx), atomically.
//
// The engine is chosen as the Python backend chooses it (daefr::select_engine in manifest.hpp):
// the graph and flags asked for, this TensorRT version and GPU compute capability, and a file
// whose sha256 matches the manifest; anything else is refused with what to rebuild.
// Shapes, names and dtypes come from the engine itself. Exit codes: 0 ok, 1 runtime failure
// or no runnable engine, 2 usage or input error.
//
// Uses the TensorRT 10/11 name-based API: setInputShape / setTensorAddress / enqueueV3.
#include <cuda_runtime_api.h>

#include <NvInfer.h>
#ifdef DAEFR_HAS_PLUGIN_LIB  // set by CMakeLists.txt only when libnvinfer_plugin is linked
#include <NvInferPlugin.h>
#endif

#include <cstdint>
#include <cstdio>
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

constexpr const char* kUsage =
    "usage: daefr-trt-run <export-dir> <batch> <out-dir> [--graph daefr] [--fp16] [--plugins] NAME=FILE|FILE...";

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError(path + ": cannot open");
  std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw UsageError(path + ": cannot read (a directory?)");
  return data;
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

std::string describe(const nvinfer1::Dims& d) {
  std::string s = "(";
  for (int i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
  return s + ")";
}

std::int64_t volume(const nvinfer1::Dims& d, const std::string& name) {
  std::int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) {
    if (d.d[i] < 0) throw std::runtime_error(name + ": shape " + describe(d) + " is not known before running");
    v *= d.d[i];
  }
  return v;
}

// The TensorRT version as Python's tensorrt.__version__ spells it (manifest "tensorrt").
std::string tensorrt_version() {
  return std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "." +
         std::to_string(getInferLibPatchVersion()) + "." + std::to_string(getInferLibBuildVersion());
}

std::string compute_capability() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return std::to_string(prop.major) + "." + std::to_string(prop.minor);
}

struct DeviceBuffers {  // freed on every exit path
  std::map<std::string, void*> ptr;
  std::map<std::string, std::size_t> bytes;
  ~DeviceBuffers() {
    for (auto& kv : ptr) cudaFree(kv.second);
  }
};

struct Args {
  std::string dir, out_dir;
  int batch = 0;
  daefr::EngineQuery query;
  std::vector<std::string> inputs;
};

Args parse(const std::vector<std::string>& argv) {
  Args a;
  std::vector<std::string> pos;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--graph" && i + 1 < argv.size()) a.query.graph = argv[++i];
    else if (argv[i] == "--fp16") a.query.fp16 = true;
    else if (argv[i] == "--plugins") a.query.plugins = true;
    else if (argv[i].rfind("--", 0) == 0) throw UsageError("unknown option " + argv[i] + "\n" + kUsage);
    else pos.push_back(argv[i]);
  }
  if (pos.size() < 4) throw UsageError(kUsage);
  a.dir = pos[0];
  std::size_t used = 0;
  try {
    a.batch = std::stoi(pos[1], &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != pos[1].size() || a.batch < 1) throw UsageError("batch must be a positive integer, got '" + pos[1] + "'");
  a.out_dir = pos[2];
  a.inputs.assign(pos.begin() + 3, pos.end());
  return a;
}

int run(const std::vector<std::string>& argv) {
  const Args args = parse(argv);
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  std::unique_ptr<CUstream_st, decltype(&cudaStreamDestroy)> stream_guard(stream, &cudaStreamDestroy);

  daefr::EngineQuery query = args.query;
  query.tensorrt = tensorrt_version();
  query.compute_capability = compute_capability();
  const daefr::Json manifest = daefr::read_json_file(args.dir + "/manifest.json");
  const daefr::Json& entry = daefr::select_engine(manifest, args.dir, query);
  const daefr::Json& profile = entry.at("profile");
  if (args.batch < profile.at("min").as_int() || args.batch > profile.at("max").as_int())
    throw UsageError("batch " + std::to_string(args.batch) + " is outside the engine profile " +
                     std::to_string(profile.at("min").as_int()) + ".." + std::to_string(profile.at("max").as_int()));

  Logger logger;
#ifdef DAEFR_HAS_PLUGIN_LIB
  initLibNvInferPlugins(&logger, "");
#endif
  const std::vector<char> blob = read_file(args.dir + "/" + entry.at("file").as_string());
  std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
  std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(blob.data(), blob.size()));
  if (!engine) throw std::runtime_error("cannot deserialize the engine (TensorRT version or GPU differ? rebuild it)");
  std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());
  if (!context) throw std::runtime_error("cannot create an execution context");

  std::vector<std::string> input_names, output_names;
  for (int i = 0; i < engine->getNbIOTensors(); ++i) {  // bind by name, never by position
    const char* name = engine->getIOTensorName(i);
    (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? input_names : output_names).push_back(name);
  }
  std::map<std::string, std::string> files;  // input name -> file
  for (const std::string& spec : args.inputs) {
    const std::size_t eq = spec.find('=');
    if (eq == std::string::npos && input_names.size() == 1) files[input_names[0]] = spec;
    else if (eq == std::string::npos) throw UsageError("the engine has several inputs: give NAME=FILE for each");
    else files[spec.substr(0, eq)] = spec.substr(eq + 1);
  }
  for (const auto& kv : files) {
    bool known = false;
    for (const std::string& name : input_names) known = known || name == kv.first;
    if (!known) throw UsageError("the engine has no input '" + kv.first + "'");
  }

  DeviceBuffers device;
  for (const std::string& name : input_names) {
    if (!files.count(name)) throw UsageError("no file given for engine input '" + name + "'");
    nvinfer1::Dims shape = engine->getTensorShape(name.c_str());
    if (shape.nbDims < 1) throw std::runtime_error(name + ": the engine input has no batch axis");
    shape.d[0] = args.batch;  // the profile's dynamic axis; every other one is static in our graphs
    if (!context->setInputShape(name.c_str(), shape))
      throw std::runtime_error("the engine refuses input shape " + describe(shape) + " for " + name);
    const std::vector<char> data = read_file(files[name]);
    const std::size_t want =
        static_cast<std::size_t>(volume(shape, name)) * element_size(engine->getTensorDataType(name.c_str()));
    if (data.size() != want)
      throw UsageError(files[name] + ": " + std::to_string(data.size()) + " bytes, expected " + std::to_string(want) +
                       " for " + name + " " + describe(shape));
    check_cuda(cudaMalloc(&device.ptr[name], want), "cudaMalloc");
    device.bytes[name] = want;
    check_cuda(cudaMemcpyAsync(device.ptr[name], data.data(), want, cudaMemcpyHostToDevice, stream), "copy in");
    if (!context->setTensorAddress(name.c_str(), device.ptr[name])) throw std::runtime_error("setTensorAddress " + name);
  }
  for (const std::string& name : output_names) {
    const nvinfer1::Dims shape = context->getTensorShape(name.c_str());
    const std::size_t bytes =
        static_cast<std::size_t>(volume(shape, name)) * element_size(engine->getTensorDataType(name.c_str()));
    check_cuda(cudaMalloc(&device.ptr[name], bytes), "cudaMalloc");
    device.bytes[name] = bytes;
    if (!context->setTensorAddress(name.c_str(), device.ptr[name])) throw std::runtime_error("setTensorAddress " + name);
  }
  if (!context->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
  std::map<std::string, std::vector<char>> host;
  for (const std::string& name : output_names) {
    host[name].resize(device.bytes[name]);
    check_cuda(cudaMemcpyAsync(host[name].data(), device.ptr[name], device.bytes[name], cudaMemcpyDeviceToHost, stream),
               "copy out");
  }
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  for (const std::string& name : output_names) {
    write_file(args.out_dir + "/" + name + ".bin", host[name].data(), host[name].size());
    std::cout << "output " << name << " " << describe(context->getTensorShape(name.c_str())) << "\n";
  }
  std::cout << "ran " << query.graph << " at batch " << args.batch << " with " << entry.at("file").as_string() << "\n";
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
