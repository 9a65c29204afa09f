// kvsqueeze bench --press-time: for each press, the same context is prefilled once without a
// press (the baseline) and once with it (prefill + statistics + scoring + compaction + freeing),
// each in a fresh session. Reported: the overhead (with - without) / without, and the time spent
// inside the press's own calls (observe, compress = scoring + compaction, finish), measured by a
// wrapper press around the one under test, so the library's own prefill_with_press runs as is.
// Wall and process CPU times are both kept: on a shared machine CPU time is the steadier one.
#include "bench_press_time.h"

#include "text_file.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "bench_common.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/generation.h"
#include "kvsqueeze/kernels_isa.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze::cli {
namespace {

// Process CPU time (all threads), in ns.
int64_t cpu_now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// Busy CPU time of the whole machine (all CPUs) since boot in ms, from /proc/stat; < 0 if
// unreadable. As bench/bench_speed.py: user nice system irq softirq steal.
double machine_busy_ms() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  uint64_t v[8] = {};
  f >> cpu;
  for (auto& x : v) f >> x;
  if (!f || cpu != "cpu") return -1;
  const uint64_t busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  return static_cast<double>(busy) * 1000.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct Clock {
  int64_t wall = now_ns(), cpu = cpu_now_ns();
  double busy = machine_busy_ms();
  double wall_ms() const { return static_cast<double>(now_ns() - wall) / 1e6; }
  double cpu_ms() const { return static_cast<double>(cpu_now_ns() - cpu) / 1e6; }
  // Cores used by other processes meanwhile (the machine's busy time minus ours); -1 if unknown.
  double foreign_load() const {
    const double now = machine_busy_ms();
    if (busy < 0 || now < 0) return -1;
    return std::max(0.0, (now - busy - cpu_ms()) / std::max(wall_ms(), 1.0));
  }
};

// Waits up to max_s seconds for other processes to use less than `threshold` cores.
void wait_idle(double max_s, double threshold) {
  if (max_s <= 0) return;
  const Clock start;
  while (start.wall_ms() < max_s * 1000) {
    const Clock c;
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    const double load = c.foreign_load();
    if (load >= 0 && load < threshold) return;
  }
}

// Forwards everything to the press under test and times its own calls.
class TimedPress final : public Press {
 public:
  explicit TimedPress(std::unique_ptr<Press> inner) : inner_(std::move(inner)) {}
  double observe_ms = 0, compress_ms = 0, finish_ms = 0;
  int64_t compress_calls = 0;

  std::string name() const override { return inner_->name(); }
  StatsRequest needs() const override { return inner_->needs(); }
  void observe(const LayerView& view) override {
    const Clock c;
    inner_->observe(view);
    observe_ms += c.wall_ms();
  }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override { return inner_->select(view, budget); }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) override {
    const Clock c;
    KeepSets kept = inner_->compress(view, budget, cache);
    compress_ms += c.wall_ms();
    ++compress_calls;
    return kept;
  }
  void compacted(int64_t layer, const KeepSets& keep) override { inner_->compacted(layer, keep); }
  bool triggers(const LayerView& view) const override { return inner_->triggers(view); }
  PressTraits traits() const override { return inner_->traits(); }
  void finish(Session& session, const Budget& budget) override {
    const Clock c;
    inner_->finish(session, budget);
    finish_ms += c.wall_ms();
  }

 private:
  std::unique_ptr<Press> inner_;
};

