#pragma once
// Where compression stops in a request's prompt. Completions: the whole prompt is the context (as
// `kvsqueeze generate -p`). Chat: only the messages before the last user turn are context, as
// kvpress's pipeline compresses only the context; the last user turn and the generation prompt are
// the question, evaluated uncompressed. A chat with nothing before its last user turn has no
// context: its prompt is prefilled without a prefill-time press.
#include <cstdint>
#include <vector>

#include "kvsqueeze/model.h"
#include "request.h"

namespace kvsqueeze::server {

struct SplitPrompt {
  std::vector<int32_t> context, question;
  bool compress_context = true;  // false: no context part, the prefill press does not apply
};

// Throws ApiError (400) when the chat template rejects the messages.
SplitPrompt split_prompt(const Model& model, const CompletionRequest& request);

}  // namespace kvsqueeze::server
