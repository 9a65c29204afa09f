// kvsqueeze inspect MODEL [--json] [--tensors]: what a GGUF file holds and what its KV cache costs.
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "kvsqueeze/kernels_isa.h"
#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze::cli {
namespace {

struct InspectArgs {
  std::string model;
  bool json = false;
  bool tensors = false;
};

nlohmann::json value_json(const GgufValue& v) {
  if (v.is_array()) {
    const auto& a = v.as_array();
    if (a.items.size() > 16)  // vocabularies: summarise, they can have 262k entries
      return {{"type", std::string("array of ") + gguf_value_type_name(a.element_type)}, {"length", a.items.size()}};
    nlohmann::json out = nlohmann::json::array();
    for (const auto& item : a.items) out.push_back(value_json(item));
    return out;
  }
  if (v.type == GgufValueType::STRING) return v.as_string();
  if (v.type == GgufValueType::BOOL) return v.as_bool();
  if (v.type == GgufValueType::FLOAT32 || v.type == GgufValueType::FLOAT64) return v.as_float();
  return v.as_int();
}

int run(const InspectArgs& args) {
  auto model = Model::load(args.model);
  const ModelConfig& c = model->config();
  const GgufFile& f = model->gguf();
  std::map<std::string, int64_t> by_type;
  for (const auto& t : f.tensors()) by_type[tensor_type_info(t.type).name] += 1;

  nlohmann::json j;
  j["file"] = args.model;
  j["gguf_version"] = f.version();
  j["file_bytes"] = f.file_size();
  j["architecture"] = c.arch_name;
  j["name"] = c.name;
  j["parameters"] = c.n_params;
  j["tensor_types"] = by_type;
  j["hparams"] = {{"n_vocab", c.n_vocab}, {"n_embd", c.n_embd}, {"n_layer", c.n_layer}, {"n_head", c.n_head},
                  {"n_head_kv", c.n_head_kv}, {"head_dim_k", c.head_dim_k}, {"head_dim_v", c.head_dim_v},
                  {"n_ff", c.n_ff}, {"n_ctx_train", c.n_ctx_train}, {"rms_eps", c.rms_eps},
                  {"rope_base", c.rope_base}, {"rope_base_local", c.rope_base_local}, {"rope_neox", c.rope_neox},
                  {"qk_norm", c.qk_norm}, {"qkv_bias", c.qkv_bias}, {"tied_embeddings", c.tied_embeddings},
                  {"sliding_window", c.sliding_window}};
  std::vector<int> sliding;
  for (int64_t l = 0; l < c.n_layer; ++l)
    if (c.layer_sliding[static_cast<size_t>(l)]) sliding.push_back(static_cast<int>(l));
  j["sliding_layers"] = sliding;
  j["kv_cache"] = {{"bytes_per_token_f16", c.kv_bytes_per_token_f16()},
                   {"layers", c.n_layer},
                   {"kv_heads_per_layer", c.n_head_kv},
                   {"bytes_at_trained_context_f16", c.kv_bytes_per_token_f16() * c.n_ctx_train}};
  // What a quantized cache would hold (--kv-type q8_0 / q4_0), where the head sizes are whole blocks.
  const bool blocks = c.head_dim_k % 32 == 0 && c.head_dim_v % 32 == 0;
  const auto per_token = [&](KvType t) { return static_cast<int64_t>(c.n_layer * c.n_head_kv) * static_cast<int64_t>(kv_slot_bytes(t, t, c.head_dim_k, c.head_dim_v)); };
  if (blocks) {
    j["kv_cache"]["bytes_per_token_q8_0"] = per_token(KvType::Q8_0);
    j["kv_cache"]["bytes_per_token_q4_0"] = per_token(KvType::Q4_0);
  }
  const Tokenizer& tok = model->tokenizer();
  j["tokenizer"] = {{"model", tok.model_type()}, {"vocab_size", tok.vocab_size()}, {"bos", tok.bos_id()},
                    {"eos", tok.eos_id()}, {"add_bos", tok.add_bos_by_default()}};
  j["chat_template"] = model->chat_template().name();
  nlohmann::json meta;
  for (const auto& [key, value] : f.metadata()) meta[key] = value_json(value);
  j["metadata"] = meta;
  j["kernels"] = kernels_isa();  // of this machine, not of the file: what a run here would use
  if (args.tensors) {
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : f.tensors())
      ts.push_back({{"name", t.name}, {"type", tensor_type_info(t.type).name}, {"shape", t.shape}, {"bytes", t.n_bytes}});
    j["tensors"] = ts;
  }
  if (args.json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("file          %s (GGUF v%u, %.1f MiB)\n", args.model.c_str(), f.version(), f.file_size() / 1048576.0);
  std::printf("architecture  %s  \"%s\"  %.1fM parameters\n", c.arch_name.c_str(), c.name.c_str(), c.n_params / 1e6);
  std::printf("shape         %lld layers, embd %lld, ffn %lld, heads %lld (kv %lld), head dim %lld, vocab %lld\n",
              (long long)c.n_layer, (long long)c.n_embd, (long long)c.n_ff, (long long)c.n_head, (long long)c.n_head_kv,
              (long long)c.head_dim_k, (long long)c.n_vocab);
  std::printf("context       %lld trained; rope base %g%s%s\n", (long long)c.n_ctx_train, c.rope_base,
              c.rope_neox ? " (neox)" : "", c.sliding_window ? (", sliding window " + std::to_string(c.sliding_window) + " on " +
                                                                  std::to_string(sliding.size()) + " layers").c_str() : "");
  std::printf("tensor types ");
  for (const auto& [name, n] : by_type) std::printf(" %s x%lld", name.c_str(), (long long)n);
  std::printf("\ntokenizer     %s, %d tokens, bos %d, eos %d; chat template: %s\n", tok.model_type().c_str(), tok.vocab_size(),
              tok.bos_id(), tok.eos_id(), model->chat_template().name().c_str());
  std::printf("kv cache      %lld bytes/token (f16, %lld layers x %lld kv heads x (%lld+%lld) dims); %.1f MiB at %lld tokens\n",
              (long long)c.kv_bytes_per_token_f16(), (long long)c.n_layer, (long long)c.n_head_kv, (long long)c.head_dim_k,
              (long long)c.head_dim_v, c.kv_bytes_per_token_f16() * c.n_ctx_train / 1048576.0, (long long)c.n_ctx_train);
  if (blocks)
    std::printf("              with each slot's position: %lld bytes/token as f16, %lld as q8_0, %lld as q4_0 (--kv-type)\n",
                (long long)per_token(KvType::F16), (long long)per_token(KvType::Q8_0), (long long)per_token(KvType::Q4_0));
  std::printf("metadata      %zu keys (--json shows them)\n", f.metadata().size());
  std::printf("kernels       %s (this machine; KVSQ_ISA=scalar|avx2|avx512 asks for a lower set)\n", kernels_isa().c_str());
  if (args.tensors)
    for (const auto& t : f.tensors()) {
      std::printf("  %-40s %-5s [", t.name.c_str(), tensor_type_info(t.type).name);
      for (size_t i = 0; i < t.shape.size(); ++i) std::printf("%s%lld", i ? ", " : "", (long long)t.shape[i]);
      std::printf("]\n");
    }
  return 0;
}

}  // namespace

Runner add_inspect(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  auto* sub = app.add_subcommand("inspect", "Show a GGUF model's architecture, tokenizer, metadata and KV cache size");
  sub->add_option("model", args->model, "GGUF model file")->required();
  sub->add_flag("--json", args->json, "Print one JSON object");
  sub->add_flag("--tensors", args->tensors, "List every tensor");
  return [args] { return run(*args); };
}

}  // namespace kvsqueeze::cli
