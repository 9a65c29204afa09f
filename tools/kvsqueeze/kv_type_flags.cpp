#include "kv_type_flags.h"

#include <cstring>

namespace kvsqueeze::cli {

void KvTypeFlags::add_to(CLI::App& sub) {
  both_option = sub.add_option("--kv-type", both, "KV cache type of keys and values: f16, bf16, f32, q8_0, q4_0, kivi2")
                    ->capture_default_str();
  k_option = sub.add_option("--cache-type-k", k, "Type of the cached keys (-ctk; default: --kv-type)");
  v_option = sub.add_option("--cache-type-v", v, "Type of the cached values (-ctv; default: --kv-type)");
  sub.add_option("--kv-rotation", rotation, "Store keys and values Walsh-Hadamard rotated: auto (quantized types), on, off")
      ->capture_default_str();
  sub.add_option("--kv-centering", centering,
                 "Store keys centred (a per-channel offset off, exact for attention): auto (quantized keys), on, off")
      ->capture_default_str();
}

bool KvTypeFlags::given() const {
  return both_option->count() > 0 || k_option->count() > 0 || v_option->count() > 0;
}

KvType KvTypeFlags::k_type() const {
  return k_option && k_option->count() > 0 ? parse_kv_type(k, "kv_type_k") : parse_kv_type(both, "kv_type");
}

KvType KvTypeFlags::v_type() const {
  return v_option && v_option->count() > 0 ? parse_kv_type(v, "kv_type_v") : parse_kv_type(both, "kv_type");
}

void KvTypeFlags::apply(SessionOptions& options) const {
  options.kv_type_k = k_type();
  options.kv_type_v = v_type();
  options.kv_rotation = parse_kv_transform(rotation, "kv_rotation");
  options.kv_centering = parse_kv_transform(centering, "kv_centering");
}

std::string KvTypeFlags::label() const { return kv_types_label(k_type(), v_type()); }

void rewrite_llama_flags(int argc, char** argv) {
  static char k_long[] = "--cache-type-k", v_long[] = "--cache-type-v";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-ctk") == 0) argv[i] = k_long;
    else if (std::strcmp(argv[i], "-ctv") == 0) argv[i] = v_long;
  }
}

}  // namespace kvsqueeze::cli