// An original, deterministic text: numbered paragraphs of sentences picked by a fixed LCG, so
// a long context is not one paragraph repeated verbatim.
std::string builtin_paragraph(int64_t index) {
  static const char* const kSentences[] = {
      "The ferry left the harbour at dawn, carrying mail, two goats and a crate of oranges for the island school.",
      "On the upper deck a woman in a grey coat sketched the cliffs while the gulls argued over a dropped sandwich.",
      "The captain had made the crossing every morning for twenty-three years and still checked the barometer twice.",
      "Below, the engine thumped in a slow rhythm that the passengers stopped hearing after the first few minutes.",
      "By nine the fog had lifted and the lighthouse on the northern point showed its white and red bands.",
      "The island had one road, one shop, one church and a library that opened on Tuesdays and Saturdays.",
      "Its librarian kept a ledger of every book borrowed since 1931, written in four different hands.",
      "Children learned to read the tide tables before they could read stories, because the causeway flooded twice a day.",
      "In the autumn storms the ferry stayed in port and the islanders lived on tinned fish, bread and patience.",
      "A retired engineer built a small wind turbine behind the school, and the lights no longer failed in winter.",
      "Every spring the birdwatchers came with long lenses and thermos flasks and counted puffins on the western cliffs.",
      "The count was written on a blackboard outside the shop, next to the price of milk and the date of the next dance.",
      "Old maps show a second village on the eastern shore, abandoned after a fever in the eighteen-forties.",
      "Only the walls of the chapel remain there, covered in lichen that glows orange in the evening light.",
      "The archaeologists who visited in 1987 found pottery, a silver button and a child's wooden whistle.",
      "They catalogued each object, photographed the walls and left a small plaque with the names of the families.",
      "Fishing had once employed every household, but by the end of the century only three boats went out.",
      "The younger people left for the mainland to study, and some came back with ideas, tools and spouses.",
      "One of them started a bakery in the old customs house, and the smell of bread reached the quay by six.",
      "Another repaired radios, bicycles and clocks, charging in eggs when the customers had no money.",
      "At the annual meeting the council discussed the harbour wall, the school roof and the price of diesel.",
      "Minutes were kept in pencil, read aloud at the next meeting and then filed in a biscuit tin.",
      "When the new pier opened, the whole island walked to the end of it and back, and nobody gave a speech.",
      "The ferry sounded its horn three times, which is how the island says welcome, goodbye and be careful.",
  };
  constexpr uint64_t kN = sizeof(kSentences) / sizeof(kSentences[0]);
  uint64_t state = 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(index);
  std::string p = "Part " + std::to_string(index + 1) + ".";
  for (int s = 0; s < 6; ++s) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    p += " ";
    p += kSentences[(state >> 33) % kN];
  }
  return p + "\n\n";
}

// Exactly ctx token ids: the text (repeated as needed) tokenized with BOS, cut to ctx.
std::vector<int32_t> context_ids(const PressTimeArgs& a, const Model& model, std::string& source) {
  const ModelConfig& cfg = model.config();
  if (a.random_ids) {
    source = "uniform random ids, seed " + std::to_string(a.seed);
    std::mt19937 rng(static_cast<uint32_t>(a.seed));
    std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(cfg.n_vocab - 1));
    std::vector<int32_t> ids(static_cast<size_t>(a.ctx));
    for (auto& id : ids) id = any(rng);
    return ids;
  }
  const std::string file_text = a.prompt_file.empty() ? "" : read_text_file(a.prompt_file, "prompt file");
  if (!a.prompt_file.empty() && file_text.empty()) throw Error("--prompt-file '" + a.prompt_file + "' is empty");
  source = a.prompt_file.empty() ? "built-in text (numbered paragraphs)" : "file " + a.prompt_file + " (repeated)";
  std::string text;
  std::vector<int32_t> ids;
  int64_t part = 0;
  for (int round = 0; static_cast<int64_t>(ids.size()) < a.ctx; ++round) {
    if (round > 1000) throw Error("the context text yields too few tokens");
    // Add about 4 characters per missing token, then re-tokenize the whole text.
    const size_t target = text.size() + static_cast<size_t>(a.ctx - static_cast<int64_t>(ids.size())) * 4;
    while (text.size() < target) text += a.prompt_file.empty() ? builtin_paragraph(part++) : file_text;
    ids = model.tokenizer().encode(text, /*add_bos=*/true, /*parse_special=*/false);
  }
  ids.resize(static_cast<size_t>(a.ctx));
  return ids;
}

struct Sample {
  double base_ms = 0, base_cpu_ms = 0, press_ms = 0, press_cpu_ms = 0, observe_ms = 0, compress_ms = 0, finish_ms = 0;
  double base_foreign = -1, press_foreign = -1;  // other processes' cores during each run
  int64_t compress_calls = 0;
  size_t held_base = 0, held_press = 0;
};

SessionOptions options_of(const PressTimeArgs& a) {
  SessionOptions so = a.kv;
  so.ctx_size = 0;  // the model's: the extra passes of kvzip / kvcompose run past the context
  so.chunk = a.chunk;
  so.threads = a.threads;
  return so;
}

