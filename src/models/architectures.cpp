#include "models/architecture.h"

namespace kvsqueeze::models {

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> all = {llama(), mistral(), qwen2(), qwen3(), gemma3()};
  return all;
}

}  // namespace kvsqueeze::models
