#pragma once
// Parses and validates the body of POST /v1/completions and /v1/chat/completions. Kept apart from
// the HTTP layer and the model so that it can be fuzzed (fuzz/server_request_fuzz.cpp): any bytes
// give either a request or an ApiError (400), never a crash.
#include <string>

#include "api_error.h"
#include "request.h"

namespace kvsqueeze::server {

// Throws ApiError: malformed JSON, a field of the wrong type or out of range, an unsupported
// parameter (OpenAI's, such as n > 1 or logit_bias, or an unknown one), an invalid press setting.
CompletionRequest parse_request(const std::string& body, Endpoint endpoint, const RequestLimits& limits);

// The body of POST /contexts?action=restore and /contexts/ID?action=save: {"filename": NAME}, NAME a
// plain file name (letters, digits, '.', '_', '-', starting with a letter or digit, no "..", at most
// 128 characters), so that no request names a file outside the prompt-cache folder. Returns NAME;
// throws ApiError 400 otherwise.
std::string parse_context_filename(const std::string& body);

// The request field for a plan field named by a ParameterError ("ratio" -> "kv_ratio").
std::string request_field_of(const std::string& plan_field);

}  // namespace kvsqueeze::server
