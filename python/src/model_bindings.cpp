// Model: a loaded GGUF, read-only and shared by any number of Engines on any threads. Its
// tokenizer and chat template are exposed for the Python front ends (pipeline, LLM).
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include "bindings.h"
#include "kvsqueeze/model.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvsqueeze::python {
namespace {

std::vector<ChatMessage> messages_of(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::vector<ChatMessage> out;
  for (const auto& [role, content] : pairs) out.push_back({role, content});
  return out;
}

}  // namespace

void bind_model(nb::module_& m) {
  nb::class_<Model>(m, "Model",
                    "A loaded GGUF model (memory-mapped, read-only). Share one Model between any number of Engines, "
                    "on any threads; each Engine is one sequence used from one thread at a time.")
      .def_static(
          "load",
          [](const std::string& path) {
            nb::gil_scoped_release release;
            return Model::load(path);
          },
          "path"_a,
          "Opens and validates a GGUF file. Raises FileNotFoundError when it is missing and kvsqueeze.ModelError when "
          "it is corrupt, truncated or unsupported.")
      .def_prop_ro("path", &Model::path)
      .def_prop_ro("architecture", [](const Model& m) { return m.config().arch_name; })
      .def_prop_ro("name", [](const Model& m) { return m.config().name; })
      .def_prop_ro("n_layer", [](const Model& m) { return m.config().n_layer; })
      .def_prop_ro("n_head", [](const Model& m) { return m.config().n_head; })
      .def_prop_ro("n_head_kv", [](const Model& m) { return m.config().n_head_kv; })
      .def_prop_ro("head_dim_k", [](const Model& m) { return m.config().head_dim_k; })
      .def_prop_ro("head_dim_v", [](const Model& m) { return m.config().head_dim_v; })
      .def_prop_ro("n_embd", [](const Model& m) { return m.config().n_embd; })
      .def_prop_ro("n_vocab", [](const Model& m) { return m.config().n_vocab; })
      .def_prop_ro("n_ctx_train", [](const Model& m) { return m.config().n_ctx_train; })
      .def_prop_ro("fingerprint", &Model::fingerprint)
      .def_prop_ro("bos_id", [](const Model& m) { return m.tokenizer().bos_id(); })
      .def_prop_ro("eos_id", [](const Model& m) { return m.tokenizer().eos_id(); })
      .def_prop_ro("add_bos", [](const Model& m) { return m.tokenizer().add_bos_by_default(); },
                   "Whether prompts start with BOS (tokenizer.ggml.add_bos_token).")
      .def_prop_ro("chat_template", [](const Model& m) { return m.chat_template().name(); },
                   "The built-in chat template picked for this model: chatml, llama3, llama2, gemma or none.")
      .def(
          "tokenize",
          [](const Model& m, const std::string& text, bool add_bos, bool special) {
            return m.tokenizer().encode(text, add_bos, special);
          },
          "text"_a, "add_bos"_a = true, "special"_a = true,
          "Token ids of `text` (BOS first when add_bos and the vocabulary has one; special=True maps control-token "
          "text such as <|im_start|> to its id).")
      .def(
          "detokenize",
          [](const Model& m, const std::vector<int32_t>& ids, bool skip_special) { return m.tokenizer().decode(ids, skip_special); },
          "ids"_a, "skip_special"_a = false, "The text of token ids.")
      .def("is_end_of_generation", [](const Model& m, int32_t id) { return m.tokenizer().is_end_of_generation(id); }, "id"_a)
      .def(
          "apply_chat_template",
          [](const Model& m, const std::vector<std::pair<std::string, std::string>>& messages, bool add_generation_prompt) {
            return m.chat_template().apply(messages_of(messages), add_generation_prompt);
          },
          "messages"_a, "add_generation_prompt"_a = true,
          "Renders (role, content) pairs with the model's chat template, as transformers' apply_chat_template does.")
      .def(
          "split_prompt",
          [](const Model& m, const std::string& context, const std::string& question) {
            const ContextQuestionPrompt p = m.chat_template().split(context, question);
            return std::make_pair(p.context_part, p.question_part);
          },
          "context"_a, "question"_a,
          "kvpress's prompt split: (context part, question part) of the chat template around context + question.");
}

}  // namespace kvsqueeze::python
