// Per-row head metrics of the profiler (docs/METHODS.md §5.2), HeadKV's retrieval scores and the
// answer gate (§5.3).
#include <algorithm>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/metrics.h"
#include "kvsqueeze/head_profile.h"

namespace kvsqueeze::profile {
namespace {

// DiliLazyKV treats sums at or below 1e-9 as zero when dividing (structure_head_InfScore.py).
constexpr double kTiny = 1e-9;

double ratio_or_zero(double num, double den) { return den > kTiny ? num / den : 0.0; }

// The needle clipped to the row.
std::pair<int64_t, int64_t> clip(int64_t begin, int64_t end, int64_t len) {
  begin = std::clamp<int64_t>(begin, 0, len);
  end = std::clamp<int64_t>(end, begin, len);
  return {begin, end};
}

}  // namespace

std::vector<int64_t> top_positions(const std::vector<float>& row, int64_t k) {
  const int64_t len = static_cast<int64_t>(row.size());
  k = std::clamp<int64_t>(k, 0, len);
  std::vector<int64_t> order(static_cast<size_t>(len));
  for (int64_t i = 0; i < len; ++i) order[static_cast<size_t>(i)] = i;
  // Larger first; equal values: the later position first (§0).
  const auto before = [&](int64_t a, int64_t b) {
    const float va = row[static_cast<size_t>(a)], vb = row[static_cast<size_t>(b)];
    return va != vb ? va > vb : a > b;
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
  order.resize(static_cast<size_t>(k));
  return order;
}

RowMetrics row_metrics(const std::vector<float>& row, int64_t needle_begin, int64_t needle_end, int64_t top_k) {
  const int64_t len = static_cast<int64_t>(row.size());
  const auto [begin, end] = clip(needle_begin, needle_end, len);
  RowMetrics m;
  for (int64_t i : top_positions(row, top_k)) {
    const double a = row[static_cast<size_t>(i)];
    if (i >= begin && i < end) {
      m.wtp += a;
      ++m.diligent;
    } else {
      m.wfp += a;
      ++m.distracted;
    }
  }
  double needle_mass = 0;
  for (int64_t i = begin; i < end; ++i) needle_mass += row[static_cast<size_t>(i)];
  m.wfn = std::max(0.0, needle_mass - m.wtp);
  m.precision = ratio_or_zero(m.wtp, m.wtp + m.wfp);
  m.recall = ratio_or_zero(m.wtp, m.wtp + m.wfn);
  m.infscore = ratio_or_zero(2.0 * m.precision * m.recall, m.precision + m.recall);
  m.subconscious = (end - begin) - m.diligent;
  m.diffuse_peripheral = len - (end - begin) - m.distracted;
  return m;
}

double retrieval_step(const std::vector<float>& row, int64_t needle_begin, int64_t needle_end,
                      const std::vector<int32_t>& prompt_ids, int32_t generated) {
  const auto [begin, end] = clip(needle_begin, needle_end, static_cast<int64_t>(row.size()));
  if (end <= begin) return 0.0;
  const int64_t top = top_positions(row, 1).front();
  const bool copied = top >= begin && top < end && top < static_cast<int64_t>(prompt_ids.size()) &&
                      prompt_ids[static_cast<size_t>(top)] == generated;
  return copied ? 1.0 / static_cast<double>(needle_end - needle_begin) : 0.0;
}

double retrieval_reasoning_step(const std::vector<float>& row, int64_t needle_begin, int64_t needle_end,
                                int64_t answer_tokens) {
  const int64_t needle_len = needle_end - needle_begin;
  if (needle_len <= 0 || answer_tokens <= 0) return 0.0;
  const auto [begin, end] = clip(needle_begin, needle_end, static_cast<int64_t>(row.size()));
  double score = 0;
  for (int64_t i : top_positions(row, needle_len))
    if (i >= begin && i < end) score += 10.0 * row[static_cast<size_t>(i)] / static_cast<double>(needle_len * answer_tokens);
  return score;
}

std::vector<std::string> gate_names() { return {"f1", "rouge", "none"}; }
std::vector<std::string> metric_names() { return {"infscore", "precision", "recall", "retrieval", "retrieval_reasoning"}; }

double gate_score(const std::string& gate, const std::string& answer, const std::string& reference) {
  if (gate == "f1") return eval::qa_f1(answer, reference);
  if (gate == "rouge") return eval::rouge_l(answer, reference);
  if (gate == "none") return 1.0;
  throw Error("unknown gate '" + gate + "' (valid: f1, rouge, none)");
}

}  // namespace kvsqueeze::profile
