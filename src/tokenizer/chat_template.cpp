#include "kvsqueeze/chat_template.h"

#include <algorithm>

#include "kvsqueeze/error.h"
#include "kvsqueeze/gguf.h"
#include "tokenizer/utf8.h"

namespace kvsqueeze {
namespace {

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// Python's str.isspace() over code points: what Jinja's trim filter and str.strip() remove.
bool py_isspace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// Jinja's `| trim` / Python's str.strip().
std::string py_strip(const std::string& s) {
  size_t begin = 0, end = s.size();
  while (begin < end) {
    const size_t len = tok::utf8_char_len(s, begin);
    if (len == 0 || !py_isspace(tok::utf8_decode(s, begin, len))) break;
    begin += len;
  }
  while (end > begin) {
    size_t start = end - 1;  // find the start of the last character
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    const size_t len = tok::utf8_char_len(s, start);
    if (len != end - start || !py_isspace(tok::utf8_decode(s, start, len))) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

void check_role(const ChatMessage& m) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    throw Error("chat message role must be system, user or assistant, got '" + m.role + "'");
}

// The system prompt a chatml template falls back to, written literally after
// "<|im_start|>system\n" in the Jinja source (Qwen2.5, Qwen2, SmolLM2), or "".
std::string chatml_default_system(const std::string& jinja) {
  const std::string head = "<|im_start|>system";
  for (size_t pos = jinja.find(head); pos != std::string::npos; pos = jinja.find(head, pos + 1)) {
    size_t p = pos + head.size();
    if (jinja.compare(p, 2, "\\n") == 0) p += 2;
    else if (jinja.compare(p, 1, "\n") == 0) p += 1;
    else continue;
    const size_t end = jinja.find("<|im_end|>", p);
    if (end == std::string::npos) continue;
    const std::string body = jinja.substr(p, end - p);
    if (body.empty() || body.find_first_of("'\"{}+\\\n") != std::string::npos) continue;
    return body;
  }
  return "";
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

}  // namespace

std::vector<std::string> ChatTemplate::names() { return {"chatml", "llama3", "llama2", "gemma", "none"}; }

ChatTemplate ChatTemplate::by_name(const std::string& name) {
  const auto all = names();
  if (std::find(all.begin(), all.end(), name) == all.end()) {
    std::string valid;
    for (const auto& n : all) valid += (valid.empty() ? "" : ", ") + n;
    throw Error("unknown chat template '" + name + "'; valid: " + valid);
  }
  ChatTemplate t(name);
  if (name == "llama3") t.bos_ = "<|begin_of_text|>";
  else if (name == "llama2") t.bos_ = "<s>", t.eos_ = "</s>";
  else if (name == "gemma") t.bos_ = "<bos>", t.eos_ = "<eos>";
  return t;
}

ChatTemplate ChatTemplate::detect(const std::string& jinja, const std::string& architecture,
                                  const std::string& tokenizer_model, const std::string& tokenizer_pre,
                                  const std::string& bos_text, const std::string& eos_text) {
  std::string name;
  if (contains(jinja, "<|im_start|>")) name = "chatml";
  else if (contains(jinja, "<|start_header_id|>")) name = "llama3";
  else if (contains(jinja, "<start_of_turn>")) name = "gemma";
  else if (contains(jinja, "[INST]")) name = "llama2";
  else if (starts_with(architecture, "gemma")) name = "gemma";
  else if (starts_with(architecture, "qwen2") || starts_with(architecture, "qwen3")) name = "chatml";
  else if (architecture == "llama" && tokenizer_model == "gpt2") name = tokenizer_pre == "smollm" ? "chatml" : "llama3";
  else name = "none";

  ChatTemplate t = by_name(name);
  if (name == "chatml") {
    t.default_system_ = chatml_default_system(jinja);
    if (contains(jinja, "enable_thinking") &&
        (contains(jinja, "<think>\\n\\n</think>\\n\\n") || contains(jinja, "<think>\n\n</think>\n\n")))
      t.generation_suffix_ = "<think>\n\n</think>\n\n";
  }
  if (t.renders_bos() && !bos_text.empty()) t.bos_ = bos_text;
  if (name == "llama2" && !eos_text.empty()) t.eos_ = eos_text;
  return t;
}

ChatTemplate ChatTemplate::for_model(const GgufFile& file) {
  const std::string jinja = file.get_string_opt("tokenizer.chat_template").value_or("");
  const std::string arch = file.get_string_opt("general.architecture").value_or("");
  const std::string model = file.get_string_opt("tokenizer.ggml.model").value_or("");
  const std::string pre = file.get_string_opt("tokenizer.ggml.pre").value_or("");
  auto token_text = [&file](const char* key) -> std::string {
    const auto id = file.get_int_opt(key);
    const GgufValue* tokens = file.find("tokenizer.ggml.tokens");
    if (!id || !tokens || !tokens->is_array()) return "";
    const auto& items = tokens->as_array().items;
    if (*id < 0 || static_cast<size_t>(*id) >= items.size() || items[static_cast<size_t>(*id)].type != GgufValueType::STRING)
      return "";
    return items[static_cast<size_t>(*id)].as_string();
  };
  return detect(jinja, arch, model, pre, token_text("tokenizer.ggml.bos_token_id"),
                token_text("tokenizer.ggml.eos_token_id"));
}

bool ChatTemplate::renders_bos() const { return name_ == "llama3" || name_ == "llama2" || name_ == "gemma"; }

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  for (const auto& m : messages) check_role(m);
  std::string out;
  const bool has_system = !messages.empty() && messages[0].role == "system";
  auto check_alternation = [&](size_t first) {
    for (size_t i = first; i < messages.size(); ++i)
      if ((messages[i].role == "user") != ((i - first) % 2 == 0))
        throw Error("chat template '" + name_ + "': conversation roles must alternate user/assistant/user/assistant/...");
  };

  if (name_ == "chatml") {
    if (has_system) out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
    else if (!default_system_.empty()) out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
    for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i)
      out += "<|im_start|>" + messages[i].role + "\n" + messages[i].content + "<|im_end|>\n";
    if (add_generation_prompt) out += "<|im_start|>assistant\n" + generation_suffix_;
  } else if (name_ == "llama3") {
    for (size_t i = 0; i < messages.size(); ++i) {
      if (i == 0) out += bos_;
      out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" + py_strip(messages[i].content) +
             "<|eot_id|>";
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  } else if (name_ == "llama2") {
    const size_t first = has_system ? 1 : 0;
    check_alternation(first);
    for (size_t i = first; i < messages.size(); ++i) {
      std::string content = messages[i].content;
      if (i == first && has_system) content = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
      if (messages[i].role == "user") out += bos_ + "[INST] " + py_strip(content) + " [/INST]";
      else out += " " + py_strip(content) + " " + eos_;
    }
    // The Llama-2 template has no generation prompt: the answer follows "[/INST]".
  } else if (name_ == "gemma") {
    out += bos_;
    const size_t first = has_system ? 1 : 0;
    check_alternation(first);
    for (size_t i = first; i < messages.size(); ++i) {
      const std::string role = messages[i].role == "assistant" ? "model" : messages[i].role;
      out += "<start_of_turn>" + role + "\n";
      if (i == first && has_system) out += messages[0].content + "\n\n";
      out += py_strip(messages[i].content) + "<end_of_turn>\n";
    }
    if (add_generation_prompt) out += "<start_of_turn>model\n";
  } else {  // none
    for (size_t i = 0; i < messages.size(); ++i) out += (i ? "\n" : "") + messages[i].content;
    if (add_generation_prompt) out += "\n";
  }
  return out;
}

ContextQuestionPrompt ChatTemplate::split(const std::string& context, const std::string& question) const {
  if (name_ == "none") return {context, question + "\n"};
  // As kvpress: render context + separator as the user message, cut at the separator. The
  // separator is "\n" and a run of '#' longer than any in the context or the system prompt, so it
  // occurs exactly once, and ends in a non-space so trimming leaves the context's end alone.
  size_t longest = 0, run = 0;
  for (const std::string* s : {&context, &default_system_, &bos_}) {
    run = 0;
    for (char c : *s) {
      run = c == '#' ? run + 1 : 0;
      longest = std::max(longest, run);
    }
  }
  std::string separator(longest + 2, '#');
  separator[0] = '\n';
  const std::string rendered = apply({{"user", context + separator}}, true);
  size_t at = rendered.find(separator), skip = separator.size();
  if (at == std::string::npos) {  // an all-whitespace context: trimming took the "\n" as well
    at = rendered.find(separator.substr(1));
    skip = separator.size() - 1;
  }
  if (at == std::string::npos) throw Error("chat template '" + name_ + "' lost the context separator");
  return {rendered.substr(0, at), question + rendered.substr(at + skip)};
}

}  // namespace kvsqueeze
