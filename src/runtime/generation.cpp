#include "kvsqueeze/generation.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>

#include "kvsqueeze/error.h"
#include "runtime/decoder.h"
#include "runtime/stopwatch.h"

namespace kvsqueeze {
namespace {

// Streams generated text while watching for stop strings: text that could still be the start
// of a stop string is held back until the next piece rules it out.
class StopStringFilter {
 public:
  StopStringFilter(const DecodeControl& control, std::string& text) : control_(control), text_(text) {}

  // Adds a piece; returns false when a stop string appeared or the callback asked to stop.
  bool feed(const std::string& piece) {
    text_ += piece;
    size_t cut = std::string::npos;
    for (const auto& s : control_.stop) {
      if (s.empty()) continue;
      const size_t from = emitted_ >= s.size() ? emitted_ - s.size() + 1 : 0;
      const size_t at = text_.find(s, from);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      text_.resize(cut);
      emit(text_.size());
      stopped_by_string_ = true;
      return false;
    }
    return emit(text_.size() - held_back());
  }
  // Emits what is still held back (generation ended without a stop string).
  bool flush() { return emit(text_.size()); }
  bool stopped_by_string() const { return stopped_by_string_; }
  bool stopped_by_callback() const { return stopped_by_callback_; }

 private:
  // Length of the longest end of the text that is a proper beginning of a stop string.
  size_t held_back() const {
    size_t keep = 0;
    for (const auto& s : control_.stop)
      for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), text_.size() - emitted_); n > keep; --n)
        if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
    return keep;
  }
  bool emit(size_t upto) {
    if (upto <= emitted_) return true;
    const std::string piece = text_.substr(emitted_, upto - emitted_);
    emitted_ = upto;
    if (control_.on_text && !control_.on_text(piece)) {
      stopped_by_callback_ = true;
      return false;
    }
    return true;
  }
  const DecodeControl& control_;
  std::string& text_;
  size_t emitted_ = 0;
  bool stopped_by_string_ = false, stopped_by_callback_ = false;
};

}  // namespace

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::EndOfGeneration: return "end_of_generation";
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::StopString: return "stop";
    case StopReason::ContextFull: return "context_full";
    case StopReason::Cancelled: return "cancelled";
    case StopReason::Callback: return "callback";
  }
  return "unknown";
}

GenerationResult generate(Session& session, const std::vector<int32_t>& prompt, int64_t max_new, Sampler& sampler,
                          const std::function<void(const std::string&)>& on_text) {
  DecodeControl control;
  if (on_text) control.on_text = [&](const std::string& s) { return on_text(s), true; };
  return generate(session, prompt, max_new, sampler, control);
}

GenerationResult generate(Session& session, const std::vector<int32_t>& prompt, int64_t max_new, Sampler& sampler,
                          const DecodeControl& control) {
  if (max_new < 0) throw ParameterError("max_tokens", "`max_tokens` must be >= 0, got " + std::to_string(max_new));
  session.reserve(static_cast<int64_t>(prompt.size()) + max_new);
  const auto t0 = std::chrono::steady_clock::now();
  // An empty prompt continues from the logits the session already has (e.g. a loaded cache).
  if (prompt.empty() && session.last_logits().empty()) throw Error("nothing to generate from: empty prompt and no logits");
  if (!prompt.empty()) session.eval(prompt);
  const double prefill_ms = ms_since(t0);
  Decoder decoder(session, sampler, control, max_new);
  while (decoder.step()) {
  }
  GenerationResult r = decoder.finish();
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  r.prefill_ms = prefill_ms;
  return r;
}

