#pragma once
// Built-in chat templates (chatml, llama3, llama2, gemma), chosen from GGUF metadata.
#include <string>
#include <vector>

namespace kvsqueeze {

class GgufFile;

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// The prompt split so only the context part is compressed (kvpress pipeline):
// context_part ends right after the context text, question_part holds the question and
// everything the template puts after it, up to the start of the assistant's answer.
struct ContextQuestionPrompt {
  std::string context_part;
  std::string question_part;
};

class ChatTemplate {
 public:
  // Picks a template from tokenizer.chat_template (recognising the families' Jinja text) or,
  // failing that, from general.architecture; "none" passes text through unchanged.
  static ChatTemplate for_model(const GgufFile& file);
  static ChatTemplate by_name(const std::string& name);  // chatml | llama3 | llama2 | gemma | none
  static std::vector<std::string> names();

  const std::string& name() const { return name_; }
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  ContextQuestionPrompt split(const std::string& context, const std::string& question) const;

 private:
  explicit ChatTemplate(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

}  // namespace kvsqueeze
