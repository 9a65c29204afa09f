// kvsqueeze profile-heads: every (needle, length, depth) run prefilled with the last query's
// attention requested, a greedy answer decoded with each step's attention, the heads scored
// (head_metrics.cpp) and the runs that pass the gate collected into the JSON of head_profile.h.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <unistd.h>

#include "cache/hash64.h"
#include "eval/task_text.h"
#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/engine.h"
#include "press/head_scores_file.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/progress.h"
#include "kvsqueeze/eval/report.h"
#include "kvsqueeze/eval/tasks.h"
#include "kvsqueeze/head_profile.h"
#include "kvsqueeze/sampler.h"

namespace kvsqueeze::profile {
namespace {

// Everything stored per head, in file order (the chosen metric is one of the first five).
const std::vector<std::string>& stored_names() {
  static const std::vector<std::string> names = {"infscore",  "precision",    "recall",     "retrieval",
                                                 "retrieval_reasoning", "diligent", "subconscious", "distracted",
                                                 "diffuse_peripheral"};
  return names;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string joined(const std::vector<std::string>& names) { return eval::join(names, ", "); }

// The attention of query head q of a layer over every position 0..n_pos-1, from the statistics
// of the last evaluated token (window_queries = 1) and the slots' positions in the KV head's run.
void dense_row(const Session& session, int64_t layer, int64_t q, int64_t n_pos, std::vector<float>& row) {
  const ModelConfig& cfg = session.model().config();
  const LayerStats& st = session.layer_stats()[static_cast<size_t>(layer)];
  const auto& probs = st.attention;
  if (probs.window_rows < 1 || probs.window.size() != static_cast<size_t>(cfg.n_head))
    throw Error("profile-heads: the last query's attention was not computed for layer " + std::to_string(layer));
  const auto pos = session.cache().positions(layer, q / (cfg.n_head / cfg.n_head_kv));
  const auto len = static_cast<int64_t>(pos.size());
  const auto& p = probs.window[static_cast<size_t>(q)];
  if (static_cast<int64_t>(p.size()) != probs.window_rows * len)
    throw Error("profile-heads: attention row and cache run of layer " + std::to_string(layer) + " differ in length");
  const float* last = p.data() + (probs.window_rows - 1) * len;
  row.assign(static_cast<size_t>(n_pos), 0.0f);
  for (int64_t i = 0; i < len; ++i)
    if (pos[static_cast<size_t>(i)] >= 0 && pos[static_cast<size_t>(i)] < n_pos) row[static_cast<size_t>(pos[static_cast<size_t>(i)])] = last[i];
}

struct RunSpec {
  size_t needle = 0;
  int64_t length = 0;
  double depth = 0;
  ProfilePrompt prompt;
};

struct RunResult {
  std::vector<std::vector<double>> values;  // [stored metric][layer * n_head + q]
  std::string answer;
  double gate = 0;
  bool accepted = false;
};

RunResult run_one(const Model& model, const ProfileOptions& o, const Needle& needle, const ProfilePrompt& prompt,
                  int64_t ctx_size) {
  const ModelConfig& cfg = model.config();
  const Tokenizer& tok = model.tokenizer();
  const int64_t n_heads = cfg.n_layer * cfg.n_head;
  SessionOptions so = o.session;
  so.ctx_size = ctx_size;
  Engine engine(model, so);  // the statistics below are read from its session directly
  Session& session = engine.session();
  StatsRequest request;
  request.window_queries = 1;
  session.set_stats_request(request);
  session.reserve(static_cast<int64_t>(prompt.ids.size()) + o.max_new_tokens);

  const int64_t nb = prompt.needle.begin, ne = prompt.needle.end;
  const int64_t answer_tokens = static_cast<int64_t>(tok.encode(needle.answer, false, false).size());
  RunResult r;
  r.values.assign(stored_names().size(), std::vector<double>(static_cast<size_t>(n_heads), 0.0));
  auto& v = r.values;  // indices as stored_names()
  int64_t analysed_rows = 0;

  std::vector<float> logits = session.eval(prompt.ids);
  std::vector<int32_t> generated;
  StreamingDetokenizer detok(tok, true, true);
  std::string shown;
  std::vector<float> row;
  // Step s: the attention row of the token just evaluated (the last prompt token at s = 0), and
  // the token it predicts, generated[s].
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const int32_t next = argmax(logits);
    const bool end = tok.is_end_of_generation(next);
    const bool dili = step <= o.decode_steps;
    const bool reasoning = step < answer_tokens && !end;
    const int64_t n_pos = session.next_position();
    if (dili) ++analysed_rows;
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
      for (int64_t q = 0; q < cfg.n_head; ++q) {
        dense_row(session, l, q, n_pos, row);
        const size_t h = static_cast<size_t>(l * cfg.n_head + q);
        if (dili) {
          const RowMetrics m = row_metrics(row, nb, ne, o.top_k);
          v[0][h] += m.infscore;
          v[1][h] += m.precision;
          v[2][h] += m.recall;
          v[5][h] += static_cast<double>(m.diligent);
          v[6][h] += static_cast<double>(m.subconscious);
          v[7][h] += static_cast<double>(m.distracted);
          v[8][h] += static_cast<double>(m.diffuse_peripheral);
        }
        if (!end) v[3][h] += retrieval_step(row, nb, ne, prompt.ids, next);
        if (reasoning) v[4][h] += retrieval_reasoning_step(row, nb, ne, answer_tokens);
      }
    }
    if (end) break;
    generated.push_back(next);
    // The answer is its first line: HeadKV stops decoding at a newline, and small models run on
    // with more of the book after a correct answer.
    shown += detok.feed(next);
    const size_t content = shown.find_first_not_of(" \t\r\n");
    if (content != std::string::npos && shown.find('\n', content) != std::string::npos) break;
    if (step + 1 == o.max_new_tokens) break;
    logits = session.eval({next});
  }
  // The per-row metrics are the mean over the rows analysed (DiliLazyKV averages over steps).
  for (size_t m : {0, 1, 2, 5, 6, 7, 8})
    for (double& x : v[m]) x /= static_cast<double>(std::max<int64_t>(analysed_rows, 1));