struct Decoder::State {
  State(Session& s, Sampler& sm, const DecodeControl& c, int64_t n)
      : session(s), sampler(sm), control(c), max_new(n), tok(s.model().tokenizer()),
        detok(tok, /*skip_special=*/false, /*starts_text=*/false), filter(control, r.text) {}
  Session& session;
  Sampler& sampler;
  DecodeControl control;
  int64_t max_new;
  const Tokenizer& tok;
  GenerationResult r;
  StreamingDetokenizer detok;  // continues the prompt's text
  StopStringFilter filter;
  std::vector<float> logits, sampled_from;
  int64_t i = 0;
  bool going = true, finished = false;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double decode_ms = 0.0;
  std::chrono::steady_clock::time_point batch_t0;  // next_token() to evaluated()
};

Decoder::Decoder(Session& session, Sampler& sampler, const DecodeControl& control, int64_t max_new)
    : s_(std::make_unique<State>(session, sampler, control, max_new)) {
  if (max_new < 0) throw ParameterError("max_tokens", "`max_tokens` must be >= 0, got " + std::to_string(max_new));
  if (session.last_logits().empty()) throw Error("nothing to generate from: empty prompt and no logits");
  s_->logits = session.last_logits();
}

Decoder::~Decoder() = default;

bool Decoder::step() {
  State& s = *s_;
  if (!s.going || s.i >= s.max_new) return false;
  const auto t0 = std::chrono::steady_clock::now();
  const bool more = step_once();
  s.decode_ms += ms_since(t0);
  return more;
}

bool Decoder::step_once() {
  State& s = *s_;
  const int32_t id = sample_next();
  if (id < 0) return false;
  s.logits = s.session.eval({id});  // keep the cache complete so the text can be continued
  return s.going && s.i < s.max_new;
}

int32_t Decoder::sample_next() {
  State& s = *s_;
  const Tokenizer& tok = s.tok;
  if (s.control.cancel && s.control.cancel->load(std::memory_order_relaxed)) {
    s.r.stop_reason = StopReason::Cancelled;
    s.going = false;
    return -1;
  }
  const int32_t id = s.sampler.sample(s.logits);
  if (!s.control.ignore_eos && tok.is_end_of_generation(id)) {
    s.r.stopped_at_eog = true;
    s.r.stop_reason = StopReason::EndOfGeneration;
    s.going = false;
    return -1;
  }
  s.r.tokens.push_back(id);
  s.going = s.filter.feed(s.detok.feed(id));
  s.sampled_from.swap(s.logits);
  const int64_t i = s.i++;
  if (s.session.next_position() >= s.session.options().ctx_size) {  // context full: stop cleanly, and say so
    s.r.stopped_at_context_end = s.going && i + 1 < s.max_new;
    if (s.r.stopped_at_context_end) s.r.stop_reason = StopReason::ContextFull;
    s.going = false;
    return -1;
  }
  return id;
}

int32_t Decoder::next_token() {
  State& s = *s_;
  if (!s.going || s.i >= s.max_new) return -1;
  const auto t0 = std::chrono::steady_clock::now();
  const int32_t id = sample_next();
  s.decode_ms += ms_since(t0);
  s.batch_t0 = std::chrono::steady_clock::now();
  return id;
}

bool Decoder::evaluated() {
  State& s = *s_;
  s.logits = s.session.last_logits();
  s.decode_ms += ms_since(s.batch_t0);  // the batched pass, as this sequence waited for it
  return s.going && s.i < s.max_new;
}

const std::vector<float>& Decoder::sampled_from() const { return s_->sampled_from; }
const std::vector<int32_t>& Decoder::tokens() const { return s_->r.tokens; }

GenerationResult Decoder::finish() {
  State& s = *s_;
  if (!s.finished) {
    s.finished = true;
    if (!s.filter.stopped_by_string() && !s.filter.stopped_by_callback()) s.filter.feed(s.detok.flush()) && s.filter.flush();
    if (s.filter.stopped_by_string()) s.r.stop_reason = StopReason::StopString;
    else if (s.filter.stopped_by_callback()) s.r.stop_reason = StopReason::Callback;
    s.r.decode_ms = s.decode_ms;
  }
  return s.r;
}

size_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace kvsqueeze
