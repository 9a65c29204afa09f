#pragma once
// Every press that ships with kvsqueeze; one file each under src/press/.
namespace kvsqueeze {

void register_knorm_press();
void register_random_press();
void register_streaming_llm_press();
void register_snapkv_press();
void register_tova_press();
void register_keydiff_press();
void register_observed_attention_press();

inline void register_builtin_presses() {
  register_knorm_press();
  register_random_press();
  register_streaming_llm_press();
  register_snapkv_press();
  register_tova_press();
  register_keydiff_press();
  register_observed_attention_press();
}

}  // namespace kvsqueeze
