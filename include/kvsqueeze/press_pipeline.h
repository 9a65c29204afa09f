#pragma once
// Where and when a press compresses a session's cache (docs/METHODS.md §2):
//   - prefill: once, each layer right after its attention on the context's last chunk (kvpress);
//   - chunked prefill: after every chunk, back to the budget of the tokens seen so far, so the
//     peak cache stays near the budget plus one chunk;
//   - presses with their own trigger (LagKV, pyramid_merge) compress whenever they ask to, in
//     prefill and decoding; a press whose method compresses while decoding (pyramid_merge) keeps
//     doing so when no decoding policy is given;
//   - decoding: every `decode_interval` steps back to `decode_target` slots per head
//     (kvpress DecodingPress), or to (1 - decode_ratio) of the positions seen
//     (CompressionRatioDecodingPress); a separate decode press gives PrefillDecodingPress.
// The runner installs itself as the session's layer hook for its lifetime.
#include <cstdint>
#include <vector>

#include "kvsqueeze/press.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

struct CompressionPolicy {
  bool every_chunk = false;      // compress after every prefill chunk, not only the last
  int64_t decode_interval = 0;   // > 0: compress during decoding every this many steps
  int64_t decode_target = 0;     // slots per head kept by decoding compression (0: use decode_ratio)
  double decode_ratio = 0.0;     // fraction of the positions seen that decoding compression removes
  bool decode_triggers = false;  // let the decode press compress on its own trigger (LagKV: every lag tokens)
  bool decoding() const { return decode_interval > 0 || decode_triggers; }
  // Checks ranges; throws kvsqueeze::Error naming the bad setting.
  void validate() const;
};

// The policy a run with `press` follows: `policy`, or, when it asks for no decoding-time
// compression and the press's method compresses while decoding (pyramid_merge), decoding on the
// press's own trigger. PressRunner, generate and the eval suite all decide by this.
CompressionPolicy effective_policy(CompressionPolicy policy, const Press* press);

// Runs press.finish() on the context in `session` (presses that decide with every layer at hand:
// global top-k, KVzip) and keeps the context's last logits: the first generated token comes from
// them (compression does not change the pass that produced them), while finish()'s extra passes
// would leave the session without any.
void finish_press(Press& press, Session& session, const Budget& budget);

class PressRunner {
 public:
  // `prefill_press` compresses the context (may be null: decoding only); `decode_press` the
  // generated tokens (may be null; may be the same object).
  PressRunner(Session& session, Press* prefill_press, const Budget& budget, Press* decode_press, const CompressionPolicy& policy);
  ~PressRunner();
  PressRunner(const PressRunner&) = delete;
  PressRunner& operator=(const PressRunner&) = delete;

  // Evaluates the context with compression, then frees the slack beyond `slack` slots per run.
  void prefill(const std::vector<int32_t>& ids, int64_t slack);
  // The same one chunk at a time: begin_prefill, prefill_step until it returns true, finish_prefill.
  void begin_prefill(const std::vector<int32_t>& ids);
  bool prefill_step();
  void finish_prefill(int64_t slack);
  // From now on evaluations are decoding steps (the decode policy applies).
  void start_decoding();
  // Whether the layer hook does anything now: false while decoding without decoding-time
  // compression (then the session's tokens may be evaluated in a batch, without the hook).
  bool acts_now() const { return !decoding_ || (decode_press_ && policy_.decoding()); }

  int64_t compressions() const { return compressions_; }  // layer compressions so far
  int64_t slots_removed() const { return removed_; }

 private:
  void on_layer(const LayerStats& st, KvCache& cache);
  Session& session_;
  Press* prefill_press_;
  Press* decode_press_;
  Budget budget_;
  CompressionPolicy policy_;
  bool decoding_ = false;
  std::vector<int32_t> last_decode_compression_;  // per layer: next position when it last compressed
  int64_t compressions_ = 0, removed_ = 0;
};

}  // namespace kvsqueeze
