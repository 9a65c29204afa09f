#pragma once
// Presses: methods that decide which KV slots to keep. A press scores the slots of one layer
// from a narrow view (the cache runs and the statistics it declared it needs); a budget rule
// then keeps the best slots of each (layer, KV head) and the cache compacts in place.
// Wrappers (adakv, composed, chunk, ...) take other presses and change how budgets are shared
// or how scores are formed. Presses are registered by name with typed, documented options and
// built from expressions such as "adakv(expected_attention(epsilon=0.01))".
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/layer_stats.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze {

class Session;

// What a press sees of one layer, right after that layer's attention: the cached runs of each
// KV head (possibly a sub-range, for chunk-wise wrappers) and the statistics it asked for.
// Presses read the runs through the accessors only (host floats, whatever the backend).
struct LayerView {
  const Model& model;
  int64_t layer = 0;
  const LayerStats& stats;

  LayerView(const Model& m, int64_t l, const KvCache& cache, const LayerStats& s);
  // Slots [begin[h], end[h]) of each head of `full` (clamped to the runs), with statistics `s`.
  LayerView(const LayerView& full, const std::vector<int64_t>& begin, const std::vector<int64_t>& end, const LayerStats& s);
  // Rows the view holds itself, as floats: per head, len x head_dim_k keys, len x head_dim_v
  // values and len positions (gathered copies of another view's slots).
  struct OwnedRows {
    std::vector<std::vector<float>> keys, values;
    std::vector<std::vector<int32_t>> positions;
  };
  LayerView(const Model& m, int64_t l, OwnedRows rows, const LayerStats& s);

  const ModelConfig& config() const { return model.config(); }
  int64_t n_head_kv() const { return static_cast<int64_t>(runs_.size()); }
  int64_t group() const { return config().n_head / n_head_kv(); }  // query heads per KV head
  int64_t head_dim_k() const { return config().head_dim_k; }
  int64_t head_dim_v() const { return config().head_dim_v; }
  int64_t length(int64_t h) const { return runs_[static_cast<size_t>(h)].len; }
  std::span<const int32_t> positions(int64_t h) const {
    const auto& r = runs_[static_cast<size_t>(h)];
    return {r.pos, static_cast<size_t>(r.len)};
  }
  // Keys / values of head h as len x d floats (post-RoPE keys, as cached; channels a press
  // pruned read 0).
  std::vector<float> keys(int64_t h) const;
  std::vector<float> values(int64_t h) const;
  // One slot's key (head_dim_k floats) or value (head_dim_v floats).
  void key_row(int64_t h, int64_t slot, float* dst) const;
  void value_row(int64_t h, int64_t slot, float* dst) const;
  // q . key of a slot (q: head_dim_k floats), with the attention kernel's arithmetic.
  float key_dot(int64_t h, int64_t slot, const float* q) const;
  // Keys with RoPE undone (rotated back from their positions): what W_k (+k_norm) produced.
  std::vector<float> pre_rope_keys(int64_t h) const;
  // RoPE frequencies of this layer (global or sliding base, scaling included).
  std::span<const float> inv_freq() const;

 private:
  std::vector<KvRun> runs_;                  // per KV head: host rows the cache's backend lends
  std::shared_ptr<const OwnedRows> owned_;  // what runs_ point into, for views of OwnedRows
};

// Scores per KV head of the layer, one per slot of its run; higher is kept. Slots that must
// never be evicted (sinks, windows) score +infinity.
using LayerScores = std::vector<std::vector<float>>;
// Per KV head, the slot indices kept, strictly ascending.
using KeepSets = std::vector<std::vector<int32_t>>;

// How much of a layer to keep: a fraction removed, or an absolute number of slots per head
// (the average per head for allocators that share a layer's budget unevenly).
struct Budget {
  double ratio = 0.0;   // fraction removed, in [0, 1)
  int64_t tokens = -1;  // >= 0: keep this many slots per head instead
  // Slots a run of `len` keeps under this budget (kvpress: max(1, int(len * (1 - ratio)))).
  int64_t keep(int64_t len) const;
  bool none() const { return tokens < 0 && ratio == 0.0; }
};

// What a press declares about its schedule and capabilities, read by the pipeline instead of
// the press's name. Plain data: a press returns it from traits(), wrappers may pass on their
// inner press's.
struct PressTraits {
  // Must see every layer before deciding (global allocation across layers, extra passes over
  // the context): it collects in observe() and compresses everything in finish(), after the
  // whole context was evaluated.
  bool needs_all_layers = false;
  // Its own options set the budget (per_layer's ratios, pyramid_merge's windows): it compresses
  // even when the pipeline's budget is none, and the ratio it achieves is its own.
  bool own_budget = false;
  // Its method compresses while decoding on its own trigger (pyramid_merge pools whenever W_k
  // new slots accumulate): with no decoding policy given, the pipeline uses the prefill press as
  // decode press on its own trigger (triggers()).
  bool compresses_while_decoding = false;
  // Slots per run such a press fills between two of its decoding-time compressions: the slack
  // the pipeline keeps when it releases memory after one (0: no preference).
  int64_t decode_slack = 0;
};

// kvpress's BasePress: a press compresses a layer of the cache, right after that layer's
// attention. Most presses are scorers (ScorerPress below); the rest (allocators, wrappers,
// presses that transform kept slots or decide over all layers) override the hooks they need.
class Press {
 public:
  virtual ~Press() = default;
  virtual std::string name() const = 0;
  // Statistics the forward pass must compute for this press.
  virtual StatsRequest needs() const { return {}; }
  // Its schedule and capabilities (see PressTraits).
  virtual PressTraits traits() const { return {}; }

  // Called for every prefill chunk of the context, before compress() on the last one, so a
  // press can accumulate statistics over chunks (e.g. attention column sums).
  virtual void observe(const LayerView& view) { (void)view; }
  // Per-slot scores (higher kept, +inf protected). Presses that are not scorers (allocators
  // over a fixed rule) throw.
  virtual LayerScores score(const LayerView& view);
  // Which slots each head keeps under `budget`. Default: the uniform rule on score().
  virtual KeepSets select(const LayerView& view, const Budget& budget);
  // The budget the next score() serves. Presses whose scores depend on it (compactor: blending
  // = cr) keep it; wrappers pass on what their inner presses get (default: the same budget to
  // every inner press). compress_layer() calls it before compress(); wrappers that score their
  // inner press under a budget of their own call it on the inner press first.
  virtual void set_budget(const Budget& budget) {
    for (Press* p : inner_presses()) p->set_budget(budget);
  }
  // Compresses the layer in the cache and returns what each head kept (slot indices before the
  // call). Default: compact to select(), then compacted(). Presses that transform kept slots
  // (key re-rotation, channel pruning) or run several steps (composed) override it.
  virtual KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache);
  // The layer was compacted to `keep`: presses holding per-slot state (accumulated attention)
  // remap it. Wrappers forward it to their inner presses.
  virtual void compacted(int64_t layer, const KeepSets& keep) { (void)layer, (void)keep; }
  // Presses with their own trigger (LagKV: once 2*lag slots past the compressed prefix are
  // uncompressed) say whether `view`'s layer should be compressed now, after a prefill chunk
  // or a decode step; the pipeline then calls compress() with the session's budget, which such
  // a press interprets itself (LagKV keeps k of each scored partition). Before the last chunk
  // the view has window probabilities only if needs() sets window_every_chunk.
  virtual bool triggers(const LayerView& view) const { (void)view; return false; }
  // Presses with PressTraits::needs_all_layers compress every layer here, once the whole
  // context was evaluated.
  virtual void finish(Session& session, const Budget& budget) { (void)session, (void)budget; }
  // Wrappers: the presses they wrap, in order (tests compare their scores to the reference).
  virtual std::vector<Press*> inner_presses() { return {}; }

  // Presses that renumber the kept slots' positions (key re-rotation: 0..n-1): the position the
  // next token must take once every layer was compressed, -1 if none. prefill_with_press sets it
  // on the session (Session::set_next_position) after compression.
  int64_t next_position() const { return next_position_; }

 protected:
  int64_t next_position_ = -1;  // set by presses that renumber positions, after they compress
};

