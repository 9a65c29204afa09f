#include "eval/fuzz_ratio.h"

#include <cmath>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "eval/python_text.h"

namespace kvsqueeze::eval {
namespace {

struct Block {
  size_t i, j, size;
};

class SequenceMatcher {
 public:
  SequenceMatcher(const std::u32string& a, const std::u32string& b) : a_(a), b_(b) {
    for (size_t j = 0; j < b.size(); ++j) b2j_[b[j]].push_back(j);
    // autojunk: in a b of 200+ elements, elements occurring more than 1% + 1 times are "popular"
    // and never start a match (they are not junk, so matches may still be extended over them).
    if (b.size() >= 200) {
      const size_t ntest = b.size() / 100 + 1;
      for (auto it = b2j_.begin(); it != b2j_.end();) {
        if (it->second.size() > ntest) it = b2j_.erase(it);
        else ++it;
      }
    }
  }

  // find_longest_match: the earliest longest block (lowest i, then lowest j) in a[alo:ahi] x
  // b[blo:bhi] among non-popular elements, then widened over equal neighbours.
  Block find_longest_match(size_t alo, size_t ahi, size_t blo, size_t bhi) const {
    size_t best_i = alo, best_j = blo, best_size = 0;
    std::unordered_map<size_t, size_t> j2len, next;
    for (size_t i = alo; i < ahi; ++i) {
      next.clear();
      auto found = b2j_.find(a_[i]);
      if (found != b2j_.end()) {
        for (size_t j : found->second) {
          if (j < blo) continue;
          if (j >= bhi) break;
          size_t k = 1;
          if (j > 0) {
            auto prev = j2len.find(j - 1);
            if (prev != j2len.end()) k = prev->second + 1;
          }
          next[j] = k;
          if (k > best_size) {
            best_i = i + 1 - k;
            best_j = j + 1 - k;
            best_size = k;
          }
        }
      }
      std::swap(j2len, next);
    }
    // No element is junk (isjunk=None), so difflib's non-junk extension covers equal neighbours
    // of any kind, popular ones included, and its junk extension never runs.
    while (best_i > alo && best_j > blo && a_[best_i - 1] == b_[best_j - 1]) {
      --best_i;
      --best_j;
      ++best_size;
    }
    while (best_i + best_size < ahi && best_j + best_size < bhi && a_[best_i + best_size] == b_[best_j + best_size])
      ++best_size;
    return {best_i, best_j, best_size};
  }

  // get_matching_blocks, summed: recursion on the parts left and right of each longest match.
  size_t matched_elements() const {
    size_t total = 0;
    std::vector<std::tuple<size_t, size_t, size_t, size_t>> queue = {{0, a_.size(), 0, b_.size()}};
    while (!queue.empty()) {
      const auto [alo, ahi, blo, bhi] = queue.back();
      queue.pop_back();
      const Block m = find_longest_match(alo, ahi, blo, bhi);
      if (m.size == 0) continue;
      total += m.size;
      if (alo < m.i && blo < m.j) queue.emplace_back(alo, m.i, blo, m.j);
      if (m.i + m.size < ahi && m.j + m.size < bhi) queue.emplace_back(m.i + m.size, ahi, m.j + m.size, bhi);
    }
    return total;
  }

 private:
  const std::u32string& a_;
  const std::u32string& b_;
  std::unordered_map<char32_t, std::vector<size_t>> b2j_;
};

}  // namespace

double sequence_matcher_ratio(const std::u32string& a, const std::u32string& b) {
  const size_t length = a.size() + b.size();
  if (length == 0) return 1.0;
  const size_t matches = SequenceMatcher(a, b).matched_elements();
  return 2.0 * static_cast<double>(matches) / static_cast<double>(length);
}

int fuzz_ratio(const std::string& a, const std::string& b) {
  const std::u32string ca = py::code_points(a), cb = py::code_points(b);
  if (ca == cb) return 100;
  if (ca.empty() || cb.empty()) return 0;
  // utils.intr: int(round(x)); Python rounds halves to even, as nearbyint does by default.
  return static_cast<int>(std::nearbyint(100.0 * sequence_matcher_ratio(ca, cb)));
}

}  // namespace kvsqueeze::eval
