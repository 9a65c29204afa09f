#include "kvsqueeze/eval/evaluate.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::eval {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError("cannot read the text file '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<Sample> generation_samples(const Model& model, const EvalSettings& s, const TaskOptions& t) {
  const Tokenizer& tok = model.tokenizer();
  std::vector<Sample> samples;
  if (s.kind == "niah") {
    NiahOptions o;
    if (!t.lengths.empty()) o.lengths = t.lengths;
    if (!t.depths.empty()) o.depths = t.depths;
    o.variant = t.variant;
    o.n_needles = t.needles;
    o.haystack_dir = t.haystack_dir;
    o.seed = s.seed;
    return niah_samples(o, tok);
  }
  if (s.kind == "ruler") {
    RulerOptions o;
    o.samples_per_task = t.samples > 0 ? t.samples : o.samples_per_task;
    o.seed = s.seed;
    o.haystack_dir = t.haystack_dir;
    o.qa_file = t.qa_file;
    std::vector<std::string> tasks = t.tasks;
    if (tasks.empty()) {
      for (const auto& name : ruler_task_names())
        if (!t.qa_file.empty() || name.rfind("qa_", 0) != 0) tasks.push_back(name);
      if (t.qa_file.empty()) std::fprintf(stderr, "[eval] qa_1 and qa_2 need a QA file (SQuAD / HotpotQA JSON): running the other tasks\n");
    }
    for (int64_t len : t.lengths.empty() ? std::vector<int64_t>{4096} : t.lengths) {
      o.length = len;
      for (const auto& name : tasks) {
        auto part = ruler_samples(name, o, tok);
        samples.insert(samples.end(), part.begin(), part.end());
      }
    }
    return samples;
  }
  // longbench
  if (t.longbench_dir.empty()) throw ParameterError("longbench_dir", "longbench needs `longbench_dir`, the folder of LongBench's JSONL files");
  LongBenchOptions o;
  o.folder = t.longbench_dir;
  o.limit = t.limit;
  // Room for the longest official answer (512 tokens) and the chat template around the prompt.
  const int64_t ctx = s.session.ctx_size > 0 ? s.session.ctx_size : model.config().n_ctx_train;
  o.max_length = t.max_length > 0 ? t.max_length : ctx - 512 - 64;
  if (o.max_length < 64) throw ParameterError("ctx_size", "`ctx_size` " + std::to_string(ctx) + " leaves no room for LongBench prompts (need > 640)");
  for (const auto& d : t.datasets.empty() ? longbench_dataset_names() : t.datasets) {
    auto part = longbench_samples(d, o, tok);
    samples.insert(samples.end(), part.begin(), part.end());
  }
  return samples;
}

}  // namespace

int64_t evaluate(const EvalSettings& s, const TaskOptions& t) {
  const bool divergence = s.kind == "kld" || s.kind == "ppl";
  if (!divergence && s.kind != "niah" && s.kind != "ruler" && s.kind != "longbench")
    throw ParameterError("kind", "`kind` must be niah, ruler, longbench, kld or ppl, got '" + s.kind + "'");
  if (s.reference_kv_type && !divergence) throw ParameterError("reference_kv_type", "`reference_kv_type` belongs to kld and ppl");
  if (t.windows != "seeded" && t.windows != "consecutive")
    throw ParameterError("windows", "`windows` must be seeded or consecutive, got '" + t.windows + "'");
  if (s.session.chunk < 1) throw ParameterError("chunk", "`chunk` must be >= 1, got " + std::to_string(s.session.chunk));
  if (s.grid_memory_mib < 1) throw ParameterError("grid_memory_mib", "`grid_memory_mib` must be >= 1, got " + std::to_string(s.grid_memory_mib));
  s.policy.validate();
  make_grid(s);  // bad presses, options or ratios fail before the model loads

  auto model = Model::load(s.model_path);
  if (s.session.ctx_size < 0 || s.session.ctx_size > model->config().n_ctx_train)
    throw ParameterError("ctx_size", "`ctx_size` must be between 1 and the model's trained context " +
                                         std::to_string(model->config().n_ctx_train) + ", got " + std::to_string(s.session.ctx_size));
  if (divergence) {
    const std::string text = t.text_file.empty() ? default_haystack() : read_file(t.text_file);
    const auto texts = kld_windows(*model, text, t.lengths.empty() ? std::vector<int64_t>{1024} : t.lengths, t.continuation,
                                   t.samples > 0 ? t.samples : 3, s.seed, t.windows == "consecutive");
    return run_kld_eval(*model, texts, s);
  }
  return run_generation_eval(*model, generation_samples(*model, s, t), s);
}

}  // namespace kvsqueeze::eval