Sample measure(const PressTimeArgs& a, const Model& model, const std::vector<int32_t>& ids, const std::string& expr) {
  Sample s;
  {
    Session session(model, options_of(a));
    session.reserve(a.ctx);
    wait_idle(a.wait_idle_s, a.max_foreign_load);
    const Clock c;
    session.eval(ids);
    s.base_ms = c.wall_ms();
    s.base_cpu_ms = c.cpu_ms();
    s.base_foreign = c.foreign_load();
    s.held_base = session.cache().bytes_held();
  }
  {
    std::vector<std::string> opts = a.press_opts;
    const Budget budget = take_budget_options(model.config(), a.kv.kv_type_k, a.kv.kv_type_v, a.ratio, opts);
    TimedPress press(make_press(expr, opts));
    Session session(model, options_of(a));
    session.reserve(a.ctx);
    wait_idle(a.wait_idle_s, a.max_foreign_load);
    const Clock c;
    prefill_with_press(session, ids, press, budget, 0);
    s.press_ms = c.wall_ms();
    s.press_cpu_ms = c.cpu_ms();
    s.press_foreign = c.foreign_load();
    s.observe_ms = press.observe_ms;
    s.compress_ms = press.compress_ms;
    s.finish_ms = press.finish_ms;
    s.compress_calls = press.compress_calls;
    s.held_press = session.cache().bytes_held();
  }
  return s;
}

}  // namespace

std::vector<std::string> split_press_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char ch : text) {
    if (ch == '(') ++depth;
    if (ch == ')') --depth;
    if (ch == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else if (ch != ' ') {
      cur += ch;
    }
  }
  out.push_back(cur);
  for (const auto& p : out)
    if (p.empty()) throw Error("--press expects comma-separated press expressions, got '" + text + "'");
  return out;
}