  std::string text = tok.decode(generated, true);
  const auto first = text.find_first_not_of(" \t\r\n");
  const auto line_end = first == std::string::npos ? std::string::npos : text.find('\n', first);
  if (line_end != std::string::npos) text.resize(line_end);
  const auto last = text.find_last_not_of(" \t\r\n");
  r.answer = first == std::string::npos ? "" : text.substr(first, last - first + 1);
  r.gate = gate_score(o.gate, r.answer, needle.answer);
  r.accepted = r.gate >= o.gate_threshold;
  return r;
}

std::string key(int64_t layer, int64_t head) { return head_budget::head_score_key(layer, head); }

}  // namespace

std::vector<double> default_depths() {
  std::vector<double> d;
  for (int x = 2; x <= 98; x += 3) d.push_back(x);
  return d;
}

void validate(const ProfileOptions& o) {
  if (!contains(metric_names(), o.metric)) throw Error("unknown metric '" + o.metric + "' (valid: " + joined(metric_names()) + ")");
  if (!contains(gate_names(), o.gate)) throw Error("unknown gate '" + o.gate + "' (valid: " + joined(gate_names()) + ")");
  if (!(o.gate_threshold >= 0.0 && o.gate_threshold <= 1.0))
    throw Error("gate threshold " + eval::format_number(o.gate_threshold) + " must be within 0..1");
  if (o.top_k < 1) throw Error("top-k must be >= 1, got " + std::to_string(o.top_k));
  if (o.decode_steps < 0) throw Error("decode steps must be >= 0, got " + std::to_string(o.decode_steps));
  if (o.max_new_tokens < 1) throw Error("max new tokens must be >= 1, got " + std::to_string(o.max_new_tokens));
  if (o.lengths.empty()) throw Error("profile-heads needs at least one length");
  for (int64_t len : o.lengths)
    if (len <= 0) throw Error("length " + std::to_string(len) + " must be positive");
  for (double d : o.depths)
    if (!(d >= 0.0 && d <= 100.0)) throw Error("depth " + eval::format_number(d) + "% is outside 0..100");
  if (o.session.chunk < 1) throw Error("chunk must be >= 1, got " + std::to_string(o.session.chunk));
  if (o.session.ctx_size < 0) throw Error("context size must be >= 0, got " + std::to_string(o.session.ctx_size));
}

