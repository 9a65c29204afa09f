#include "eval/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "kvsqueeze/error.h"

namespace kvsqueeze::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kZ95 = 1.959964;  // two-sided 95% quantile of the standard normal

// Two-sided 95% quantile of Student's t with df degrees of freedom (a table to 30, then the
// Cornish-Fisher expansion z + (z^3 + z) / (4 df), within 0.2% of the exact value from df 31).
double t95(int64_t df) {
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) return kNaN;
  if (df <= 30) return table[df - 1];
  return kZ95 + (kZ95 * kZ95 * kZ95 + kZ95) / (4.0 * static_cast<double>(df));
}

// A running mean that stays NaN when nothing was added.
struct Mean {
  double sum = 0, sum_sq = 0;
  int64_t count = 0;
  void add(double v) {
    if (!std::isfinite(v)) return;
    sum += v;
    sum_sq += v * v;
    ++count;
  }
  double value() const { return count ? sum / static_cast<double>(count) : kNaN; }
  // Squared standard error of the mean (sample variance / n); NaN below 2 values.
  double se_sq() const {
    if (count < 2) return kNaN;
    const double n = static_cast<double>(count), mean = sum / n;
    return std::max(0.0, (sum_sq - n * mean * mean) / (n - 1.0)) / n;
  }
  double ci95() const { return t95(count - 1) * std::sqrt(se_sq()); }
};

// The metrics behind a table row: a cell's samples, or the tasks of a mean over tasks.
struct RowMetrics {
  Mean score, kl, top1, ppl_ratio, kv_held, achieved;
  bool own_budget = false;
  // Adds a task's row (to a mean over tasks).
  void add(const SummaryRow& row) {
    score.add(row.score);
    kl.add(row.kl);
    top1.add(row.top1);
    ppl_ratio.add(row.ppl_ratio);
    kv_held.add(row.kv_held_mib);
    achieved.add(row.achieved_ratio);
    own_budget = own_budget || row.own_budget;
  }
  // Writes the means into `row` (its confidence interval is the caller's).
  void fill(SummaryRow& row) const {
    row.score = score.value();
    row.kl = kl.value();
    row.top1 = top1.value();
    row.ppl_ratio = ppl_ratio.value();
    row.kv_held_mib = kv_held.value();
    row.achieved_ratio = achieved.value();
    row.own_budget = own_budget;
  }
};

double number_or_nan(const nlohmann::json& object, const char* name) {
  if (!object.is_object()) return kNaN;
  auto it = object.find(name);
  return it != object.end() && it->is_number() ? it->get<double>() : kNaN;
}

std::string describe(const nlohmann::json& result, size_t index) {
  std::string text = "result #" + std::to_string(index + 1);
  auto key = result.find("key");
  if (key != result.end() && key->is_string()) text += " (key " + key->get<std::string>() + ")";
  return text;
}

void require(const nlohmann::json& result, size_t index, const char* name, bool (nlohmann::json::*is_type)() const noexcept,
             const char* type) {
  auto it = result.find(name);
  if (it == result.end() || !((*it).*is_type)())
    throw Error(describe(result, index) + ": \"" + name + "\" is " + (it == result.end() ? "missing" : "not " + std::string(type)) +
                "; every result needs kind, task, press (strings), score and, unless press is \"none\", ratio (numbers)");
}

void validate(const nlohmann::json& result, size_t index) {
  if (!result.is_object()) throw Error(describe(result, index) + " is not a JSON object");
  require(result, index, "kind", &nlohmann::json::is_string, "a string");
  require(result, index, "task", &nlohmann::json::is_string, "a string");
  require(result, index, "press", &nlohmann::json::is_string, "a string");
  require(result, index, "score", &nlohmann::json::is_number, "a number");
  if (result["press"] != "none") require(result, index, "ratio", &nlohmann::json::is_number, "a number");
}

bool is_baseline(const std::string& press_label) { return press_label == "none" || press_label.rfind("none ", 0) == 0; }

// Orders presses with the baseline first, then by name.
struct PressOrder {
  bool operator()(const std::string& a, const std::string& b) const {
    return std::make_tuple(!is_baseline(a), a) < std::make_tuple(!is_baseline(b), b);
  }
};

std::string format(const char* spec, double value) {
  if (!std::isfinite(value)) return "";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, spec, value);
  return buffer;
}

