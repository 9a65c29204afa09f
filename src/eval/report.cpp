// write_report: the summary tables and every picture of one evaluation run.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include "eval/summary.h"
#include "eval/task_text.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/report.h"

namespace kvsqueeze::eval {
namespace {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw Error("cannot write " + path + " (is the output directory writable?)");
}

// A press label as a file-name piece: letters, digits, '.', '-' kept; runs of anything else -> '_'.
std::string file_name_piece(const std::string& text) {
  std::string piece;
  for (char c : text) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
    if (keep) piece += c;
    else if (!piece.empty() && piece.back() != '_') piece += '_';
  }
  while (!piece.empty() && piece.back() == '_') piece.pop_back();
  return piece.empty() ? "press" : piece;
}

std::string y_axis_label(const std::string& kind) {
  if (kind == "kld") return "mean KL divergence (nats, lower is better)";
  if (is_divergence_kind(kind)) return "score";
  return "score (x100)";
}

// One stem per picture, never reused within a report (two press labels can sanitise alike).
class Stems {
 public:
  std::string take(const std::string& wanted) {
    std::string stem = wanted;
    for (int copy = 2; !used_.insert(stem).second; ++copy) stem = wanted + "_" + std::to_string(copy);
    return stem;
  }

 private:
  std::set<std::string> used_;
};

// The x axis of a score plot: the requested ratio, or the KV bytes each cell really held (where
// presses with their own budgets, merging and allocators compare at equal memory).
enum class XAxis { kRatio, kHeld };

void score_plots(const Summary& summary, XAxis axis, const std::filesystem::path& dir, Stems& stems,
                 std::vector<std::string>& written) {
  std::map<std::string, std::vector<const SummaryRow*>> by_kind;
  for (const SummaryRow& row : summary.means) by_kind[row.kind].push_back(&row);

  for (const auto& [kind, rows] : by_kind) {
    std::vector<Series> series;
    std::map<std::string, size_t> index_of;  // press -> series index
    for (const SummaryRow* row : rows) {
      const bool baseline = row->press == "none" || row->press.rfind("none ", 0) == 0;
      auto [it, inserted] = index_of.emplace(row->press, series.size());
      if (inserted) {
        Series s;
        s.label = baseline ? (row->press == "none" ? std::string("no compression") : "no compression " + row->press.substr(5))
                           : row->press;
        s.horizontal = baseline;
        series.push_back(s);
      }
      Series& s = series[it->second];
      // Presses that set their own size sit at the ratio they achieved, not the grid's nominal one.
      const double ratio = row->own_budget && std::isfinite(row->achieved_ratio) ? row->achieved_ratio : row->ratio;
      s.x.push_back(axis == XAxis::kRatio ? ratio : row->kv_held_mib);
      s.y.push_back(row->score);
    }
    // Against bytes held: only when every compressed cell measured them.
    if (axis == XAxis::kHeld) {
      bool measured = true;
      for (const SummaryRow* row : rows)
        measured = measured && (row->press == "none" || row->press.rfind("none ", 0) == 0 || std::isfinite(row->kv_held_mib));
      if (!measured) continue;
    }
    std::set<std::string> task_names;
    for (const SummaryRow& row : summary.rows)
      if (row.kind == kind) task_names.insert(row.task);
    const size_t tasks = task_names.size();
    const std::string base = axis == XAxis::kRatio ? "score_vs_ratio" : "score_vs_kv_held";
    const std::string stem = stems.take(by_kind.size() == 1 ? base : base + "_" + file_name_piece(kind));
    std::string title = kind + (kind == "kld" ? ": KL divergence" : ": score") +
                        (axis == XAxis::kRatio ? " vs compression ratio" : " vs KV bytes held");
    if (tasks > 1) title += " (mean over " + std::to_string(tasks) + " tasks)";
    plot_lines((dir / stem).string(), title, axis == XAxis::kRatio ? "compression ratio" : "KV cache held (MiB, mean per cell)",
               y_axis_label(kind), series);
    written.push_back((dir / (stem + ".png")).string());
    written.push_back((dir / (stem + ".svg")).string());
  }
}

void niah_heatmaps(const std::vector<nlohmann::json>& results, const std::filesystem::path& dir, Stems& stems,
                   std::vector<std::string>& written) {
  struct Cell {
    double sum = 0;
    int64_t count = 0;
  };
  struct Grid {
    std::map<std::pair<double, double>, Cell> cells;  // (depth, length)
    std::set<double> depths, lengths;
  };
  using Key = std::tuple<std::string, std::string, double>;  // task, press, ratio
  std::map<Key, Grid> grids;
  std::set<std::string> tasks;
  for (const nlohmann::json& result : results) {
    if (result["kind"] != "niah") continue;
    // Only results placed on the grid (meta.depth, meta.length) can be drawn.
    const nlohmann::json meta = result.value("meta", nlohmann::json::object());
    if (!meta.is_object() || !meta.contains("depth") || !meta.contains("length") || !meta["depth"].is_number() ||
        !meta["length"].is_number())
      continue;
    const double depth = meta["depth"].get<double>(), length = meta["length"].get<double>();
    const std::string task = result["task"];
    tasks.insert(task);
    Grid& grid = grids[{task, press_label(result), reported_ratio(result)}];
    Cell& cell = grid.cells[{depth, length}];
    cell.sum += 100.0 * result["score"].get<double>();
    cell.count += 1;
    grid.depths.insert(depth);
    grid.lengths.insert(length);
  }
  for (const auto& [key, grid] : grids) {
    const auto& [task, press, ratio] = key;
    std::vector<std::string> x_labels, y_labels;
    for (double length : grid.lengths) x_labels.push_back(format_number(length));
    for (double depth : grid.depths) y_labels.push_back(format_number(depth) + "%");
    std::vector<std::vector<double>> values;
    for (double depth : grid.depths) {
      std::vector<double> row;
      for (double length : grid.lengths) {
        auto it = grid.cells.find({depth, length});
        row.push_back(it == grid.cells.end() ? std::numeric_limits<double>::quiet_NaN() : it->second.sum / it->second.count);
      }
      values.push_back(row);
    }
    std::string stem = "niah_";
    if (tasks.size() > 1) stem += file_name_piece(task) + "_";
    stem = stems.take(stem + file_name_piece(press) + "_" + format_number(ratio));
    std::string title = (tasks.size() > 1 ? task : std::string("NIAH")) + ": " +
                        (press == "none" ? std::string("no compression") : press + " at ratio " + format_number(ratio));
    plot_heatmap((dir / stem).string(), title, x_labels, y_labels, values, 0, 100, "context length (tokens)",
                 "needle depth");
    written.push_back((dir / (stem + ".png")).string());
    written.push_back((dir / (stem + ".svg")).string());
  }
}

}  // namespace

std::vector<std::string> write_report(const std::vector<nlohmann::json>& results, const std::string& out_dir) {
  const Summary summary = summarise(results);  // validates every result first: no half-written report
  const std::filesystem::path dir(out_dir);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw Error("cannot create report directory " + out_dir + ": " + error.message());

  std::vector<std::string> written;
  write_text((dir / "summary.csv").string(), summary_csv(summary));
  written.push_back((dir / "summary.csv").string());
  write_text((dir / "summary.md").string(), summary_markdown(summary));
  written.push_back((dir / "summary.md").string());
  Stems stems;
  score_plots(summary, XAxis::kRatio, dir, stems, written);
  score_plots(summary, XAxis::kHeld, dir, stems, written);
  niah_heatmaps(results, dir, stems, written);
  return written;
}

}  // namespace kvsqueeze::eval
