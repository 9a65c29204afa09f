#include "prompt_split.h"

#include <algorithm>

#include "api_error.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze::server {

SplitPrompt split_prompt(const Model& model, const CompletionRequest& r) {
  const Tokenizer& tok = model.tokenizer();
  SplitPrompt out;
  if (r.endpoint == Endpoint::Completions) {
    out.context = tok.encode(r.prompt, tok.add_bos_by_default());
    return out;
  }
  const ChatTemplate& tmpl = model.chat_template();
  size_t last_user = 0;
  for (size_t i = 0; i < r.messages.size(); ++i)
    if (r.messages[i].role == "user") last_user = i;
  std::vector<int32_t> all;
  std::vector<int32_t> context;
  try {
    all = tok.encode(tmpl.apply(r.messages, true), tok.add_bos_by_default());
    if (last_user > 0) {
      const std::vector<ChatMessage> before(r.messages.begin(), r.messages.begin() + static_cast<std::ptrdiff_t>(last_user));
      context = tok.encode(tmpl.apply(before, false), tok.add_bos_by_default());
    }
  } catch (const Error& e) {
    throw invalid("messages", e.what());
  }
  // The context's tokens must begin the whole prompt's (templates end turns on special tokens, so
  // they do); and the question must not be empty.
  const bool splits = !context.empty() && context.size() < all.size() && std::equal(context.begin(), context.end(), all.begin());
  if (!splits) {
    out.context = std::move(all);
    out.compress_context = false;
    return out;
  }
  out.question.assign(all.begin() + static_cast<std::ptrdiff_t>(context.size()), all.end());
  out.context = std::move(context);
  return out;
}

}  // namespace kvsqueeze::server
