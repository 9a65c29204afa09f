#pragma once
// Built-in chat templates (chatml, llama3, llama2, gemma), chosen from GGUF metadata.
//
// Each one renders exactly what HF transformers' apply_chat_template renders with the family's
// official Jinja template (tests/fixtures/tokenizer/chat_templates.json holds those renderings):
//   chatml  Qwen2.5 (also Qwen2/Qwen3/SmolLM): "<|im_start|>role\ncontent<|im_end|>\n" per message;
//           the template's default system prompt, when it has one ("You are Qwen, created by
//           Alibaba Cloud. You are a helpful assistant." for Qwen2.5), is used when the
//           conversation has no system message; Qwen3's template adds "<think>\n\n</think>\n\n"
//           after the generation prompt (kvpress renders with enable_thinking=False).
//   llama3  Llama-3-Instruct: BOS, then "<|start_header_id|>role<|end_header_id|>\n\n" +
//           trim(content) + "<|eot_id|>" per message.
//   llama2  Llama-2-chat ([INST] style, also used for Mistral): the system message folded into the
//           first user turn between <<SYS>> markers; roles must alternate user/assistant.
//   gemma   Gemma 1/2/3: BOS, "<start_of_turn>user\n...<end_of_turn>\n", "model" for assistant; a
//           system message is folded into the first user turn (system + "\n\n" + user).
//   none    no template: message contents joined with "\n" (plus a final "\n" with the
//           generation prompt, the separator kvpress puts after the question).
// Templates that render BOS (renders_bos()) put its text in the output, as HF does; encoding that
// text with add_bos=true does not add a second BOS (see Tokenizer::encode).
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
  // What for_model does, on the metadata values: jinja is tokenizer.chat_template ("" when absent),
  // tokenizer_model/pre are tokenizer.ggml.model/.pre, bos_text/eos_text the texts of the BOS/EOS
  // tokens ("" for the family's usual ones). Recognition by distinctive substrings of the Jinja:
  // "<|im_start|>" chatml, "<|start_header_id|>" llama3, "<start_of_turn>" gemma, "[INST]" llama2.
  // Without a recognised template: gemma* -> gemma, qwen2*/qwen3* -> chatml, llama with a gpt2
  // tokenizer -> llama3 (chatml for pre "smollm"), anything else (llama with a SentencePiece
  // vocabulary such as stories260K) -> none.
  static ChatTemplate detect(const std::string& jinja, const std::string& architecture,
                             const std::string& tokenizer_model, const std::string& tokenizer_pre = "",
                             const std::string& bos_text = "", const std::string& eos_text = "");

  const std::string& name() const { return name_; }
  // The system prompt used when a conversation has none ("" when the template has none).
  const std::string& default_system() const { return default_system_; }
  // Text appended after the generation prompt (Qwen3 with thinking disabled).
  const std::string& generation_suffix() const { return generation_suffix_; }
  // apply() output begins with the BOS token's text.
  bool renders_bos() const;

  // Throws kvsqueeze::Error for a role other than system/user/assistant, and (llama2, gemma) when
  // user and assistant turns do not alternate, as the official templates do.
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  // kvpress's split: the conversation is one user message whose content is context + question
  // (joined with nothing in between; put any separator such as "\n" at the start of the question),
  // rendered with the generation prompt, and cut right after the context. Exactly:
  //   context_part + question_part == apply({{"user", context + question}}, true)
  // whenever the template's trimming of the content does not reach into the question (the question
  // has no trailing whitespace for llama3/llama2/gemma, which trim the content). For "none",
  // context_part = context and question_part = question + "\n" (BOS comes from encode's add_bos).
  ContextQuestionPrompt split(const std::string& context, const std::string& question) const;

 private:
  explicit ChatTemplate(std::string name) : name_(std::move(name)) {}
  std::string name_;
  std::string bos_, eos_;
  std::string default_system_;
  std::string generation_suffix_;
};

}  // namespace kvsqueeze
