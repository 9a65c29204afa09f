#include "openai_format.h"

namespace kvsqueeze::server {
namespace {

using nlohmann::json;

bool is_chat(const Job& job) { return job.request.endpoint == Endpoint::ChatCompletions; }

json byte_list(const std::string& s) {
  json b = json::array();
  for (const unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
json chat_logprobs(const std::vector<TokenLogprob>& tokens) {
  json content = json::array();
  for (const auto& t : tokens) {
    json top = json::array();
    for (const auto& [token, lp] : t.top) top.push_back({{"token", token}, {"logprob", lp}, {"bytes", byte_list(token)}});
    content.push_back({{"token", t.token}, {"logprob", t.logprob}, {"bytes", byte_list(t.token)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// Completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}.
json completion_logprobs(const std::vector<TokenLogprob>& tokens, size_t offset) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const auto& t : tokens) {
    toks.push_back(t.token);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [token, lp] : t.top) top[token] = lp;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += t.token.size();
  }
  return {{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json head(const Job& job, const ResponseIds& ids, const char* object) {
  return {{"id", ids.id}, {"object", object}, {"created", ids.created}, {"model", ids.model}, {"system_fingerprint", "kvsqueeze"}};
}

json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

}  // namespace

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json full_response(const Job& job, const ResponseIds& ids, const std::string& text, const std::vector<TokenLogprob>& tokens,
                   const JobEvent& final) {
  const bool want_lp = job.request.top_logprobs >= 0;
  json choice;
  if (is_chat(job)) {
    choice = {{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}}, {"finish_reason", final.finish_reason},
              {"logprobs", want_lp ? chat_logprobs(tokens) : json(nullptr)}};
  } else {
    choice = {{"index", 0}, {"text", text}, {"finish_reason", final.finish_reason},
              {"logprobs", want_lp ? completion_logprobs(tokens, 0) : json(nullptr)}};
  }
  json r = head(job, ids, is_chat(job) ? "chat.completion" : "text_completion");
  r["choices"] = json::array({choice});
  r["usage"] = usage_json(final.usage);
  return r;
}

json stream_chunk(const Job& job, const ResponseIds& ids, const std::string& text, const std::vector<TokenLogprob>& tokens,
                  const std::string& finish_reason, bool first) {
  const bool want_lp = job.request.top_logprobs >= 0 && !tokens.empty();
  json choice;
  if (is_chat(job)) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || !first) delta["content"] = text;
    choice = {{"index", 0}, {"delta", delta}, {"finish_reason", null_or(finish_reason)},
              {"logprobs", want_lp ? chat_logprobs(tokens) : json(nullptr)}};
  } else {
    choice = {{"index", 0}, {"text", text}, {"finish_reason", null_or(finish_reason)},
              {"logprobs", want_lp ? completion_logprobs(tokens, 0) : json(nullptr)}};
  }
  json r = head(job, ids, is_chat(job) ? "chat.completion.chunk" : "text_completion");
  r["choices"] = json::array({choice});
  return r;
}

json usage_chunk(const Job& job, const ResponseIds& ids, const Usage& usage) {
  json r = head(job, ids, is_chat(job) ? "chat.completion.chunk" : "text_completion");
  r["choices"] = json::array();
  r["usage"] = usage_json(usage);
  return r;
}

}  // namespace kvsqueeze::server
