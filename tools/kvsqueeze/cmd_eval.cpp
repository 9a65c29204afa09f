// kvsqueeze eval: a grid of presses x ratios on NIAH, RULER-style tasks, LongBench, KL divergence
// or perplexity; results appended to OUT/results.jsonl (resumable), then a summary and plots.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "device_flag.h"
#include "kv_type_flags.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/evaluate.h"
#include "kvsqueeze/eval/report.h"

namespace kvsqueeze::cli {
namespace {

struct EvalArgs {
  std::string kind, model, out, variant = "single", haystack, qa_file, longbench_dir, text_file;
  std::vector<std::string> presses, ratios, lengths, depths, tasks, datasets, press_opts;
  int64_t grid_memory = 4096;
  int64_t chunk = 512, ctx_size = 0, samples = 0, needles = 3, limit = 0, max_length = 0, continuation = 256;
  int threads = 0;
  uint64_t seed = 42;
  bool no_chat = false, no_resume = false, no_report = false, query_aware = false;
  CompressionPolicy policy;
  KvTypeFlags kv_types;
  DeviceFlag device;
  std::string reference_kv_type;
  std::string windows = "seeded";
};

// Splits "a,b(c,d),e" at the commas outside parentheses (expressions hold commas); every
// repetition of the flag adds its items.
std::vector<std::string> split_list(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    int depth = 0;
    std::string cur;
    for (char c : v) {
      if (c == '(') ++depth;
      if (c == ')') --depth;
      if (c == ',' && depth == 0) {
        out.push_back(cur);
        cur.clear();
      } else if (c != ' ') {
        cur += c;
      }
    }
    out.push_back(cur);
  }
  for (const auto& s : out)
    if (s.empty()) throw Error("empty item in a comma-separated list");
  return out;
}

template <class T>
std::vector<T> numbers(const std::vector<std::string>& values, const std::string& flag) {
  std::vector<T> out;
  for (const auto& s : split_list(values)) {
    std::istringstream in(s);
    T x{};
    if (!(in >> x) || !in.eof()) throw Error(flag + ": '" + s + "' is not a number");
    out.push_back(x);
  }
  return out;
}

int run(EvalArgs& a) {
  if (a.kind == "report") {
    const auto results = eval::read_results(a.out + "/results.jsonl");
    if (results.empty()) throw Error("no results in " + a.out + "/results.jsonl");
    for (const auto& f : eval::write_report(results, a.out)) std::fprintf(stderr, "[eval] wrote %s\n", f.c_str());
    return 0;
  }
  if (a.model.empty()) throw Error("eval " + a.kind + " needs a model: -m MODEL.gguf");
  eval::EvalSettings s;
  s.kind = a.kind;
  s.model_path = a.model;
  s.presses = a.presses.empty() ? std::vector<std::string>{} : split_list(a.presses);
  s.ratios = a.ratios.empty() ? std::vector<double>{} : numbers<double>(a.ratios, "--ratio");
  s.press_opts = a.press_opts;
  s.policy = a.policy;
  s.query_aware = a.query_aware;
  s.chat = !a.no_chat;
  s.session.chunk = a.chunk;
  s.session.ctx_size = a.ctx_size;
  s.session.threads = a.threads;
  a.kv_types.apply(s.session);
  a.device.apply(s.session);
  if (!a.reference_kv_type.empty()) s.reference_kv_type = parse_kv_type(a.reference_kv_type, "reference_kv_type");
  s.seed = a.seed;
  s.out_dir = a.out;
  s.resume = !a.no_resume;
  s.grid_memory_mib = a.grid_memory;
  eval::TaskOptions t;
  if (!a.lengths.empty()) t.lengths = numbers<int64_t>(a.lengths, "--lengths");
  if (!a.depths.empty()) t.depths = numbers<double>(a.depths, "--depths");
  t.variant = a.variant;
  t.needles = a.needles;
  t.haystack_dir = a.haystack;
  if (!a.tasks.empty()) t.tasks = split_list(a.tasks);
  t.qa_file = a.qa_file;
  t.samples = a.samples;
  t.longbench_dir = a.longbench_dir;
  if (!a.datasets.empty()) t.datasets = split_list(a.datasets);
  t.limit = a.limit;
  t.max_length = a.max_length;
  t.text_file = a.text_file;
  t.continuation = a.continuation;
  t.windows = a.windows;
  const int64_t appended = eval::evaluate(s, t);
  std::fprintf(stderr, "[eval] %lld new results in %s/results.jsonl\n", static_cast<long long>(appended), a.out.c_str());
  if (!a.no_report) {
    const auto files = eval::write_report(eval::read_results(a.out + "/results.jsonl"), a.out);
    for (const auto& f : files) std::fprintf(stderr, "[eval] wrote %s\n", f.c_str());
    std::ifstream md(a.out + "/summary.md");
    std::cout << md.rdbuf();
  }
  return 0;
}

}  // namespace

