#pragma once
// Presses that decide over every layer at once or run extra passes (KVzip, KVCompose) and
// DuoAttention's head scoring: what they decided, for tests and reports.
#include <string>
#include <vector>

#include "kvsqueeze/press.h"

namespace kvsqueeze {

// What a deferred press's finish() computed.
struct GlobalPressTrace {
  // [layer][KV head][slot]: the raw scores (before protected slots are set to +inf); empty for
  // layers that were not scored (sliding-window layers).
  std::vector<LayerScores> scores;
  // KVzip: the ids of every repeat pass, and the chat-template prefix length.
  std::vector<std::vector<int32_t>> repeat_ids;
  int64_t prefix_length = 0;
  // KVCompose: per layer the composite (sorted) scores, and the slots kept per layer / per head.
  std::vector<std::vector<float>> composite;
  std::vector<int64_t> kept_per_layer;
  std::vector<std::vector<int64_t>> kept_per_head;
};

class TracedPress : public Press {
 public:
  const GlobalPressTrace& trace() const { return trace_; }

 protected:
  GlobalPressTrace trace_;
};

// Presses that run extra passes over the context after the prefill (kvzip, kvcompose): they
// record the context's token ids and first position while it is evaluated, then compress every
// layer in finish().
class ContextPassPress : public TracedPress {
 public:
  StatsRequest needs() const override { return {.token_ids = true}; }
  PressTraits traits() const override { return {.needs_all_layers = true}; }
  void observe(const LayerView& v) override {
    if (v.layer != 0) return;  // every layer sees the same tokens
    ids_.insert(ids_.end(), v.stats.tokens.begin(), v.stats.tokens.end());
    if (first_pos_ < 0 && !v.stats.positions.empty()) first_pos_ = v.stats.positions.front();
  }

 protected:
  void forget_context() {
    ids_.clear();
    first_pos_ = -1;
  }
  // The position after the observed context; throws, naming the press, when no context was
  // observed or the session has moved past it.
  int32_t context_end(const Session& session) const;
  // Clears the session's layer hook and statistics request when the extra passes end, however
  // they end.
  struct PassGuard {
    Session& session;
    ~PassGuard();
  };
  std::vector<int32_t> ids_;
  int32_t first_pos_ = -1;
};

// DuoAttention on-the-fly head scores [layer][KV head] (kvpress duo_attention_on_the_fly):
// mean pre-RoPE query and key of each layer over `texts` (BOS as the tokenizer adds it),
// repeated over positions 0..q_len-1 with the layer's RoPE; the last query's attention over
// them, cumulated, averaged over positions ("area under the curve"), over the texts and over
// the G query heads of each KV head.
std::vector<std::vector<float>> duo_attention_head_scores(const Model& model, const std::vector<std::string>& texts, int64_t q_len);
// The built-in calibration texts: 50 word rotations of a short public-domain-style story
// written for kvsqueeze (the texts the kvpress fixtures were recorded with).
std::vector<std::string> duo_attention_default_texts();
// Reads calibration texts from a file: texts separated by lines holding only "---".
std::vector<std::string> duo_attention_read_texts(const std::string& path);
// The streaming heads a duo_attention press chose ([layer][KV head], 1 = streaming; empty
// before it compressed anything). Its trace's scores are the head scores ([layer][0][head]).
std::vector<std::vector<char>> duo_attention_streaming_mask(const Press& duo_attention);

}  // namespace kvsqueeze