std::string format_ratio(double ratio) { return format("%g", ratio); }
std::string format_score(const SummaryRow& row) {
  return format(is_divergence_kind(row.kind) ? "%.6g" : "%.2f", row.score);
}
std::string format_ci(const SummaryRow& row) {
  return format(is_divergence_kind(row.kind) ? "%.3g" : "%.2f", row.score_ci95);
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

std::string md_cell(const std::string& text) {
  std::string escaped;
  for (char c : text) {
    if (c == '|') escaped += "\\|";
    else if (c == '\n' || c == '\r') escaped += ' ';
    else escaped += c;
  }
  return escaped.empty() ? "–" : escaped;
}

std::string md_row(const std::vector<std::string>& cells) {
  std::string line = "|";
  for (const std::string& cell : cells) line += " " + md_cell(cell) + " |";
  return line + "\n";
}

std::string md_separator(const std::vector<bool>& right_aligned) {
  std::string line = "|";
  for (bool right : right_aligned) line += right ? " ---: |" : " --- |";
  return line + "\n";
}

}  // namespace

bool is_divergence_kind(const std::string& kind) { return kind == "kld" || kind == "ppl"; }

std::string press_label(const nlohmann::json& result) {
  std::string label = result.value("press", std::string());
  auto opts = result.find("press_opts");
  if (opts != result.end() && opts->is_array() && !opts->empty()) {
    std::string joined;
    for (const auto& opt : *opts) joined += (joined.empty() ? "" : " ") + (opt.is_string() ? opt.get<std::string>() : opt.dump());
    label += " [" + joined + "]";
  }
  return label;
}

double reported_ratio(const nlohmann::json& result) {
  if (result.value("press", std::string()) == "none") return 0.0;
  return result.value("ratio", 0.0);
}

Summary summarise(const std::vector<nlohmann::json>& results) {
  using Accumulator = RowMetrics;
  using Key = std::tuple<std::string, std::string, std::string, double>;  // kind, task, press, ratio
  auto key_less = [](const Key& a, const Key& b) {
    PressOrder press_order;
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) < std::get<0>(b);
    if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) < std::get<1>(b);
    if (std::get<2>(a) != std::get<2>(b)) return press_order(std::get<2>(a), std::get<2>(b));
    return std::get<3>(a) < std::get<3>(b);
  };
  std::map<Key, Accumulator, decltype(key_less)> cells(key_less);

  for (size_t i = 0; i < results.size(); ++i) {
    const nlohmann::json& result = results[i];
    validate(result, i);
    const std::string kind = result["kind"];
    Accumulator& cell = cells[{kind, result["task"].get<std::string>(), press_label(result), reported_ratio(result)}];
    const double score = result["score"].get<double>();
    cell.score.add(is_divergence_kind(kind) ? score : 100.0 * score);
    const nlohmann::json metrics = result.value("metrics", nlohmann::json::object());
    cell.kl.add(number_or_nan(metrics, "kl"));
    cell.top1.add(100.0 * number_or_nan(metrics, "top1"));
    cell.ppl_ratio.add(number_or_nan(metrics, "ppl_ratio"));
    cell.kv_held.add(number_or_nan(result, "kv_bytes_held") / kMiB);
    cell.achieved.add(number_or_nan(result, "achieved_ratio"));
    cell.own_budget = cell.own_budget || result.value("own_budget", false);
  }

  Summary summary;
  // Means over tasks: each task counts once, whatever its number of samples (RULER's headline).
  struct MeanAccumulator : RowMetrics {
    double se_sq_sum = 0, single_task_ci = kNaN;  // one task: its own t interval
    int64_t n = 0, tasks = 0;
  };
  using MeanKey = std::tuple<std::string, std::string, double>;  // kind, press, ratio
  auto mean_key_less = [](const MeanKey& a, const MeanKey& b) {
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) < std::get<0>(b);
    if (std::get<1>(a) != std::get<1>(b)) return PressOrder()(std::get<1>(a), std::get<1>(b));
    return std::get<2>(a) < std::get<2>(b);
  };
  std::map<MeanKey, MeanAccumulator, decltype(mean_key_less)> means(mean_key_less);

  for (const auto& [key, cell] : cells) {
    SummaryRow row;
    std::tie(row.kind, row.task, row.press, row.ratio) = key;
    row.n = cell.score.count;
    cell.fill(row);
    row.score_ci95 = cell.score.ci95();
    summary.rows.push_back(row);

    MeanAccumulator& mean = means[{row.kind, row.press, row.ratio}];
    mean.add(row);
    mean.se_sq_sum += cell.score.se_sq();  // NaN (no interval) as soon as one task has fewer than 2 samples
    mean.single_task_ci = row.score_ci95;
    mean.n += row.n;
    mean.tasks += 1;
  }
  for (const auto& [key, mean] : means) {
    SummaryRow row;
    std::tie(row.kind, row.press, row.ratio) = key;
    row.task = "mean over tasks";
    row.n = mean.n;
    row.tasks = mean.tasks;
    mean.fill(row);
    row.score_ci95 = mean.tasks == 1 ? mean.single_task_ci
                                     : kZ95 * std::sqrt(mean.se_sq_sum) / static_cast<double>(mean.tasks);
    summary.means.push_back(row);
  }
  return summary;
}