int run_press_time(const PressTimeArgs& a, const Model& model) {
  const ModelConfig& cfg = model.config();
  if (a.ctx < 2 || a.ctx > cfg.n_ctx_train)
    throw Error("--ctx must be between 2 and the model's context " + std::to_string(cfg.n_ctx_train) + ", got " + std::to_string(a.ctx));
  if (a.repeat < 1) throw Error("--repeat must be >= 1");
  if (!(a.ratio > 0.0 && a.ratio < 1.0)) throw Error("--press-time needs one --ratio in (0, 1), got " + std::to_string(a.ratio));
  const std::vector<std::string> presses = split_press_list(a.presses);
  for (const auto& p : presses) {  // every expression must build before the first long prefill
    std::vector<std::string> opts = a.press_opts;
    take_budget_options(cfg, a.kv.kv_type_k, a.kv.kv_type_v, a.ratio, opts);
    make_press(p, opts);
  }
  std::string source;
  const std::vector<int32_t> ids = context_ids(a, model, source);
  if (!a.dump_ids.empty()) {
    std::ofstream out(a.dump_ids);
    out << nlohmann::json{{"model", a.model_path}, {"source", source}, {"n_tokens", ids.size()}, {"ids", ids}}.dump() << "\n";
    if (!out) throw Error("cannot write --dump-ids '" + a.dump_ids + "'");
  }
  int64_t n_global = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l) n_global += cfg.layer_sliding.empty() || !cfg.layer_sliding[static_cast<size_t>(l)];
  if (!a.json) {
    std::printf("press timing: %lld tokens (%s), ratio %.2f, %d threads, kv %s, chunk %lld, best of %d\n", (long long)a.ctx,
                source.c_str(), a.ratio, kernels_threads(), kv_types_label(a.kv.kv_type_k, a.kv.kv_type_v).c_str(), (long long)a.chunk, a.repeat);
    std::printf("compressible layers: %lld of %lld (sliding-window layers are never compressed)\n", (long long)n_global,
                (long long)cfg.n_layer);
    std::printf("foreign load: cores other processes used during the prefill without / with the press (> %.2f: contended)\n",
                a.max_foreign_load);
    std::printf("%-24s %11s %11s %9s %9s %10s %9s %9s %13s\n", "press", "prefill ms", "+press ms", "overhead", "cpu ovh", "press-calls",
                "calls %", "kv held", "foreign load");
    std::fflush(stdout);
  }
  nlohmann::json results = nlohmann::json::array();
  for (const auto& expr : presses) {
    Sample best;
    nlohmann::json samples = nlohmann::json::array();
    for (int r = 0; r < a.repeat; ++r) {
      const Sample s = measure(a, model, ids, expr);
      samples.push_back({{"prefill_ms", s.base_ms}, {"prefill_cpu_ms", s.base_cpu_ms}, {"press_prefill_ms", s.press_ms},
                         {"press_prefill_cpu_ms", s.press_cpu_ms}, {"observe_ms", s.observe_ms}, {"compress_ms", s.compress_ms},
                         {"finish_ms", s.finish_ms}, {"prefill_foreign_load", s.base_foreign},
                         {"press_prefill_foreign_load", s.press_foreign}});
      if (r == 0) {
        best = s;
        continue;
      }
      if (s.base_ms < best.base_ms) {
        best.base_ms = s.base_ms;
        best.base_foreign = s.base_foreign;
      }
      best.base_cpu_ms = std::min(best.base_cpu_ms, s.base_cpu_ms);
      if (s.press_ms < best.press_ms) {  // the press's call times go with its fastest run
        best.press_ms = s.press_ms;
        best.press_foreign = s.press_foreign;
        best.observe_ms = s.observe_ms;
        best.compress_ms = s.compress_ms;
        best.finish_ms = s.finish_ms;
      }
      best.press_cpu_ms = std::min(best.press_cpu_ms, s.press_cpu_ms);
    }
    const double calls_ms = best.observe_ms + best.compress_ms + best.finish_ms;
    const double overhead = (best.press_ms - best.base_ms) / best.base_ms;
    const double cpu_overhead = (best.press_cpu_ms - best.base_cpu_ms) / best.base_cpu_ms;
    nlohmann::json r = {{"press", expr},
                        {"prefill_ms", best.base_ms},
                        {"prefill_cpu_ms", best.base_cpu_ms},
                        {"press_prefill_ms", best.press_ms},
                        {"press_prefill_cpu_ms", best.press_cpu_ms},
                        {"overhead", overhead},
                        {"cpu_overhead", cpu_overhead},
                        {"observe_ms", best.observe_ms},
                        {"compress_ms", best.compress_ms},
                        {"finish_ms", best.finish_ms},
                        {"press_calls_ms", calls_ms},
                        {"press_calls_vs_prefill", calls_ms / best.base_ms},
                        {"layers_compressed", best.compress_calls},
                        {"prefill_foreign_load", best.base_foreign},
                        {"press_prefill_foreign_load", best.press_foreign},
                        {"kv_bytes_held_prefill", best.held_base},
                        {"kv_bytes_held_press", best.held_press},
                        {"samples", samples}};
    results.push_back(r);
    if (!a.json) {
      std::printf("%-24s %11.1f %11.1f %8.1f%% %8.1f%% %10.1f %8.2f%% %8.1f%%   %4.2f / %4.2f\n", expr.c_str(), best.base_ms, best.press_ms,
                  100 * overhead, 100 * cpu_overhead, calls_ms, 100 * calls_ms / best.base_ms,
                  100.0 * static_cast<double>(best.held_press) / static_cast<double>(best.held_base), best.base_foreign,
                  best.press_foreign);
      std::fflush(stdout);
    }
  }
  if (a.json) {
    nlohmann::json j = {{"model", a.model_path}, {"ctx", a.ctx},           {"ratio", a.ratio},
                        {"threads", kernels_threads()}, {"kernels", kernels_isa()}, {"kv_type", kv_types_label(a.kv.kv_type_k, a.kv.kv_type_v)}, {"chunk", a.chunk},
                        {"repeat", a.repeat},          {"source", source},     {"compressible_layers", n_global},
                        {"n_layer", cfg.n_layer},      {"press_opts", a.press_opts}, {"max_foreign_load", a.max_foreign_load},
                        {"wait_idle_s", a.wait_idle_s}, {"results", results}};
    std::cout << j.dump() << "\n";
  }
  return 0;
}

}  // namespace kvsqueeze::cli
