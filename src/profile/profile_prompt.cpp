// The profiler's needle-in-a-haystack prompts (docs/METHODS.md §5.1) and the needle's span in the
// final tokens.
#include <algorithm>

#include "eval/task_text.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/head_profile.h"

namespace kvsqueeze::profile {
namespace {

// DiliLazyKV's effective context: the haystack part is context_length - 200 tokens (the needle
// included), leaving room for the question, the template and the answer.
constexpr int64_t kReserve = 200;
// DiliLazyKV's template ("Based on the content in the book, answer the question: Q\nAnswer:").
constexpr const char* kInstruction = "\nBased on the content of the book, answer the question: ";
constexpr const char* kAnswerPrefix = "Answer:";

}  // namespace

std::vector<int32_t> haystack_tokens(const Tokenizer& tokenizer, const std::string& haystack, int64_t min_tokens) {
  const std::vector<int32_t> once = tokenizer.encode(haystack, false, false);
  if (once.empty()) throw Error("the haystack holds no text");
  std::string text = haystack;
  for (int64_t covered = static_cast<int64_t>(once.size()); covered < min_tokens; covered += static_cast<int64_t>(once.size()))
    text += "\n\n" + haystack;
  return text.size() == haystack.size() ? once : tokenizer.encode(text, false, false);
}

TokenSpan locate_needle(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, const std::string& needle) {
  // Each token's start offset in the decoded text (a token cut inside a UTF-8 character shows up
  // with the token that completes it).
  StreamingDetokenizer detok(tokenizer, false, true);
  std::string text;
  std::vector<size_t> start(ids.size() + 1);
  for (size_t i = 0; i < ids.size(); ++i) {
    start[i] = text.size();
    text += detok.feed(ids[i]);
  }
  text += detok.flush();
  start[ids.size()] = text.size();
  const size_t at = needle.empty() ? std::string::npos : text.find(needle);
  if (at == std::string::npos)
    throw Error("the needle \"" + needle + "\" is not in the decoded prompt tokens (the tokenizer does not reproduce its text)");
  const size_t stop = at + needle.size();
  TokenSpan span;
  // First token that ends after the needle's start; first token that starts at or after its end.
  while (span.begin < static_cast<int64_t>(ids.size()) && start[static_cast<size_t>(span.begin) + 1] <= at) ++span.begin;
  span.end = span.begin;
  while (span.end < static_cast<int64_t>(ids.size()) && start[static_cast<size_t>(span.end)] < stop) ++span.end;
  return span;
}

ProfilePrompt build_prompt(const Model& model, const std::vector<int32_t>& haystack_ids, int64_t length,
                           double depth_percent, const Needle& needle, bool chat) {
  const Tokenizer& tok = model.tokenizer();
  const int64_t needle_tokens = eval::count_tokens(tok, needle.needle);
  const int64_t limit = length - kReserve - needle_tokens;
  if (limit <= 0)
    throw Error("the needle \"" + needle.needle + "\" (" + std::to_string(needle_tokens) + " tokens) does not fit length " +
                std::to_string(length) + ": the haystack part is length - " + std::to_string(kReserve) +
                " tokens and must hold the needle and some text (use longer `lengths` or a shorter needle)");
  if (static_cast<int64_t>(haystack_ids.size()) < limit)
    throw Error("the haystack has " + std::to_string(haystack_ids.size()) + " tokens, fewer than the " + std::to_string(limit) +
                " that length " + std::to_string(length) + " needs");
  const std::vector<int32_t> kept(haystack_ids.begin(), haystack_ids.begin() + limit);
  std::string body = tok.decode(kept, true);
  // The needle goes at depth% of the haystack tokens, moved back to the sentence end before it.
  const size_t index = static_cast<size_t>(static_cast<double>(limit) * depth_percent / 100.0);
  size_t offset = std::min(tok.decode({kept.begin(), kept.begin() + static_cast<long>(index)}, true).size(), body.size());
  const std::vector<size_t> ends = eval::sentence_ends(body);
  auto it = std::upper_bound(ends.begin(), ends.end(), offset);
  offset = it == ends.begin() ? 0 : *(it - 1);
  body.insert(offset, offset == 0 ? needle.needle + " " : " " + needle.needle);

  ProfilePrompt p;
  p.context = body;
  const std::string question = kInstruction + needle.question;
  std::vector<int32_t> context_ids, question_ids;
  if (chat) {
    const auto split = model.chat_template().split(body, question);
    context_ids = tok.encode(split.context_part, tok.add_bos_by_default());
    question_ids = tok.encode(split.question_part + kAnswerPrefix, false);
  } else {
    context_ids = tok.encode(body, tok.add_bos_by_default());
    question_ids = tok.encode(question + "\n" + kAnswerPrefix, false);
  }
  p.ids = context_ids;
  p.ids.insert(p.ids.end(), question_ids.begin(), question_ids.end());
  p.needle = locate_needle(tok, p.ids, needle.needle);
  if (p.needle.end > static_cast<int64_t>(context_ids.size()))
    throw Error("the needle \"" + needle.needle + "\" was found outside the context part of the prompt");
  return p;
}

}  // namespace kvsqueeze::profile
