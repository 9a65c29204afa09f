// Fuzzes the evaluation suite's file readers: results.jsonl (resume), a LongBench JSONL file and
// RULER's QA sources (SQuAD and HotpotQA JSON). The first byte picks the reader; any input must
// end in success or kvsqueeze::Error. Run from the repository root (stories260K's tokenizer).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/report.h"
#include "kvsqueeze/eval/tasks.h"
#include "kvsqueeze/model.h"

namespace {

const kvsqueeze::Tokenizer& tokenizer() {
  static const auto model = kvsqueeze::Model::load("../shared/models/stories260K.gguf");
  return model->tokenizer();
}

const std::string& scratch() {
  static const std::string dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("kvsq_eval_fuzz_" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

void write(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t which = data[0] % 4;
  ++data, --size;
  try {
    if (which == 0) {
      write(scratch() + "/results.jsonl", data, size);
      kvsqueeze::eval::read_results(scratch() + "/results.jsonl");
    } else if (which == 1) {
      write(scratch() + "/trec.jsonl", data, size);
      kvsqueeze::eval::LongBenchOptions o;
      o.folder = scratch();
      o.max_length = 200;
      kvsqueeze::eval::longbench_samples("trec", o, tokenizer());
    } else {
      write(scratch() + "/qa.json", data, size);
      kvsqueeze::eval::RulerOptions o;
      o.length = 480;
      o.samples_per_task = 1;
      o.qa_file = scratch() + "/qa.json";
      kvsqueeze::eval::ruler_samples(which == 2 ? "qa_1" : "qa_2", o, tokenizer());
    }
  } catch (const kvsqueeze::Error&) {
  }
  return 0;
}
