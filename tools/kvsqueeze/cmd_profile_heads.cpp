// kvsqueeze profile-heads: head-importance scores from needle-in-a-haystack runs (docs/METHODS.md
// §5), written as HEADS.json (keyed "layer-head") with a heat map HEADS.png/.svg next to it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "commands.h"
#include "kv_type_flags.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"
#include "kvsqueeze/head_profile.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::cli {
namespace {

struct ProfileArgs {
  std::string model, out, needles_file, depth_unit = "percent";
  KvTypeFlags kv_types;
  std::vector<std::string> lengths, depths;
  profile::ProfileOptions o;
  bool no_chat = false, quiet = false;
};

double parse_number(const std::string& s, const std::string& flag) {
  std::istringstream in(s);
  double x = 0;
  if (s.empty() || !(in >> x) || !in.eof() || !std::isfinite(x)) throw Error(flag + ": '" + s + "' is not a number");
  return x;
}

// "a,b,c" (each repetition of the flag adds items) or "MIN:MAX:N" (N evenly spaced values from
// MIN to MAX inclusive, as numpy/torch linspace).
std::string show(double x) {
  std::ostringstream out;
  out << x;
  return out.str();
}

std::vector<double> parse_values(const std::vector<std::string>& args, const std::string& flag) {
  std::vector<double> out;
  for (const auto& arg : args) {
    std::string item;
    std::istringstream list(arg);
    while (std::getline(list, item, ',')) {
      item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
      if (item.empty()) throw Error(flag + ": empty item in '" + arg + "'");
      if (item.find(':') == std::string::npos) {
        out.push_back(parse_number(item, flag));
        continue;
      }
      std::vector<std::string> parts;
      std::string part;
      std::istringstream range(item);
      while (std::getline(range, part, ':')) parts.push_back(part);
      if (parts.size() != 3) throw Error(flag + ": '" + item + "' is not MIN:MAX:N");
      const double lo = parse_number(parts[0], flag), hi = parse_number(parts[1], flag), n = parse_number(parts[2], flag);
      if (n < 1 || n != std::floor(n) || n > 10000) throw Error(flag + ": in '" + item + "' N must be a whole number within 1..10000");
      for (int64_t i = 0; i < static_cast<int64_t>(n); ++i)
        out.push_back(n == 1 ? lo : lo + (hi - lo) * static_cast<double>(i) / (n - 1));
    }
  }
  return out;
}

int run(ProfileArgs& a) {
  profile::ProfileOptions& o = a.o;
  if (!a.lengths.empty()) {
    o.lengths.clear();
    for (double x : parse_values(a.lengths, "--lengths")) {
      const double r = std::nearbyint(x);  // half to even, as Python's round of upstream's linspace
      if (r < 1) throw Error("--lengths: " + show(x) + " is not a positive token count");
      o.lengths.push_back(static_cast<int64_t>(r));
    }
  }
  if (!a.depths.empty()) {
    for (double d : parse_values(a.depths, "--depths")) {
      if (a.depth_unit == "fraction") {
        if (d < 0 || d > 1) throw Error("--depths: " + show(d) + " is outside 0..1 (--depth-unit fraction)");
        o.depths.push_back(d * 100.0);
      } else {
        if (d >= 0 && d <= 1)
          throw Error("--depths: " + show(d) +
                      " is <= 1; depths are percentages (e.g. 10,50,90), pass --depth-unit fraction for 0..1 fractions");
        if (d < 0 || d > 100) throw Error("--depths: " + show(d) + " is outside 1..100 (percent)");
        o.depths.push_back(d);
      }
    }
  }
  if (!a.needles_file.empty()) o.needles = profile::read_needles(a.needles_file);
  o.chat = !a.no_chat;
  o.progress = !a.quiet;
  a.kv_types.apply(o.session);
  profile::validate(o);
  // An output that cannot be written fails now, not after the runs.
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(a.out, ec)) throw Error("output '" + a.out + "' is a directory (give a file name such as HEADS.json)");
  eval::load_haystack(o.haystack_dir);  // a missing haystack fails before the model loads

  auto model = Model::load(a.model);
  if (model->config().n_head_kv < 1 || model->config().n_head % model->config().n_head_kv != 0)
    throw Error("model '" + a.model + "' has " + std::to_string(model->config().n_head) + " query heads, not a multiple of its " +
                std::to_string(model->config().n_head_kv) + " KV heads");
  const fs::path parent = fs::path(a.out).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw Error("cannot create the folder of '" + a.out + "': " + ec.message());
  o.checkpoint = a.out + ".partial.jsonl";  // finished runs, so that an interrupted profile resumes
  const nlohmann::json profile = profile::profile_heads(*model, o);
  const auto& meta = profile.at("_meta");
  for (const auto& f : profile::write_head_profile(profile, a.out)) std::fprintf(stderr, "[profile-heads] wrote %s\n", f.c_str());
  if (meta.at("resumed_runs").get<int64_t>() > 0)
    std::fprintf(stderr, "[profile-heads] %lld runs taken from %s\n", static_cast<long long>(meta.at("resumed_runs").get<int64_t>()),
                 o.checkpoint.c_str());
  fs::remove(o.checkpoint, ec);
  std::fprintf(stderr, "[profile-heads] %lld of %lld runs accepted by the gate\n",
               static_cast<long long>(meta.at("accepted").get<int64_t>()), static_cast<long long>(meta.at("runs").get<int64_t>()));
  return 0;
}

}  // namespace