// What identifies a run in a checkpoint: the model, the prompt's tokens and needle span, and every
// setting that changes a run's result (not `metric`: every metric is stored).
std::string run_key(const Model& model, const ProfileOptions& o, const Needle& needle, const RunSpec& s) {
  Hash64 h;
  h.update(s.prompt.ids.data(), s.prompt.ids.size() * sizeof(int32_t));
  const nlohmann::json key = {{"model", fingerprint_hex(model.fingerprint())}, {"prompt", h.digest()},
                              {"needle_span", {s.prompt.needle.begin, s.prompt.needle.end}},
                              {"answer", needle.answer}, {"top_k", o.top_k}, {"gate", o.gate},
                              {"gate_threshold", o.gate_threshold}, {"decode_steps", o.decode_steps},
                              {"max_new_tokens", o.max_new_tokens}, {"k_type", kv_type_name(o.session.kv_type_k)},
                              {"v_type", kv_type_name(o.session.kv_type_v)}};
  return key.dump();
}

// The finished runs of a checkpoint file by key (a missing file: none; a torn last line, as an
// interrupted append leaves it, is skipped).
std::map<std::string, RunResult> read_checkpoint(const std::string& path) {
  std::map<std::string, RunResult> done;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("key") || !j.contains("values")) continue;
    RunResult r;
    r.values = j["values"].get<std::vector<std::vector<double>>>();
    r.answer = j.value("answer", "");
    r.gate = j.value("gate_score", 0.0);
    r.accepted = j.value("accepted", false);
    done[j["key"].get<std::string>()] = std::move(r);
  }
  return done;
}

void append_checkpoint(const std::string& path, const std::string& key, const RunResult& r) {
  std::ofstream out(path, std::ios::app);
  out << nlohmann::json{{"key", key}, {"values", r.values}, {"answer", r.answer}, {"gate_score", r.gate}, {"accepted", r.accepted}}.dump()
      << "\n";
  out.flush();
  if (!out) throw Error("cannot append to the checkpoint '" + path + "'");
}

