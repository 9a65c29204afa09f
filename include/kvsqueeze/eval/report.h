#pragma once
// Results, summaries and pictures of an evaluation run.
//
// results.jsonl: one JSON object per line, one per (sample x press x ratio) cell, appended as
// soon as it is scored (so an interrupted run resumes where it stopped). Fields:
//   "kind"        niah | ruler | longbench | kld | ppl
//   "task"        Sample::task;  "sample_id" Sample::id;  "meta" Sample::meta
//   "press"       the press expression ("none" for the uncompressed baseline)
//   "ratio"       the requested ratio;  "press_opts" [..]
//   "key"         the resume key: task, sample id, press, ratio and options joined
//   "score"       in [0, 1] (kld: the per-token mean KL in nats, lower is better)
//   "metrics"     {name: value} (kld/ppl: kl, abs_dlogp, top1, ppl, ppl_full, ppl_ratio)
//   "prediction", "references"
//   "kv_bytes_held", "kv_bytes_full", "achieved_ratio" (1 - kept slots / full slots)
//   "context_tokens", "timings" {"prefill_ms", "compress_ms", "decode_ms"}, "shared_prefill" bool,
//   "own_budget" true when the press sets its own size (pyramid_merge, per_layer): the score-vs-ratio
//   plot then places it at its achieved ratio
//   "config" {model, model_sha, chunk, kv_type, seed, query_aware, threads, version}
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvsqueeze::eval {

// Reads results.jsonl (missing file: empty). A truncated last line (an interrupted write) is
// ignored; any other malformed line throws kvsqueeze::Error naming the line.
std::vector<nlohmann::json> read_results(const std::string& path);
// Appends one line and flushes it to disk before returning.
void append_result(const std::string& path, const nlohmann::json& result);

// Writes summary.csv and summary.md (task x press x ratio: mean score x100, n, kv_bytes_held,
// achieved ratio; and per press x ratio the mean over tasks, RULER's headline), and the plots:
// score vs ratio per press (score_vs_ratio.{png,svg}; for kld, KL vs ratio), score vs the mean
// kv_bytes_held per cell (score_vs_kv_held.{png,svg}, when every compressed cell has it: presses
// compared at equal memory whatever their budget rule) and, for niah,
// a depth x length heat map per press and ratio (niah_PRESS_RATIO.{png,svg}). Returns the files written.
//   summary.csv columns: kind,task,press,ratio,n,tasks,score,kl,top1,ppl_ratio,kv_held_mib,achieved_ratio;
//   rows with task "mean over tasks" are the per kind x press x ratio means of the task means ("tasks"
//   of them). score: mean x100, except kld/ppl: the mean as stored (kld: KL in nats). kl, top1 (x100)
//   and ppl_ratio: means of "metrics". The press column is the expression plus " [press_opts]" if any;
//   "none" is reported at ratio 0. Several kinds: one score_vs_ratio_KIND (and score_vs_kv_held_KIND) per kind. Niah results
//   without numeric meta.depth and meta.length stay out of the heat maps. A result without kind,
//   task, press (strings), a numeric score, or (unless press is "none") a numeric ratio throws
//   kvsqueeze::Error before anything is written.
std::vector<std::string> write_report(const std::vector<nlohmann::json>& results, const std::string& out_dir);

// Pictures (cairo), each written as PATH.png and PATH.svg.
struct Series {
  std::string label;
  std::vector<double> x, y;  // NaN y: a gap in the line
  bool horizontal = false;   // a reference level (the uncompressed baseline): a dashed line at y[0] across the plot
};
void plot_lines(const std::string& path, const std::string& title, const std::string& x_label, const std::string& y_label,
                const std::vector<Series>& series);
// values[row][col], rows are y (top to bottom), NaN = no data; colour scale [vmin, vmax].
void plot_heatmap(const std::string& path, const std::string& title, const std::vector<std::string>& x_labels,
                  const std::vector<std::string>& y_labels, const std::vector<std::vector<double>>& values, double vmin,
                  double vmax, const std::string& x_title, const std::string& y_title);

}  // namespace kvsqueeze::eval
