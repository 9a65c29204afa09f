// Block-wise compression (KeyDiff paper, kvpress BlockPress): start from the first n slots of
// each head (n its budget), then repeatedly add the next block_size slots, score the union with
// the inner press and keep its best n. Like kvpress this runs after the whole context was
// evaluated (a simulation of block prefill), so the peak is the uncompressed prefill.
#include <algorithm>

#include "kvsqueeze/error.h"
#include "press/press_registry.h"
#include "press/wrapper_util.h"

namespace kvsqueeze {
namespace {

struct BlockOptions {
  int64_t block_size = 128;
};

class BlockPress : public wrapper::Single {
 public:
  BlockPress(std::unique_ptr<Press> inner, int64_t block) : Single(std::move(inner)), block_(block) {
    reject_deferred("block");
    if (inner_->needs().any())
      throw Error("press 'block' cannot wrap '" + inner_->name() +
                  "': it scores sets of kept slots plus a block, for which the forward pass's statistics do not exist; "
                  "wrap a press that scores from keys and values (keydiff, knorm, ...)");
  }
  std::string name() const override { return "block"; }
  LayerScores score(const LayerView& view) override { return inner_->score(view); }
  KeepSets select(const LayerView& view, const Budget& budget) override {
    const auto hkv = static_cast<size_t>(view.n_head_kv());
    std::vector<int64_t> n(hkv), next(hkv);
    KeepSets kept(hkv);
    for (size_t h = 0; h < hkv; ++h) {
      n[h] = budget.keep(view.length(static_cast<int64_t>(h)));
      next[h] = n[h];
      for (int32_t i = 0; i < n[h]; ++i) kept[h].push_back(i);
    }
    for (;;) {
      bool more = false;
      KeepSets cand = kept;
      for (size_t h = 0; h < hkv; ++h) {
        const int64_t len = view.length(static_cast<int64_t>(h)), end = std::min(len, next[h] + block_);
        for (int64_t i = next[h]; i < end; ++i) cand[h].push_back(static_cast<int32_t>(i));
        more = more || next[h] < len;
        next[h] = end;
      }
      if (!more) break;
      const wrapper::GatheredView g(view, cand);
      const KeepSets top = top_k_per_head(inner_->score(g.view()), n);
      for (size_t h = 0; h < hkv; ++h) {
        kept[h].clear();
        for (int32_t i : top[h]) kept[h].push_back(cand[h][static_cast<size_t>(i)]);
      }
    }
    return kept;
  }

 private:
  int64_t block_;
};

}  // namespace

void register_block_press() {
  using O = BlockOptions;
  register_wrapper<O>({"block", "Keeps the best n of the kept slots plus each next block, block after block (BlockPress, KeyDiff paper).", {}, 1,
                       "Simulated after the whole context was evaluated, as kvpress does (not during chunked prefill). "
                       "Inner presses needing forward-pass statistics are rejected."},
                      {field("block_size", &O::block_size, 1, 1e9, "slots added per step")},
                      [](const O& o, PressList inner) { return std::make_unique<BlockPress>(std::move(inner.at(0)), o.block_size); });
}

}  // namespace kvsqueeze
