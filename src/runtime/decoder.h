#pragma once
// The decode loop one token at a time: generate() runs it to the end; Engine's step interface
// (a server interleaving sequences) runs one step per call. One implementation, so both agree.
#include <memory>
#include <vector>

#include "kvsqueeze/generation.h"

namespace kvsqueeze {

class Decoder {
 public:
  // Starts from the session's last logits (the prompt is already evaluated).
  Decoder(Session& session, Sampler& sampler, const DecodeControl& control, int64_t max_new);
  ~Decoder();
  // Samples one token, streams its text and evaluates it; false once generation has ended.
  bool step();
  // step() in two halves, for a batched evaluation of several decoders' tokens (the server):
  // next_token() samples and streams a token and returns it, to be evaluated by the caller, or
  // -1 when generation has ended without one; evaluated() then takes the session's new logits
  // and says, as step() does, whether generation goes on.
  int32_t next_token();
  bool evaluated();
  // The logits the last generated token was sampled from (empty before the first).
  const std::vector<float>& sampled_from() const;
  const std::vector<int32_t>& tokens() const;
  // Flushes held-back text and returns the result (prompt_tokens and prefill_ms left at 0).
  GenerationResult finish();

 private:
  bool step_once();
  int32_t sample_next();  // the token to evaluate next, or -1 (generation ended)
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace kvsqueeze
