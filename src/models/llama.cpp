// Llama (and Mistral, and SmolLM, which is llama): the generic decoder, normal RoPE, no biases
// (files that carry q/k/v biases anyway get them applied).
#include "models/architecture.h"

namespace kvsqueeze::models {

namespace {
void configure_llama(ModelConfig&, const GgufFile&, const std::string&) {}
}  // namespace

Architecture llama() { return {"llama", ArchFamily::Llama, configure_llama}; }
Architecture mistral() { return {"mistral", ArchFamily::Llama, configure_llama}; }

}  // namespace kvsqueeze::models
