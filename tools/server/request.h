#pragma once
// A completion request as the server runs it, parsed and validated from an OpenAI-style JSON body
// (request_parser.h), before any model work.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvsqueeze/chat_template.h"
#include "kvsqueeze/engine.h"

namespace kvsqueeze::server {

enum class Endpoint { Completions, ChatCompletions };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;                  // echoed back; any name is accepted (one model is served)
  std::string prompt;                 // /v1/completions
  std::vector<ChatMessage> messages;  // /v1/chat/completions
  std::optional<int64_t> max_tokens;  // absent: the completions default (16) or, for chat, the cap
  SamplerOptions sampling;            // OpenAI's defaults: temperature 1, no top-k/top-p/min-p filter
  std::vector<std::string> stop;
  bool stream = false;
  bool ignore_eos = false;     // vLLM's and llama-server's extension: generate max_tokens (benchmarks)
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
  int top_logprobs = -1;       // -1: no logprobs; else how many alternatives per token (0..20)
  CompressionPlan plan;        // the server's default plan with the request's kv_* fields applied
};

// Limits and defaults set by the server's flags.
struct RequestLimits {
  CompressionPlan default_plan;
  int64_t max_tokens_cap = 4096;  // a request asking for more is a 400
};

}  // namespace kvsqueeze::server