std::string summary_csv(const Summary& summary) {
  std::string text = "kind,task,press,ratio,n,tasks,score,score_ci95,kl,top1,ppl_ratio,kv_held_mib,achieved_ratio\n";
  auto append = [&](const SummaryRow& row) {
    text += csv_field(row.kind) + "," + csv_field(row.task) + "," + csv_field(row.press) + "," + format_ratio(row.ratio) +
            "," + std::to_string(row.n) + "," + std::to_string(row.tasks) + "," + format_score(row) + "," + format_ci(row) + "," +
            format("%.6g", row.kl) + "," + format("%.2f", row.top1) + "," + format("%.4f", row.ppl_ratio) + "," +
            format("%.2f", row.kv_held_mib) + "," + format("%.4f", row.achieved_ratio) + "\n";
  };
  for (const SummaryRow& row : summary.rows) append(row);
  for (const SummaryRow& row : summary.means) append(row);
  return text;
}

std::string summary_markdown(const Summary& summary) {
  std::string text = "# Evaluation summary\n\n";
  text += "Scores are means x100 (kld: the mean per-token KL divergence in nats, lower is better). "
          "Press `none` is the uncompressed baseline, shown at ratio 0. KV held is the mean cache size in MiB; "
          "achieved is 1 - kept slots / full slots. ±95% is the half-width of the 95% confidence interval of the mean "
          "(Student's t over a task's samples; for a mean over tasks, 1.96 standard errors of the mean of the task means; "
          "none with fewer than 2 samples).\n";
  std::set<std::string> kinds;
  for (const SummaryRow& row : summary.rows) kinds.insert(row.kind);
  for (const std::string& kind : kinds) {
    const bool divergence = is_divergence_kind(kind);
    text += "\n## " + kind + "\n\n";
    std::vector<std::string> header = {"task", "press", "ratio", divergence ? (kind == "kld" ? "KL (nats)" : "score") : "score",
                                       "±95%"};
    if (divergence) header.insert(header.end(), {"KL (nats)", "top-1 (%)", "ppl ratio"});
    if (divergence && kind == "kld") header.erase(header.begin() + 5);  // the score is the KL already
    header.insert(header.end(), {"n", "KV held (MiB)", "achieved ratio"});
    std::vector<bool> right(header.size(), true);
    right[0] = right[1] = false;
    text += md_row(header) + md_separator(right);
    auto cells_of = [&](const SummaryRow& row, const std::string& first) {
      std::vector<std::string> cells = {first, row.press, format_ratio(row.ratio), format_score(row), format_ci(row)};
      if (divergence) {
        if (kind != "kld") cells.push_back(format("%.6g", row.kl));
        cells.push_back(format("%.2f", row.top1));
        cells.push_back(format("%.4f", row.ppl_ratio));
      }
      cells.insert(cells.end(), {std::to_string(row.n), format("%.2f", row.kv_held_mib), format("%.4f", row.achieved_ratio)});
      return cells;
    };
    std::set<std::string> tasks;
    for (const SummaryRow& row : summary.rows)
      if (row.kind == kind) {
        text += md_row(cells_of(row, row.task));
        tasks.insert(row.task);
      }
    if (tasks.size() > 1) {  // with one task the means are the rows above
      text += "\n### " + kind + ": mean over tasks (" + std::to_string(tasks.size()) + " tasks)\n\n";
      std::vector<std::string> mean_header = header;
      mean_header[0] = "tasks";
      text += md_row(mean_header) + md_separator(right);
      for (const SummaryRow& row : summary.means)
        if (row.kind == kind) text += md_row(cells_of(row, std::to_string(row.tasks)));
    }
    // The leaderboard view: one row per press, one column per ratio (the means over tasks).
    std::set<double> ratios;
    std::vector<std::string> presses;
    std::map<std::pair<std::string, double>, std::string> at;
    for (const SummaryRow& row : summary.means)
      if (row.kind == kind) {
        ratios.insert(row.ratio);
        if (std::find(presses.begin(), presses.end(), row.press) == presses.end()) presses.push_back(row.press);
        at[{row.press, row.ratio}] = format_score(row) + (std::isfinite(row.score_ci95) ? " ± " + format_ci(row) : "");
      }
    text += "\n### " + kind + ": " + (kind == "kld" ? std::string("KL (nats)") : kind == "ppl" ? std::string("perplexity") : std::string("score x100")) + " by press and ratio\n\n";
    std::vector<std::string> pivot_header = {"press"};
    for (double r : ratios) pivot_header.push_back(format_ratio(r));
    text += md_row(pivot_header) + md_separator(std::vector<bool>(pivot_header.size(), true));
    for (const auto& press : presses) {
      std::vector<std::string> cells = {press};
      for (double r : ratios) cells.push_back(at.count({press, r}) ? at[{press, r}] : "");
      text += md_row(cells);
    }
  }
  return text;
}

}  // namespace kvsqueeze::eval
