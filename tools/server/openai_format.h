#pragma once
// OpenAI's response shapes: completion and chat.completion objects, their streamed chunks, usage
// and logprobs. Pure functions of what the scheduler sent, so the HTTP layer only moves bytes.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "job.h"

namespace kvsqueeze::server {

struct ResponseIds {
  std::string id;     // "cmpl-N" / "chatcmpl-N"
  int64_t created;    // Unix seconds
  std::string model;  // the request's model name, or the served model's
};

nlohmann::json usage_json(const Usage& u);
// The whole (not streamed) response.
nlohmann::json full_response(const Job& job, const ResponseIds& ids, const std::string& text,
                             const std::vector<TokenLogprob>& tokens, const JobEvent& final);
// One streamed chunk: text and tokens since the last one; `finish_reason` on the last ("" : null).
nlohmann::json stream_chunk(const Job& job, const ResponseIds& ids, const std::string& text,
                            const std::vector<TokenLogprob>& tokens, const std::string& finish_reason, bool first);
// The extra last chunk with usage (stream_options.include_usage).
nlohmann::json usage_chunk(const Job& job, const ResponseIds& ids, const Usage& usage);

// JSON text that never throws on invalid UTF-8 (a token may be half a character).
std::string dump(const nlohmann::json& j);

}  // namespace kvsqueeze::server