// kvpress's ScorerPress: a press that only scores slots. A subclass implements score() (and
// needs() when it reads statistics); the uniform rule keeps the best slots of each head and the
// layer is compacted to them.
class ScorerPress : public Press {
 public:
  LayerScores score(const LayerView& view) override = 0;
  KeepSets select(const LayerView& view, const Budget& budget) final { return Press::select(view, budget); }
  KeepSets compress(const LayerView& view, const Budget& budget, KvCache& cache) final {
    return Press::compress(view, budget, cache);
  }
};

struct PressOption {
  std::string name;
  std::string type;  // "float", "int", "bool", "choice", "string", "floats"
  double default_value = 0;
  double min = 0, max = 0;  // valid range (inclusive) of numbers
  std::string doc;
  std::vector<std::string> choices;  // "choice": the valid words; default_text is the default
  std::string default_text;          // default of "choice", "string" and "floats"
};

struct PressInfo {
  std::string name;
  std::string doc;
  std::vector<PressOption> options;
  int inner = 0;  // presses it wraps: 0 (a scorer), 1, or -1 (one or more)
  std::string notes;  // fixes over upstream, limitations (shown by `presses --json`)
  // Read by the pipeline instead of the press's name. Query-aware presses (Finch) score
  // the context by the question's attention: non-empty, this option receives the number of
  // question tokens at the end of the evaluated ids, and the press only runs query-aware.
  std::string question_length_option;
  // Value-merging wrappers: the word of the merge=WORD option that wraps an expression in this
  // press (merge_option_press), empty for the others.
  std::string merge_policy;
};

