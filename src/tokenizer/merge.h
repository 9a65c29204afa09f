#pragma once
// Greedy pairwise merging of adjacent symbols, best pair first: the core of both BPE flavours.
// Symbols form a doubly linked list over a vector; candidate pairs sit in a binary heap and are
// checked for staleness when popped, so a word of n symbols costs O(n log n).
#include <cstdint>
#include <queue>
#include <vector>

namespace kvsqueeze::tok {

struct Symbol {
  int32_t id = -1;
  int32_t prev = -1, next = -1;
  uint32_t start = 0, len = 0;  // byte span in the text being tokenized; len 0 once merged away
  bool mergeable = true;        // byte-fallback pieces never merge
};

// Lookup(const Symbol& left, const Symbol& right, Key* key, int32_t* merged) -> bool tells whether
// the pair merges, into which id, with which priority. Better(a, b): a is strictly preferred.
// Ties between equal keys go to the leftmost pair, as in SentencePiece and HF tokenizers.
template <typename Key, typename Lookup, typename Better>
void merge_symbols(std::vector<Symbol>& syms, Lookup lookup, Better better, std::vector<int32_t>& out) {
  struct Cand {
    Key key;
    int32_t left, right, id_left, id_right, merged;
  };
  auto lower = [&better](const Cand& a, const Cand& b) {  // a has lower priority than b
    if (better(b.key, a.key)) return true;
    if (better(a.key, b.key)) return false;
    return a.left > b.left;
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(lower)> heap(lower);
  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const Symbol& a = syms[static_cast<size_t>(l)];
    const Symbol& b = syms[static_cast<size_t>(r)];
    if (!a.mergeable || !b.mergeable) return;
    Key key{};
    int32_t merged = -1;
    if (lookup(a, b, &key, &merged)) heap.push(Cand{key, l, r, a.id, b.id, merged});
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) try_add(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Symbol& a = syms[static_cast<size_t>(c.left)];
    Symbol& b = syms[static_cast<size_t>(c.right)];
    if (a.len == 0 || b.len == 0 || a.next != c.right || a.id != c.id_left || b.id != c.id_right) continue;
    a.id = c.merged;
    a.len += b.len;
    a.next = b.next;
    if (b.next >= 0) syms[static_cast<size_t>(b.next)].prev = c.left;
    b.len = 0;
    try_add(a.prev, c.left);
    try_add(c.left, a.next);
  }
  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[static_cast<size_t>(i)].next)
    out.push_back(syms[static_cast<size_t>(i)].id);
}

// Links syms[0..n) into a list in order.
inline void link_symbols(std::vector<Symbol>& syms) {
  const auto n = static_cast<int32_t>(syms.size());
  for (int32_t i = 0; i < n; ++i) {
    syms[static_cast<size_t>(i)].prev = i - 1;
    syms[static_cast<size_t>(i)].next = i + 1 < n ? i + 1 : -1;
  }
}

}  // namespace kvsqueeze::tok
