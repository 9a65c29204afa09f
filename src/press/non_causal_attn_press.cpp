// NonCausalAttn (kvpress NonCausalAttnPress, docs/METHODS.md §3.10): the attention each slot
// receives from the context's queries, computed without a causal mask inside chunks of
// chunk_size slots, averaged over the query group, times ||v||, avg-pooled over 3 slots and
// z-scored over all heads at once. Prefill only: the queries are gathered over chunks.
#include "press/non_causal_math.h"
#include "press/press_registry.h"

namespace kvsqueeze {
namespace {

class NonCausalAttnPress : public ScorerPress {
 public:
  explicit NonCausalAttnPress(non_causal::Options o) : o_(o) {}
  std::string name() const override { return "non_causal_attn"; }
  StatsRequest needs() const override { return qstats::all_query_rows(); }
  void observe(const LayerView& v) override { log_.observe(v); }
  LayerScores score(const LayerView& v) override { return non_causal::layer_scores(v, log_.at(v, "non_causal_attn"), 0, 0, o_); }

 private:
  non_causal::Options o_;
  qstats::QueryLog log_;
};

}  // namespace

void register_non_causal_attn_press() {
  using O = non_causal::Options;
  register_press<O>(
      {"non_causal_attn", "Attention received from the context's queries without a causal mask, in chunks (Compactor's attention part).", {}, 0,
       "Fix (default): the last, shorter chunk is not padded, so only real queries and keys count; parity=true "
       "restores kvpress's padding. No 1/sqrt(d) unless scale is set. The context's pre-RoPE queries are kept "
       "until the layer is compressed (rows x heads x d floats per layer)."},
      {field("chunk_size", &O::chunk, 1, 1e7, "slots per chunk of non-causal attention"),
       field("scale", &O::scale, 0, 1e6, "multiplies q.k (kvpress applies no 1/sqrt(d): 1)"),
       field("parity", &O::parity,
             "reproduce kvpress's padding of the last chunk: padded keys take softmax mass (logit -1e-9) and "
             "padded query rows add 1/chunk_size to every slot of that chunk")},
      [](const O& o) { return std::make_unique<NonCausalAttnPress>(o); });
}

}  // namespace kvsqueeze
