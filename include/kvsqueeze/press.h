#pragma once
// Presses: methods that decide which KV slots to keep. A press scores the slots of one layer
// from a narrow view (the cache runs and the statistics it declared it needs); a budget rule
// then keeps the best slots of each (layer, KV head) and the cache compacts in place.
// Presses are registered by name with typed, documented options (press_registry.cpp).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/layer_stats.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze {

// What a press sees of one layer, right after that layer's attention.
struct LayerView {
  const ModelConfig& config;
  int64_t layer;
  const KvCache& cache;
  const LayerStats& stats;
};

// Scores per KV head of the layer, one per slot of its run; higher is kept. Slots that must
// never be evicted (sinks, windows) score +infinity.
using LayerScores = std::vector<std::vector<float>>;

class Press {
 public:
  virtual ~Press() = default;
  virtual std::string name() const = 0;
  // Statistics the forward pass must compute for this press.
  virtual StatsRequest needs() const { return {}; }
  // Called for every prefill chunk of the context, before score() on the last one, so a press
  // can accumulate statistics over chunks (e.g. attention column sums).
  virtual void observe(const LayerView& view) { (void)view; }
  virtual LayerScores score(const LayerView& view) = 0;
};

struct PressOption {
  std::string name;
  std::string type;  // "float", "int", "bool"
  double default_value = 0;
  double min = 0, max = 0;  // valid range (inclusive)
  std::string doc;
};

struct PressInfo {
  std::string name;
  std::string doc;
  std::vector<PressOption> options;
};

// Option values after validation, by name (bools as 0/1).
using PressOptionValues = std::map<std::string, double>;

// Every registered press, sorted by name.
std::vector<PressInfo> list_presses();
// Builds a press from its name and KEY=VALUE options. Unknown press or option, a value of the
// wrong type or out of range: kvsqueeze::Error naming the valid choices.
std::unique_ptr<Press> make_press(const std::string& name, const std::vector<std::string>& options);

// Keeps the floor(len x (1 - ratio)) best-scoring slots of every run of the layer (ties go to
// the later position; protected slots always stay, even beyond the budget) and compacts.
// Sliding-window layers are left alone, as kvpress does for gemma3. Returns slots removed.
int64_t compress_layer(Press& press, const LayerView& view, double ratio, KvCache& cache);

class Session;
// Evaluates a context with `press` compressing each layer right after its attention on the
// last chunk (as kvpress does after the whole context; every chunk is observed), then frees
// what compression removed, keeping room for `slack` more tokens per run.
void prefill_with_press(Session& session, const std::vector<int32_t>& ids, Press& press, double ratio, int64_t slack);

}  // namespace kvsqueeze