Runner add_profile_heads(CLI::App& app) {
  auto a = std::make_shared<ProfileArgs>();
  auto* sub = app.add_subcommand(
      "profile-heads",
      "Score every attention head on needle-in-a-haystack runs (DiliLazyKV InfScore, HeadKV retrieval) into HEADS.json");
  sub->footer(
      "Each run inserts a needle into the haystack at a depth, asks its question and decodes a greedy answer (at most\n"
      "--max-new-tokens, stopped at its first line break as HeadKV does). The answer check: a run counts only if\n"
      "gate(answer, reference) >= --gate-threshold, where the gate is 'f1' (LongBench token F1 after normalisation:\n"
      "lower case, no punctuation or articles; the default, 0.5), 'rouge' (ROUGE-L F) or 'none' (every run counts).\n"
      "Scores are taken from the last prompt token's attention (plus --decode-steps generated tokens) over every\n"
      "prompt position, per query head: DiliScore (weighted precision of the top-k), LazyScore (weighted recall),\n"
      "InfScore (their harmonic mean), category counts (diligent, subconscious, distracted, diffuse peripheral), and\n"
      "HeadKV's retrieval scores over the answer's steps.\n"
      "Output: \"L-H\" keys (0-based layer and query head) hold the --metric of every accepted run; \"_all\" holds every\n"
      "metric, \"_kv_heads\" the mean of each KV head's query heads, \"_runs\" each run's answer and gate score, and\n"
      "\"_meta\" the model, its hash, the gate and all settings. A heat map of the mean x100 goes to HEADS.png/.svg.\n"
      "Each finished run is appended to HEADS.json.partial.jsonl; run again after an interruption, the same command\n"
      "takes the runs found there (same model, prompt and settings) and runs only the rest; the file goes once\n"
      "HEADS.json is written.");
  sub->add_option("-m,--model", a->model, "GGUF model file")->required();
  sub->add_option("-o,--output", a->out, "Output JSON file (written atomically; the heat map goes next to it)")->required();
  sub->add_option("--lengths", a->lengths, "Context lengths in tokens: a list (1024,2048) or MIN:MAX:N (linspace) [2048]");
  sub->add_option("--depths", a->depths, "Needle depths in percent: a list or MIN:MAX:N [2,5,...,98]");
  sub->add_option("--depth-unit", a->depth_unit, "percent (values <= 1 rejected) or fraction (0..1)")
      ->check(CLI::IsMember({"percent", "fraction"}))
      ->capture_default_str();
  sub->add_option("--needles", a->needles_file, "JSONL of {\"needle\", \"question\", \"answer\"} [three built-in needles]");
  sub->add_option("--haystack", a->o.haystack_dir, "Folder of .txt files used as haystack [the shipped public-domain text]");
  sub->add_option("--metric", a->o.metric, "What the \"L-H\" lists hold: infscore, precision, recall, retrieval, retrieval_reasoning")
      ->capture_default_str();
  sub->add_option("--top-k", a->o.top_k, "K of the top-K attended positions (DiliScore / LazyScore)")->capture_default_str();
  sub->add_option("--gate", a->o.gate, "Answer check: f1, rouge or none")->capture_default_str();
  sub->add_option("--gate-threshold", a->o.gate_threshold, "A run counts when the gate score is >= this")->capture_default_str();
  sub->add_option("--decode-steps", a->o.decode_steps, "Also score the rows of the first N generated tokens")->capture_default_str();
  sub->add_option("--max-new-tokens", a->o.max_new_tokens, "Longest greedy answer")->capture_default_str();
  sub->add_flag("--no-chat", a->no_chat, "Do not wrap prompts in the model's chat template");
  sub->add_option("--chunk", a->o.session.chunk, "Prefill chunk size")->capture_default_str();
  sub->add_option("--ctx-size", a->o.session.ctx_size, "Context size (0: the longest prompt plus its answer)")->capture_default_str();
  sub->add_option("-t,--threads", a->o.session.threads, "Threads (0: one per core)")->capture_default_str();
  a->kv_types.add_to(*sub);
  sub->add_flag("-q,--quiet", a->quiet, "No progress bar");
  return [a] { return run(*a); };
}

}  // namespace kvsqueeze::cli
