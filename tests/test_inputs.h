#pragma once
// Small inputs several tests build the same way: a story prompt of an exact token length, and
// fixture number lists as floats.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvsqueeze/model.h"

namespace test_inputs {

// The first n tokens of a repeated children's-story sentence, in `m`'s tokenizer (BOS as the
// model adds it by default).
inline std::vector<int32_t> story_prompt(const kvsqueeze::Model& m, size_t n) {
  std::string text;
  const auto& tok = m.tokenizer();
  while (tok.encode(text, tok.add_bos_by_default()).size() < n)
    text += "Once upon a time there was a little girl named Lily. She loved to play outside with her dog. ";
  auto ids = tok.encode(text, tok.add_bos_by_default());
  ids.resize(n);
  return ids;
}

// A JSON list of numbers as floats.
inline std::vector<float> floats(const nlohmann::json& j) {
  std::vector<float> out;
  for (const auto& x : j) out.push_back(static_cast<float>(x.get<double>()));
  return out;
}

}  // namespace test_inputs
