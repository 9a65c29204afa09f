// Fuzzes the server's request parser (tools/server/request_parser.cpp): the first byte picks the
// endpoint (bit 0: completions or chat; bit 1: the /contexts file-name body), the rest is the body. Any body must give a request or an ApiError with a 4xx status
// and a JSON error body; any other exception or a crash aborts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "request_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 8192) return 0;
  using namespace kvsqueeze::server;
  const Endpoint endpoint = data[0] & 1 ? Endpoint::ChatCompletions : Endpoint::Completions;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 2) {  // POST /contexts: a plain file name or a 400
    try {
      const std::string name = parse_context_filename(body);
      if (name.empty() || name.size() > 128 || name.find('/') != std::string::npos || name.find("..") != std::string::npos ||
          name[0] == '.')
        std::abort();
    } catch (const ApiError& e) {
      if (e.status() != 400) std::abort();
      (void)nlohmann::json::parse(e.body());
    }
    return 0;
  }
  RequestLimits limits;
  limits.default_plan.press = "snapkv";
  limits.default_plan.ratio = 0.5;
  try {
    const CompletionRequest r = parse_request(body, endpoint, limits);
    if (r.endpoint != endpoint) std::abort();
    if (r.max_tokens && (*r.max_tokens < 0 || *r.max_tokens > limits.max_tokens_cap)) std::abort();
    if (r.top_logprobs > 20) std::abort();
  } catch (const ApiError& e) {
    if (e.status() < 400 || e.status() >= 500) std::abort();
    const auto j = nlohmann::json::parse(e.body());  // must be valid JSON in OpenAI's shape
    if (!j.contains("error") || !j["error"].contains("message")) std::abort();
  }
  return 0;
}
