// The evaluation grid: cells, the options that reach each press, resume keys, run config.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <utility>
#include <sstream>

#include "eval/task_text.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/runner.h"
#include "kvsqueeze/press.h"

namespace kvsqueeze::eval {
namespace {

// Budget options and merge=similarity|cam (a wrapper around every press) go to every cell.
bool is_global_option(const std::string& o) {
  return o.rfind("budget=", 0) == 0 || o.rfind("budget_bytes=", 0) == 0 || o.rfind("merge=", 0) == 0;
}

// Whether NAME.KEY=V options reach `expression`: it names NAME, or merge= wraps it in NAME.
bool reaches(const std::string& expression, const std::string& name, const EvalSettings& s) {
  return expression_mentions(expression, name) || (!name.empty() && merge_option_press(s.press_opts) == name);
}

// The options of `press_opts` for one press of the grid: budget and merge options go to every
// cell, NAME.KEY=V to the presses whose expression names NAME, KEY=V only when the grid has one press.
std::vector<std::string> options_for(const std::string& expression, const EvalSettings& s) {
  std::vector<std::string> out;
  for (const auto& o : s.press_opts) {
    const size_t eq = o.find('=');
    if (eq == std::string::npos) throw ParameterError("options", "`options` '" + o + "' is not KEY=VALUE or NAME.KEY=VALUE");
    const std::string key = o.substr(0, eq);
    if (is_global_option(o)) {
      out.push_back(o);
    } else if (const size_t dot = key.find('.'); dot != std::string::npos) {
      if (reaches(expression, key.substr(0, dot), s)) out.push_back(o);
    } else {
      if (s.presses.size() > 1)
        throw ParameterError("options", "`options` " + o + " is ambiguous with several presses: write NAME." + o + " (NAME: the press it is for)");
      out.push_back(o);
    }
  }
  return out;
}

// "EXPR@R" (an '@' outside parentheses) is EXPR at ratio R only; a plain EXPR runs at every --ratio.
std::pair<std::string, std::optional<double>> split_fixed_ratio(const std::string& entry) {
  int depth = 0;
  for (size_t i = entry.size(); i-- > 0;) {
    const char c = entry[i];
    if (c == ')') ++depth;
    if (c == '(') --depth;
    if (c != '@' || depth != 0) continue;
    const std::string text = entry.substr(i + 1);
    char* end = nullptr;
    const double r = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size())
      throw ParameterError("presses", "`presses` " + entry + ": '" + text + "' after '@' is not a ratio");
    return {entry.substr(0, i), r};
  }
  return {entry, std::nullopt};
}

void check_ratio(double r) {
  if (!(r >= 0.0 && r < 1.0)) throw ParameterError("ratios", "`ratios` values must be in [0, 1) (the fraction removed), got " + format_number(r));
}

}  // namespace

std::string GridCell::label() const { return press == "none" ? "none" : press + "@" + format_number(ratio); }

std::vector<GridCell> make_grid(const EvalSettings& s) {
  std::vector<GridCell> grid{{"none", 0.0, {}}};
  for (double r : s.ratios) check_ratio(r);
  for (const auto& o : s.press_opts)
    if (const size_t dot = o.substr(0, o.find('=')).find('.'); dot != std::string::npos) {
      bool used = false;
      for (const auto& p : s.presses) used = used || reaches(split_fixed_ratio(p).first, o.substr(0, dot), s);
      if (!used) throw ParameterError("options", "`options` " + o + ": no press of the grid is called '" + o.substr(0, dot) + "'");
    }
  for (const auto& entry : s.presses) {
    if (entry == "none") continue;
    const auto [p, fixed] = split_fixed_ratio(entry);
    if (!fixed && s.ratios.empty()) throw ParameterError("ratios", "`ratios` needs at least one value (or write PRESS@RATIO)");
    if (fixed) check_ratio(*fixed);
    std::vector<std::string> opts = options_for(p, s);
    std::vector<std::string> checked = opts;
    ModelConfig any;  // budget options are split off for validation only
    any.layer_sliding = {false};
    any.head_dim_k = any.head_dim_v = any.n_head_kv = 1;
    take_budget_options(any, KvType::F16, KvType::F16, 0.0, checked);
    make_press_for_checks(p, checked);  // throws for an unknown press or option, before anything runs
    for (double r : fixed ? std::vector<double>{*fixed} : s.ratios) {
      // An init-capture, not p itself: clang before 16 cannot capture a structured binding.
      const bool listed =
          std::any_of(grid.begin(), grid.end(), [&, &press = p](const GridCell& c) { return c.press == press && c.ratio == r; });
      if (!listed) grid.push_back({p, r, opts});  // "snapkv" at 0.5 and "snapkv@0.5" are one cell
    }
  }
  return grid;
}

std::string result_key(const Sample& sample, const GridCell& cell, const EvalSettings& s) {
  std::ostringstream k;
  k << sample.task << "|" << sample.id << "|" << cell.press << "|" << (cell.press == "none" ? "0" : format_number(cell.ratio));
  for (const auto& o : cell.options) k << "|" << o;
  if (cell.press != "none") {
    if (s.policy.every_chunk) k << "|every_chunk";
    if (s.policy.decode_interval > 0)
      k << "|decode:" << s.policy.decode_interval << ":" << s.policy.decode_target << ":" << format_number(s.policy.decode_ratio);
    if (s.query_aware) k << "|query_aware";
  }
  return k.str();
}

nlohmann::json run_config(const Model& model, const EvalSettings& s) {
  char sha[32];
  std::snprintf(sha, sizeof sha, "%016llx", static_cast<unsigned long long>(model.fingerprint()));
  // The file name and content hash identify the model; the folder is the user's business.
  return {{"model", std::filesystem::path(s.model_path).filename().string()},
          {"model_sha", sha},
          {"chunk", s.session.chunk},
          {"ctx_size", s.session.ctx_size},
          {"kv_type", kv_types_label(s.session.kv_type_k, s.session.kv_type_v)},
          {"kv_rotation", kv_transform_name(s.session.kv_rotation)},
          {"kv_centering", kv_transform_name(s.session.kv_centering)},
          {"reference_kv_type", s.reference_kv_type ? kv_type_name(*s.reference_kv_type) : "same"},
          {"seed", s.seed},
          {"chat", s.chat},
          {"query_aware", s.query_aware},
          {"every_chunk", s.policy.every_chunk},
          {"decode_interval", s.policy.decode_interval},
          {"decode_target", s.policy.decode_target},
          {"decode_ratio", s.policy.decode_ratio},
          {"threads", s.session.threads}};
}

}  // namespace kvsqueeze::eval