// Every built-in press, sorted by name (those added by register_external_press are not listed:
// they belong to whoever added them, e.g. Python objects).
std::vector<PressInfo> list_presses();
// Adds a press defined outside the library (a Python ScorerPress subclass, python/src): from then
// on `info.name` is a press in expressions, alone or inside any wrapper, without options
// (info.inner and info.options are ignored); make() builds one press object per use. Throws Error
// for a name that is not an identifier or is taken. Safe to call while other threads build presses.
void register_external_press(PressInfo info, std::function<std::unique_ptr<Press>()> make);
// Builds a press from an expression ("snapkv", "adakv(expected_attention(epsilon=0.01))",
// "composed(snapkv,think)") and KEY=VALUE options: KEY sets an option of the outermost press,
// NAME.KEY of every press called NAME in the expression. Unknown press or option, a value of
// the wrong type or out of range, a malformed expression: kvsqueeze::Error naming the valid choices.
std::unique_ptr<Press> make_press(const std::string& expression, const std::vector<std::string>& options = {});
// KEY=VALUE options may include merge=WORD (similarity, cam: PressInfo::merge_policy), which wraps
// the whole expression in the press declaring that word (merging(...), cam(...); their options
// then as merging.KEY=V / cam.KEY=V). The press such an option adds, or "" without one; throws
// for another value.
std::string merge_option_press(const std::vector<std::string>& options);
// Whether a press expression names `press` (as a whole word): "adakv(snapkv)" names snapkv.
bool expression_mentions(const std::string& expression, const std::string& press);
// Whether some press of the expression is query-aware only (PressInfo::question_length_option).
bool expression_needs_question(const std::string& expression);
// The options telling the expression's query-aware presses the question's length
// ("NAME.OPTION=N" for each), empty when none is query-aware. Throws for a malformed expression.
std::vector<std::string> question_length_options(const std::string& expression, int64_t question_tokens);
// make_press for checking an expression and reading its traits before any question exists: the
// query-aware presses' question length, set per question when they run, gets a placeholder.
std::unique_ptr<Press> make_press_for_checks(const std::string& expression, std::vector<std::string> options);

// Takes the pipeline-level options out of `press_opts`: budget=N (slots kept per head, an
// absolute budget instead of the ratio) and budget_bytes=B (bytes the compressible layers'
// K, V and positions may hold, turned into slots per head for this model and element type).
Budget take_budget_options(const ModelConfig& config, KvType k_type, KvType v_type, double ratio, std::vector<std::string>& press_opts);

// Compacts every head of `layer` to `keep` (slot indices, ascending).
void compact_layer(KvCache& cache, int64_t layer, const KeepSets& keep);
// The best `counts[h]` slots of each head (protected +inf slots always, even beyond the count;
// NaN lowest; equal scores: the later slot first), ascending.
KeepSets top_k_per_head(const LayerScores& scores, const std::vector<int64_t>& counts);

// Compresses one layer with `press` under `budget` (sliding-window layers are left alone:
// their window already bounds them). Returns the slots removed.
int64_t compress_layer(Press& press, const LayerView& view, const Budget& budget, KvCache& cache);

// Evaluates a context with `press` compressing each layer right after its attention on the
// last chunk (as kvpress does after the whole context; every chunk is observed), then frees
// what compression removed, keeping room for `slack` more tokens per run.
void prefill_with_press(Session& session, const std::vector<int32_t>& ids, Press& press, const Budget& budget, int64_t slack);

}  // namespace kvsqueeze
