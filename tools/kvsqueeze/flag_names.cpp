#include "flag_names.h"

#include <map>

#include "kvsqueeze/field_names.h"

namespace kvsqueeze::cli {
namespace {

const std::map<std::string, std::string>& flags() {
  static const std::map<std::string, std::string> table = {
      {"press", "--press"}, {"presses", "--press"}, {"ratio", "--ratio"}, {"ratios", "--ratio"},
      {"options", "--press-opt"}, {"decode_press", "--decode-press"}, {"decode_options", "--decode-press-opt"},
      {"decode_interval", "--decode-interval"}, {"decode_target", "--decode-target"}, {"decode_ratio", "--decode-ratio"},
      {"ctx_size", "--ctx-size"}, {"chunk", "--chunk"}, {"threads", "--threads"}, {"kv_type", "--kv-type"}, {"kv_type_k", "--cache-type-k"}, {"kv_type_v", "--cache-type-v"}, {"kv_rotation", "--kv-rotation"}, {"kv_centering", "--kv-centering"}, {"reference_kv_type", "--reference-kv-type"},
      {"max_tokens", "-n"}, {"temperature", "--temp"}, {"top_k", "--top-k"}, {"top_p", "--top-p"}, {"min_p", "--min-p"},
      {"lengths", "--lengths"}, {"depths", "--depths"}, {"gate", "--gate"}, {"gate_threshold", "--gate-threshold"},
      {"query_aware", "--query-aware"}, {"every_chunk", "--compress-chunks"}, {"question", "-q"},
      {"continuation", "--continuation"}, {"samples", "--samples"}, {"resume", "resume (drop --no-resume)"},
      {"windows", "--windows"}, {"grid_memory_mib", "--grid-memory"}, {"longbench_dir", "--longbench-dir"}, {"kind", "kind"},
  };
  return table;
}

}  // namespace

std::string with_flag_names(const std::string& message) {
  return rename_fields(message, [](const std::string& field) {
    const auto it = flags().find(field);
    return it != flags().end() ? it->second : field;
  });
}

}  // namespace kvsqueeze::cli
