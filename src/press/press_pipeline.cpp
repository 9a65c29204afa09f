#include "kvsqueeze/press_pipeline.h"

#include <algorithm>
#include <cmath>

#include "kvsqueeze/error.h"

namespace kvsqueeze {

void CompressionPolicy::validate() const {
  if (decode_interval < 0) throw ParameterError("decode_interval", "`decode_interval` must be >= 0, got " + std::to_string(decode_interval));
  if (decode_target < 0) throw ParameterError("decode_target", "`decode_target` must be >= 0, got " + std::to_string(decode_target));
  if (!(decode_ratio >= 0.0 && decode_ratio < 1.0))
    throw ParameterError("decode_ratio", "`decode_ratio` must be in [0, 1) (the fraction of the positions seen removed), got " + std::to_string(decode_ratio));
  if (decode_interval > 0 && decode_target == 0 && decode_ratio == 0.0)
    throw ParameterError("decode_interval", "`decode_interval` needs a target: `decode_target` N (slots per head) or `decode_ratio` R");
  if (decode_interval == 0 && (decode_target > 0 || decode_ratio > 0.0))
    throw ParameterError("decode_interval", "`decode_target` / `decode_ratio` need `decode_interval` N (compress every N decoding steps)");
  if (decode_target > 0 && decode_ratio > 0.0) throw ParameterError("decode_target", "give either `decode_target` or `decode_ratio`, not both");
}

CompressionPolicy effective_policy(CompressionPolicy policy, const Press* press) {
  if (!policy.decoding() && press && press->traits().compresses_while_decoding) policy.decode_triggers = true;
  return policy;
}

PressRunner::PressRunner(Session& session, Press* prefill_press, const Budget& budget, Press* decode_press,
                         const CompressionPolicy& policy)
    : session_(session), prefill_press_(prefill_press), decode_press_(decode_press), budget_(budget), policy_(policy) {
  policy_.validate();
  // A press whose method compresses while decoding (pyramid_merge) keeps doing so on its own
  // trigger when no decoding policy was asked for.
  if (!decode_press_ && !policy_.decoding()) {
    policy_ = effective_policy(policy_, prefill_press_);
    if (policy_.decoding()) decode_press_ = prefill_press_;
  }
  if (!(budget_.ratio >= 0.0 && budget_.ratio < 1.0))
    throw Error("compression ratio must be in [0, 1) (the fraction removed), got " + std::to_string(budget_.ratio));
  if (policy_.decoding() && !decode_press_) throw Error("decoding-time compression needs a press");
  last_decode_compression_.assign(static_cast<size_t>(session.model().config().n_layer), 0);
  session_.set_layer_hook([this](const LayerStats& st, KvCache& cache) { on_layer(st, cache); });
}

PressRunner::~PressRunner() {
  session_.set_layer_hook(nullptr);
  session_.set_stats_request({});
}

void finish_press(Press& press, Session& session, const Budget& budget) {
  std::vector<float> context_logits = session.last_logits();
  const int32_t context_end = session.next_position();
  press.finish(session, budget);
  if (session.last_logits().empty() && session.next_position() == context_end && !context_logits.empty())
    session.set_last_logits(std::move(context_logits));
}

void PressRunner::prefill(const std::vector<int32_t>& ids, int64_t slack) {
  begin_prefill(ids);
  while (!prefill_step()) {
  }
  finish_prefill(slack);
}

void PressRunner::begin_prefill(const std::vector<int32_t>& ids) {
  decoding_ = false;
  StatsRequest request = prefill_press_ ? prefill_press_->needs() : StatsRequest{};
  request.window_every_chunk = request.window_every_chunk || policy_.every_chunk;  // compressed after each chunk
  session_.set_stats_request(request);
  // Presses scoring while the context is evaluated (global_topk) learn the budget first.
  if (prefill_press_ && prefill_press_->traits().needs_all_layers) prefill_press_->set_budget(budget_);
  session_.begin_eval(ids);
}

bool PressRunner::prefill_step() { return session_.eval_step(); }

void PressRunner::finish_prefill(int64_t slack) {
  if (prefill_press_ && prefill_press_->traits().needs_all_layers && (!budget_.none() || prefill_press_->traits().own_budget)) {
    session_.set_layer_hook(nullptr);  // its extra passes must not re-enter the runner
    finish_press(*prefill_press_, session_, budget_);
    ++compressions_;
    session_.set_layer_hook([this](const LayerStats& st, KvCache& cache) { on_layer(st, cache); });
  }
  // Presses that renumbered the kept positions (key re-rotation) say where later tokens go.
  if (prefill_press_ && prefill_press_->next_position() >= 0)
    session_.set_next_position(static_cast<int32_t>(prefill_press_->next_position()));
  session_.cache().release_slack(slack);
}

void PressRunner::start_decoding() {
  decoding_ = true;
  session_.set_stats_request(decode_press_ && policy_.decoding() ? decode_press_->needs() : StatsRequest{});
  std::fill(last_decode_compression_.begin(), last_decode_compression_.end(), session_.next_position());
}

void PressRunner::on_layer(const LayerStats& st, KvCache& cache) {
  Press* press = decoding_ ? (policy_.decoding() ? decode_press_ : nullptr) : prefill_press_;
  if (!press) return;
  const LayerView view(session_.model(), st.layer, cache, st);
  press->observe(view);
  if (cache.window(st.layer) > 0 || st.positions.empty()) return;
  const int32_t next = st.positions.back() + 1;  // positions seen so far
  int64_t removed = 0;
  if (press->triggers(view)) {  // the press's own schedule (LagKV, pyramid_merge)
    // Decoding keeps the press's own schedule at --decode-ratio, or else the context's ratio.
    removed = compress_layer(*press, view, decoding_ && policy_.decode_ratio > 0 ? Budget{policy_.decode_ratio} : budget_, cache);
    removed_ += removed;
    ++compressions_;
  } else {
    Budget b;
    bool compress = true;
    if (!decoding_) {
      compress = !press->traits().needs_all_layers && (st.last_chunk || policy_.every_chunk);
      b = budget_;
      if (policy_.every_chunk && b.tokens < 0)  // back to the ratio's share of everything seen
        b = Budget{0.0, std::max<int64_t>(1, static_cast<int64_t>(std::trunc(next * (1.0 - budget_.ratio))))};
    } else {
      int32_t& last = last_decode_compression_[static_cast<size_t>(st.layer)];
      compress = policy_.decode_interval > 0 && next - last >= policy_.decode_interval;
      if (compress) last = next;
      b.tokens = policy_.decode_target > 0 ? policy_.decode_target
                                           : std::max<int64_t>(1, static_cast<int64_t>(std::trunc(next * (1.0 - policy_.decode_ratio))));
    }
    if (compress) {
      removed = compress_layer(*press, view, b, cache);
      removed_ += removed;
      ++compressions_;
    }
  }
  // Decoding: what was evicted or merged away leaves the process now, keeping room in this
  // layer for the next interval or the press's own need (other layers keep their capacity).
  if (decoding_ && removed > 0)
    cache.release_layer_slack(st.layer, std::max(policy_.decode_interval + 1, press->traits().decode_slack));
}

}  // namespace kvsqueeze