nlohmann::json profile_heads(const Model& model, const ProfileOptions& options) {
  validate(options);
  const ModelConfig& cfg = model.config();
  const Tokenizer& tok = model.tokenizer();
  const std::vector<Needle> needles = options.needles.empty() ? default_needles() : options.needles;
  const std::vector<double> depths = options.depths.empty() ? default_depths() : options.depths;
  const std::string haystack = eval::load_haystack(options.haystack_dir);
  const int64_t longest = *std::max_element(options.lengths.begin(), options.lengths.end());
  const std::vector<int32_t> hay = haystack_tokens(tok, haystack, longest);

  // Every prompt is built (and checked) before the first run.
  std::vector<RunSpec> specs;
  int64_t longest_prompt = 0;
  for (size_t n = 0; n < needles.size(); ++n)
    for (int64_t length : options.lengths)
      for (double depth : depths) {
        RunSpec s{n, length, depth, build_prompt(model, hay, length, depth, needles[n], options.chat)};
        longest_prompt = std::max<int64_t>(longest_prompt, static_cast<int64_t>(s.prompt.ids.size()));
        specs.push_back(std::move(s));
      }
  const int64_t need = longest_prompt + options.max_new_tokens;
  if (need > cfg.n_ctx_train)
    throw Error("the longest prompt (" + std::to_string(longest_prompt) + " tokens) and its answer (" +
                std::to_string(options.max_new_tokens) + ") exceed the model's trained context " +
                std::to_string(cfg.n_ctx_train) + " (use shorter `lengths`)");
  if (options.session.ctx_size > 0 && need > options.session.ctx_size)
    throw Error("the longest prompt (" + std::to_string(longest_prompt) + " tokens) and its answer (" +
                std::to_string(options.max_new_tokens) + ") exceed `ctx_size` " + std::to_string(options.session.ctx_size));
  const int64_t ctx_size = options.session.ctx_size > 0 ? options.session.ctx_size : need;

  const auto& names = stored_names();
  const int64_t n_heads = cfg.n_layer * cfg.n_head, group = cfg.n_head / cfg.n_head_kv;
  std::vector<std::vector<std::vector<double>>> per_run(names.size(), std::vector<std::vector<double>>(static_cast<size_t>(n_heads)));
  nlohmann::json runs = nlohmann::json::array();
  int64_t accepted = 0;
  std::unique_ptr<eval::Progress> progress;
  if (options.progress) progress = std::make_unique<eval::Progress>("profile-heads", static_cast<int64_t>(specs.size()));
  const std::map<std::string, RunResult> done =
      options.checkpoint.empty() ? std::map<std::string, RunResult>() : read_checkpoint(options.checkpoint);
  int64_t resumed = 0;
  for (const RunSpec& s : specs) {
    const std::string key = options.checkpoint.empty() ? std::string() : run_key(model, options, needles[s.needle], s);
    const auto found = done.find(key);
    const bool reuse = found != done.end() && found->second.values.size() == names.size() &&
                       std::all_of(found->second.values.begin(), found->second.values.end(),
                                   [&](const std::vector<double>& v) { return v.size() == static_cast<size_t>(n_heads); });
    const RunResult r = reuse ? found->second : run_one(model, options, needles[s.needle], s.prompt, ctx_size);
    if (reuse) ++resumed;
    else if (!options.checkpoint.empty()) append_checkpoint(options.checkpoint, key, r);
    runs.push_back({{"needle", s.needle},
                    {"length", s.length},
                    {"depth", s.depth},
                    {"prompt_tokens", s.prompt.ids.size()},
                    {"needle_span", {s.prompt.needle.begin, s.prompt.needle.end}},
                    {"answer", r.answer},
                    {"gate_score", r.gate},
                    {"accepted", r.accepted}});
    if (r.accepted) {
      ++accepted;
      for (size_t m = 0; m < names.size(); ++m)
        for (size_t h = 0; h < static_cast<size_t>(n_heads); ++h) per_run[m][h].push_back(r.values[m][h]);
    }
    if (progress)
      progress->advance(1, "L" + std::to_string(s.length) + " D" + eval::format_number(s.depth) + " needle " +
                               std::to_string(s.needle + 1) + (r.accepted ? " accepted" : " rejected") + " (" +
                               std::to_string(accepted) + " so far)");
  }
  progress.reset();
  const int64_t total = static_cast<int64_t>(specs.size());
  if (accepted == 0) {
    std::string gate = options.gate == "none" ? "none" : options.gate + " >= " + eval::format_number(options.gate_threshold);
    throw Error("no run passed the answer gate (" + gate + "): 0 of " + std::to_string(total) +
                " accepted, nothing written (try other `lengths`/`depths`, `gate` rouge, a lower `gate_threshold`, or `gate` none)");
  }

  nlohmann::json out = nlohmann::json::object();
  const size_t chosen = static_cast<size_t>(std::find(names.begin(), names.end(), options.metric) - names.begin());
  nlohmann::json all = nlohmann::json::object(), kv = nlohmann::json::object();
  for (size_t m = 0; m < names.size(); ++m) {
    nlohmann::json q_heads = nlohmann::json::object(), kv_heads = nlohmann::json::object();
    for (int64_t l = 0; l < cfg.n_layer; ++l) {
      for (int64_t h = 0; h < cfg.n_head; ++h) q_heads[key(l, h)] = per_run[m][static_cast<size_t>(l * cfg.n_head + h)];
      for (int64_t k = 0; k < cfg.n_head_kv; ++k) {
        std::vector<double> mean(static_cast<size_t>(accepted), 0.0);
        for (int64_t g = 0; g < group; ++g) {
          const auto& list = per_run[m][static_cast<size_t>(l * cfg.n_head + k * group + g)];
          for (size_t i = 0; i < mean.size(); ++i) mean[i] += list[i] / static_cast<double>(group);
        }
        kv_heads[key(l, k)] = mean;
      }
    }
    if (m == chosen)
      for (auto& [k, list] : q_heads.items()) out[k] = list;
    all[names[m]] = std::move(q_heads);
    kv[names[m]] = std::move(kv_heads);
  }
  nlohmann::json needle_list = nlohmann::json::array();
  for (const auto& n : needles) needle_list.push_back({{"needle", n.needle}, {"question", n.question}, {"answer", n.answer}});
  nlohmann::json gate = {{"name", options.gate},
                         {"threshold", options.gate_threshold},
                         {"answer", "greedy, at most " + std::to_string(options.max_new_tokens) +
                                        " tokens, stopped at its first line break (as HeadKV), whitespace-trimmed"},
                         {"rule", options.gate == "f1"      ? "LongBench qa_f1 (normalised token F1) of answer vs reference >= threshold"
                                  : options.gate == "rouge" ? "ROUGE-L F of answer vs reference >= threshold"
                                                            : "every run accepted"}};
  out["_meta"] = {{"model", std::filesystem::path(model.path()).filename().string()},
                  {"model_name", cfg.name},
                  {"model_sha", fingerprint_hex(model.fingerprint())},
                  {"metric", options.metric},
                  {"top_k", options.top_k},
                  {"gate", gate},
                  {"lengths", options.lengths},
                  {"depths", depths},
                  {"depth_unit", "percent"},
                  {"needles", needle_list},
                  {"decode_steps", options.decode_steps},
                  {"max_new_tokens", options.max_new_tokens},
                  {"chat", options.chat},
                  {"n_layer", cfg.n_layer},
                  {"n_head", cfg.n_head},
                  {"n_head_kv", cfg.n_head_kv},
                  {"runs", total},
                  {"resumed_runs", resumed},
                  {"accepted", accepted},
                  {"rejected", total - accepted},
                  {"metrics", names},
                  {"version", 1}};
  out["_all"] = std::move(all);
  out["_kv_heads"] = std::move(kv);
  out["_runs"] = std::move(runs);
  return out;
}

