#include "kvsqueeze/generation.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>

#include "kvsqueeze/error.h"
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
  GenerationResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  const Tokenizer& tok = session.model().tokenizer();
  StreamingDetokenizer detok(tok, /*skip_special=*/false, /*starts_text=*/false);  // continues the prompt's text
  StopStringFilter filter(control, r.text);
  auto cancelled = [&] { return control.cancel && control.cancel->load(std::memory_order_relaxed); };

  session.reserve(static_cast<int64_t>(prompt.size()) + max_new);
  auto t0 = std::chrono::steady_clock::now();
  // An empty prompt continues from the logits the session already has (e.g. a loaded cache).
  if (prompt.empty() && session.last_logits().empty()) throw Error("nothing to generate from: empty prompt and no logits");
  std::vector<float> logits = prompt.empty() ? session.last_logits() : session.eval(prompt);
  r.prefill_ms = ms_since(t0);

  t0 = std::chrono::steady_clock::now();
  bool going = true;
  for (int64_t i = 0; i < max_new && going; ++i) {
    if (cancelled()) {
      r.stop_reason = StopReason::Cancelled;
      break;
    }
    const int32_t id = sampler.sample(logits);
    if (!control.ignore_eos && tok.is_end_of_generation(id)) {
      r.stopped_at_eog = true;
      r.stop_reason = StopReason::EndOfGeneration;
      break;
    }
    r.tokens.push_back(id);
    going = filter.feed(detok.feed(id));
    if (session.next_position() >= session.options().ctx_size) {  // context full: stop cleanly, and say so
      r.stopped_at_context_end = going && i + 1 < max_new;
      if (r.stopped_at_context_end) r.stop_reason = StopReason::ContextFull;
      going = false;
      break;
    }
    logits = session.eval({id});  // keep the cache complete so the text can be continued
  }
  if (!filter.stopped_by_string() && !filter.stopped_by_callback()) filter.feed(detok.flush()) && filter.flush();
  if (filter.stopped_by_string()) r.stop_reason = StopReason::StopString;
  else if (filter.stopped_by_callback()) r.stop_reason = StopReason::Callback;
  r.decode_ms = ms_since(t0);
  return r;
}

size_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace kvsqueeze
