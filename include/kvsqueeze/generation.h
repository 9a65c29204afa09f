#pragma once
// The decode loop shared by the CLI, benchmarks and (later) the server.
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kvsqueeze/sampler.h"
#include "kvsqueeze/session.h"

namespace kvsqueeze {

enum class StopReason { EndOfGeneration, MaxTokens, StopString, ContextFull, Cancelled, Callback };
// "end_of_generation", "max_tokens", "stop", "context_full", "cancelled", "callback".
const char* stop_reason_name(StopReason reason);

// What may end generation besides its length, and where its text goes.
struct DecodeControl {
  // Generation ends before the first occurrence of any of these (the text stops before it).
  std::vector<std::string> stop;
  // Each piece of text as it completes (UTF-8 safe; text that may begin a stop string is held
  // back until ruled out). Returning false stops generation (StopReason::Callback).
  std::function<bool(const std::string&)> on_text;
  // Checked before every generated token: set from another thread to stop (StopReason::Cancelled).
  const std::atomic<bool>* cancel = nullptr;
  // Keep going past end-of-generation tokens (benchmarks: a fixed number of decode steps).
  bool ignore_eos = false;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids, the end-of-generation token excluded
  std::string text;
  bool stopped_at_eog = false;
  bool stopped_at_context_end = false;  // the session's context size was reached before max_new
  StopReason stop_reason = StopReason::MaxTokens;
  int64_t prompt_tokens = 0;
  double prefill_ms = 0.0;
  double decode_ms = 0.0;  // sampling and evaluating the generated tokens
};

// Evaluates `prompt` at the session's next positions, then samples up to max_new tokens,
// stopping at an end-of-generation token. on_text receives text as it completes (UTF-8 safe).
// An empty prompt samples first from the session's last logits (a prompt evaluated earlier).
GenerationResult generate(Session& session, const std::vector<int32_t>& prompt, int64_t max_new, Sampler& sampler,
                          const std::function<void(const std::string&)>& on_text = {});
// The same with stop strings, a streaming callback that may stop it, and a cancel flag.
GenerationResult generate(Session& session, const std::vector<int32_t>& prompt, int64_t max_new, Sampler& sampler,
                          const DecodeControl& control);

// Peak resident set size of this process in bytes.
size_t peak_rss_bytes();

}  // namespace kvsqueeze