std::vector<std::string> write_head_profile(const nlohmann::json& profile, const std::string& path) {
  namespace fs = std::filesystem;
  const nlohmann::json& meta = profile.at("_meta");
  const int64_t n_layer = meta.at("n_layer").get<int64_t>(), n_head = meta.at("n_head").get<int64_t>();
  const std::string metric = meta.at("metric").get<std::string>();
  std::string stem = path;
  if (stem.size() > 5 && stem.compare(stem.size() - 5, 5, ".json") == 0) stem.resize(stem.size() - 5);
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw Error("cannot create the folder of '" + path + "': " + ec.message());

  // The heat map: the mean over accepted runs of the chosen metric, x100.
  std::vector<std::vector<double>> values(static_cast<size_t>(n_layer), std::vector<double>(static_cast<size_t>(n_head)));
  double top = 0;
  for (int64_t l = 0; l < n_layer; ++l)
    for (int64_t h = 0; h < n_head; ++h) {
      const auto& list = profile.at(key(l, h));
      double sum = 0;
      for (const auto& x : list) sum += x.get<double>();
      // x100: the picture labels cells with whole numbers.
      const double mean = list.empty() ? NAN : 100.0 * sum / static_cast<double>(list.size());
      values[static_cast<size_t>(l)][static_cast<size_t>(h)] = mean;
      if (mean > top) top = mean;
    }
  std::vector<std::string> heads, layers;
  for (int64_t h = 0; h < n_head; ++h) heads.push_back(std::to_string(h));
  for (int64_t l = 0; l < n_layer; ++l) layers.push_back(std::to_string(l));
  const double vmax = metric == "retrieval_reasoning" ? (top > 0 ? top : 100.0) : 100.0;

  // Everything goes to temporary names first, then is renamed into place.
  const std::string tag = ".tmp-" + std::to_string(::getpid());
  const std::string json_tmp = path + tag, plot_tmp = stem + tag;
  const std::vector<std::pair<std::string, std::string>> moves = {
      {json_tmp, path}, {plot_tmp + ".png", stem + ".png"}, {plot_tmp + ".svg", stem + ".svg"}};
  auto cleanup = [&] {
    for (const auto& [from, to] : moves) fs::remove(from, ec);
  };
  try {
    head_budget::write_head_scores(profile, json_tmp);
    eval::plot_heatmap(plot_tmp, metric + " x100 per head (" + meta.at("model").get<std::string>() + ", mean of " +
                                     std::to_string(meta.at("accepted").get<int64_t>()) + " runs)",
                       heads, layers, values, 0.0, vmax, "query head", "layer");
    for (const auto& [from, to] : moves) {
      fs::rename(from, to, ec);
      if (ec) throw Error("cannot move '" + from + "' to '" + to + "': " + ec.message());
    }
  } catch (...) {
    cleanup();
    throw;
  }
  return {path, stem + ".png", stem + ".svg"};
}

}  // namespace kvsqueeze::profile
