#include "kvsqueeze/generation.h"

#include <sys/resource.h>

#include <chrono>

#include "kvsqueeze/error.h"
#include "runtime/stopwatch.h"

namespace kvsqueeze {
GenerationResult generate(Session& session, const std::vector<int32_t>& prompt, int64_t max_new, Sampler& sampler,
                          const std::function<void(const std::string&)>& on_text) {
  GenerationResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  const Tokenizer& tok = session.model().tokenizer();
  StreamingDetokenizer detok(tok, /*skip_special=*/false, /*starts_text=*/false);  // continues the prompt's text
  auto emit = [&](const std::string& piece) {
    r.text += piece;
    if (on_text && !piece.empty()) on_text(piece);
  };

  session.reserve(static_cast<int64_t>(prompt.size()) + max_new);
  auto t0 = std::chrono::steady_clock::now();
  // An empty prompt continues from the logits the session already has (e.g. a loaded cache).
  if (prompt.empty() && session.last_logits().empty()) throw Error("nothing to generate from: empty prompt and no logits");
  std::vector<float> logits = prompt.empty() ? session.last_logits() : session.eval(prompt);
  r.prefill_ms = ms_since(t0);

  t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < max_new; ++i) {
    const int32_t id = sampler.sample(logits);
    if (tok.is_end_of_generation(id)) {
      r.stopped_at_eog = true;
      break;
    }
    r.tokens.push_back(id);
    emit(detok.feed(id));
    if (session.next_position() >= session.options().ctx_size) {  // context full: stop cleanly, and say so
      r.stopped_at_context_end = i + 1 < max_new;
      break;
    }
    logits = session.eval({id});  // keep the cache complete so the text can be continued
  }
  emit(detok.flush());
  r.decode_ms = ms_since(t0);
  return r;
}

size_t peak_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace kvsqueeze