Runner add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand("eval", "Evaluate presses x ratios: niah, ruler, longbench, kld, ppl (or 'report' to redraw)");
  sub->add_option("kind", a->kind, "niah | ruler | longbench | kld | ppl | report")
      ->required()
      ->check(CLI::IsMember({"niah", "ruler", "longbench", "kld", "ppl", "report"}));
  sub->add_option("-m,--model", a->model, "GGUF model file");
  sub->add_option("-o,--out", a->out, "Output folder (results.jsonl, summary.csv/md, plots)")->required();
  sub->add_option("--press", a->presses, "Press expressions, comma-separated; PRESS@R runs PRESS at ratio R only (the uncompressed baseline always runs)");
  sub->add_option("--ratio", a->ratios, "Compression ratios (fraction removed), comma-separated");
  sub->add_option("--press-opt", a->press_opts, "NAME.KEY=VALUE for the presses called NAME (KEY=VALUE with one press)");
  sub->add_option("--lengths", a->lengths, "Context lengths in tokens, comma-separated (niah, ruler, kld, ppl)");
  sub->add_option("--depths", a->depths, "NIAH needle depths in percent, comma-separated");
  sub->add_option("--variant", a->variant, "NIAH variant: single | multi | passkey")->capture_default_str();
  sub->add_option("--needles", a->needles, "NIAH multi: number of needles")->capture_default_str();
  sub->add_option("--haystack", a->haystack, "Folder of .txt files used as haystack (default: the shipped public-domain text)");
  sub->add_option("--tasks", a->tasks, "RULER tasks, comma-separated (default: all; qa_* need --qa-file)");
  sub->add_option("--qa-file", a->qa_file, "RULER qa_1 (SQuAD JSON) / qa_2 (HotpotQA JSON) source");
  sub->add_option("--samples", a->samples, "RULER samples per task (10) / kld windows per length (3)");
  sub->add_option("--longbench-dir", a->longbench_dir, "Folder with LongBench's DATASET.jsonl files");
  sub->add_option("--datasets", a->datasets, "LongBench datasets, comma-separated (default: all supported)");
  sub->add_option("--limit", a->limit, "LongBench: first N samples per dataset (0: all)")->capture_default_str();
  sub->add_option("--max-length", a->max_length, "LongBench: prompt tokens before middle truncation (0: fit the context)");
  sub->add_option("-f,--file", a->text_file, "kld/ppl: text to cut windows from (default: the shipped haystack)");
  sub->add_option("--continuation", a->continuation, "kld/ppl: teacher-forced tokens after each context")->capture_default_str();
  sub->add_option("--windows", a->windows,
                  "kld/ppl: seeded (offsets drawn from --seed) or consecutive (the text's first chunks, as llama-perplexity cuts them)")
      ->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed of generated data and window offsets")->capture_default_str();
  sub->add_option("--chunk", a->chunk, "Prefill chunk size")->capture_default_str();
  sub->add_option("--ctx-size", a->ctx_size, "Context size (0: the model's trained context)")->capture_default_str();
  sub->add_option("-t,--threads", a->threads, "Threads (0: one per core)")->capture_default_str();
  a->kv_types.add_to(*sub);
  a->device.add_to(*sub);
  sub->add_option("--reference-kv-type", a->reference_kv_type,
                  "kld/ppl: reference distributions from an uncompressed cache of this type (e.g. f16 for a quantized cache)");
  sub->add_flag("--no-chat", a->no_chat, "Do not wrap prompts in the model's chat template");
  sub->add_flag("--query-aware", a->query_aware, "Compress each context together with its question");
  sub->add_flag("--compress-chunks", a->policy.every_chunk, "Compress after every prefill chunk (no shared prefill)");
  sub->add_option("--decode-interval", a->policy.decode_interval, "Compress while decoding every N steps (no shared prefill)");
  sub->add_option("--decode-target", a->policy.decode_target, "Slots per head kept by decoding compression");
  sub->add_option("--decode-ratio", a->policy.decode_ratio, "Fraction of the positions seen removed by decoding compression");
  sub->add_option("--grid-memory", a->grid_memory,
                  "MiB the compressed copies of one shared prefill may hold; more cells take another prefill")
      ->capture_default_str();
  sub->add_flag("--no-resume", a->no_resume, "Fail if OUT/results.jsonl already has results (default: skip the cells done)");
  sub->add_flag("--no-report", a->no_report, "Only append results; no summary or plots");
  return [a] { return run(*a); };
}

}  // namespace kvsqueeze::cli
