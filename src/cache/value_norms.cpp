#include <cmath>

#include "backend/host_math.h"
#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/layer_stats.h"

namespace kvsqueeze {

std::vector<float> value_norms(const KvCache& cache, int64_t layer, int64_t head) {
  const KvRun run = cache.run(layer, head);
  const int64_t dv = cache.shape().head_dim_v;
  std::vector<float> row(static_cast<size_t>(dv)), norms(static_cast<size_t>(run.len));
  for (int64_t j = 0; j < run.len; ++j) {
    host::value_row(run, j, dv, row.data());
    double sum = 0.0;
    for (float x : row) sum += static_cast<double>(x) * x;
    norms[static_cast<size_t>(j)] = static_cast<float>(std::sqrt(sum));
  }
  return norms;
}

}  // namespace kvsqueeze
