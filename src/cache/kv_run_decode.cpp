#include "kvsqueeze/kv_run_decode.h"

#include "backend/host_math.h"

namespace kvsqueeze {

std::vector<float> run_keys_f32(const KvRun& run, int64_t head_dim_k) {
  std::vector<float> out(static_cast<size_t>(run.len * head_dim_k));
  for (int64_t j = 0; j < run.len; ++j) host::key_row(run, j, head_dim_k, out.data() + j * head_dim_k);
  return out;
}

std::vector<float> run_values_f32(const KvRun& run) {
  const int64_t d = run.v_stride;
  std::vector<float> out(static_cast<size_t>(run.len * d));
  for (int64_t j = 0; j < run.len; ++j) host::value_row(run, j, d, out.data() + j * d);
  return out;
}

}  // namespace kvsqueeze
