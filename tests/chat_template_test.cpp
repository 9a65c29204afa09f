// Chat templates against HF apply_chat_template renderings of the official Jinja templates, and
// kvpress's context/question split (fixtures from tests/reference/make_tokenizer_fixtures.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fixture_models.h"
#include "kvsqueeze/chat_template.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/gguf.h"
#include "kvsqueeze/tokenizer.h"
#include "test_paths.h"

using namespace kvsqueeze;
using json = nlohmann::json;

namespace {

json load_templates() {
  std::ifstream in(test_paths::fixtures() + "/tokenizer/chat_templates.json");
  if (!in) throw std::runtime_error("missing fixture chat_templates.json");
  return json::parse(in);
}

std::vector<ChatMessage> messages_of(const json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

ChatTemplate template_of(const json& t) {
  return ChatTemplate::detect(t["jinja"], t["architecture"], t["tokenizer_model"], "", t["bos"], t["eos"]);
}

}  // namespace

TEST(ChatTemplate, MatchesOfficialTemplates) {
  const json fx = load_templates();
  ASSERT_EQ(fx["templates"].size(), 4u);
  for (const auto& t : fx["templates"]) {
    const ChatTemplate tmpl = template_of(t);
    const std::string model = t["model"];
    EXPECT_EQ(tmpl.name(), t["family"].get<std::string>()) << model;
    for (const auto& c : t["cases"]) {
      EXPECT_EQ(tmpl.apply(messages_of(c["messages"]), c["add_generation_prompt"]), c["expected"].get<std::string>())
          << model << " " << c["messages"].dump();
    }
  }
}

TEST(ChatTemplate, SplitMatchesKvpress) {
  const json fx = load_templates();
  for (const auto& t : fx["templates"]) {
    const ChatTemplate tmpl = template_of(t);
    for (const auto& s : t["splits"]) {
      const std::string context = s["context"], question = s["question"];
      const ContextQuestionPrompt p = tmpl.split(context, question);
      EXPECT_EQ(p.context_part, s["context_part"].get<std::string>()) << t["model"];
      EXPECT_EQ(p.question_part, s["question_part"].get<std::string>()) << t["model"];
      // The documented joining: one user message, context immediately followed by the question.
      EXPECT_EQ(p.context_part + p.question_part, tmpl.apply({{"user", context + question}}, true)) << t["model"];
    }
  }
}

TEST(ChatTemplate, SplitIsConsistentForEveryBuiltin) {
  const std::string context = "Some context.\nWith two lines, a # sign and ### hashes ####.";
  const std::string question = "\nWhat does it say?";
  for (const auto& name : ChatTemplate::names()) {
    const ChatTemplate tmpl = ChatTemplate::by_name(name);
    const auto p = tmpl.split(context, question);
    EXPECT_EQ(p.context_part + p.question_part, tmpl.apply({{"user", context + question}}, true)) << name;
    EXPECT_NE(p.context_part.find(context), std::string::npos) << name;
    EXPECT_EQ(p.context_part.size() - p.context_part.rfind(context), context.size()) << name << ": cut after the context";
    EXPECT_EQ(p.question_part.rfind(question, 0), 0u) << name << ": question part starts with the question";
  }
  // Empty and whitespace-only contexts do not lose the cut.
  for (const auto& name : ChatTemplate::names()) {
    for (const std::string ctx : {"", "   \n"}) {
      const auto p = ChatTemplate::by_name(name).split(ctx, "Q?");
      EXPECT_EQ(p.question_part.rfind("Q?", 0), 0u) << name;
    }
  }
}

TEST(ChatTemplate, NoneTemplatePassesTextThrough) {
  const ChatTemplate none = ChatTemplate::by_name("none");
  EXPECT_EQ(none.apply({{"user", "Once upon a time"}}, false), "Once upon a time");
  EXPECT_EQ(none.apply({{"user", "Once upon a time"}}, true), "Once upon a time\n");
  const auto p = none.split("The context.", " The question?");
  EXPECT_EQ(p.context_part, "The context.");
  EXPECT_EQ(p.question_part, " The question?\n");
  EXPECT_FALSE(none.renders_bos());
}

TEST(ChatTemplate, ByNameAndErrors) {
  EXPECT_EQ(ChatTemplate::names(), (std::vector<std::string>{"chatml", "llama3", "llama2", "gemma", "none"}));
  for (const auto& n : ChatTemplate::names()) EXPECT_EQ(ChatTemplate::by_name(n).name(), n);
  try {
    ChatTemplate::by_name("vicuna");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'vicuna'"), std::string::npos);
    for (const auto& n : ChatTemplate::names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  }
  EXPECT_THROW(ChatTemplate::by_name("chatml").apply({{"tool", "x"}}, true), Error);
  EXPECT_THROW(ChatTemplate::by_name("gemma").apply({{"assistant", "x"}}, true), Error);
  EXPECT_THROW(ChatTemplate::by_name("llama2").apply({{"user", "a"}, {"user", "b"}}, false), Error);
  EXPECT_NO_THROW(ChatTemplate::by_name("llama3").apply({{"user", "a"}, {"user", "b"}}, false));
}

TEST(ChatTemplate, DetectsFamilies) {
  // By architecture when there is no template.
  EXPECT_EQ(ChatTemplate::detect("", "gemma3", "llama").name(), "gemma");
  EXPECT_EQ(ChatTemplate::detect("", "gemma2", "llama").name(), "gemma");
  EXPECT_EQ(ChatTemplate::detect("", "qwen2", "gpt2").name(), "chatml");
  EXPECT_EQ(ChatTemplate::detect("", "qwen3", "gpt2").name(), "chatml");
  EXPECT_EQ(ChatTemplate::detect("", "llama", "gpt2", "llama-bpe").name(), "llama3");
  EXPECT_EQ(ChatTemplate::detect("", "llama", "gpt2", "smollm").name(), "chatml");
  EXPECT_EQ(ChatTemplate::detect("", "llama", "llama").name(), "none");
  EXPECT_EQ(ChatTemplate::detect("", "phi2", "gpt2").name(), "none");
  // By the Jinja text, which wins over the architecture.
  EXPECT_EQ(ChatTemplate::detect("{{ '[INST] ' + m }}", "llama", "llama").name(), "llama2");
  EXPECT_EQ(ChatTemplate::detect("<|im_start|>{{ m }}", "llama", "gpt2").name(), "chatml");
  EXPECT_EQ(ChatTemplate::detect("{{ bos_token }}<start_of_turn>", "llama", "llama").name(), "gemma");
  EXPECT_EQ(ChatTemplate::detect("unrecognised {{ x }}", "qwen2", "gpt2").name(), "chatml");

  // Default system prompts written in the template (SmolLM2 style), and Qwen3's thinking switch.
  const std::string smollm =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
      "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
  const ChatTemplate s = ChatTemplate::detect(smollm, "llama", "gpt2", "smollm");
  EXPECT_EQ(s.default_system(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(s.apply({{"user", "hi"}}, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  const std::string qwen3 =
      "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
      "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
      "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
      "{%- endif %}{%- endif %}";
  const ChatTemplate q = ChatTemplate::detect(qwen3, "qwen3", "gpt2", "qwen2");
  EXPECT_EQ(q.default_system(), "");
  EXPECT_EQ(q.apply({{"user", "hi"}}, true), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(q.split("ctx", " q").question_part, " q<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplate, ForModel) {
  auto stories = GgufFile::open(test_paths::stories260k());
  EXPECT_EQ(ChatTemplate::for_model(*stories).name(), "none");
  const std::string gemma_path = test_paths::gemma_model();
  if (gemma_path.empty()) GTEST_SKIP() << "default model not downloaded";
  auto gemma = GgufFile::open(gemma_path);
  const ChatTemplate t = ChatTemplate::for_model(*gemma);
  EXPECT_EQ(t.name(), "gemma");
  EXPECT_TRUE(t.renders_bos());
  // The rendered BOS is parsed as the BOS token and not doubled by add_bos.
  auto tok = Tokenizer::from_gguf(*gemma);
  const auto ids = tok->encode(t.apply({{"user", "Hi"}}, true), tok->add_bos_by_default());
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], tok->bos_id());
  EXPECT_NE(ids[1], tok->bos_id());
  EXPECT_EQ(ids[1], 105);  // <start_of_turn>
}

TEST(ChatTemplate, RenderedBosIsNotDoubled) {
  auto file = GgufFile::open(test_paths::fixtures() + "/tokenizer/bpe-llama3.gguf");
  const ChatTemplate t = ChatTemplate::for_model(*file);
  EXPECT_EQ(t.name(), "llama3");
  auto tok = Tokenizer::from_gguf(*file);
  const auto ids = tok->encode(t.apply({{"user", "Hi"}}, true), true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], tok->bos_id());
  EXPECT_NE(ids[1], tok->bos_id());
}

// The built-in chatml template on the real Qwen2.5-Coder GGUFs against HF's apply_chat_template with
// the files' own tokenizer.chat_template (fixture from make_tokenizer_fixtures.py --only qwen): the
// same text and the same ids, with a system message and without one (where Qwen2.5's template puts
// its default system prompt).
TEST(ChatTemplateDefaultModel, QwenMatchesHfApplyChatTemplate) {
  std::ifstream in(test_paths::fixtures() + "/tokenizer/qwen2.5-coder-chat.json");
  ASSERT_TRUE(in) << "missing fixture qwen2.5-coder-chat.json";
  const json fx = json::parse(in);
  ASSERT_EQ(fx["models"].size(), 2u);
  int checked = 0;
  std::string absent;
  for (const auto& m : fx["models"]) {
    const std::string gguf = m["gguf"];
    const fixture_models::RealModel model = fixture_models::real_model(gguf);
    if (model.path.empty()) {
      absent += " " + gguf + " (" + model.get + ")";
      continue;
    }
    auto file = GgufFile::open(model.path);
    const ChatTemplate tmpl = ChatTemplate::for_model(*file);
    EXPECT_EQ(tmpl.name(), "chatml") << gguf;
    EXPECT_EQ(tmpl.default_system(), "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.") << gguf;
    EXPECT_FALSE(tmpl.renders_bos()) << gguf;
    auto tok = Tokenizer::from_gguf(*file);
    for (const auto& c : m["cases"]) {
      const std::string label = gguf + " " + c["name"].get<std::string>();
      const std::string want_text = c["expected_text"];
      const auto want_ids = c["expected_ids"].get<std::vector<int32_t>>();
      const std::string text = tmpl.apply(messages_of(c["messages"]), c["add_generation_prompt"]);
      EXPECT_EQ(text, want_text) << label;
      // The ids of our rendering as the engine encodes a prompt, and of HF's text (the tokenizer alone).
      EXPECT_EQ(tok->encode(text, tok->add_bos_by_default()), want_ids) << label;
      EXPECT_EQ(tok->encode(want_text, false), want_ids) << label;
    }
    checked++;
  }
  if (!absent.empty()) std::printf("[ chat     ] not checked, absent:%s\n", absent.c_str());
  if (checked == 0) GTEST_SKIP() << "no Qwen model present:" << absent;
}
