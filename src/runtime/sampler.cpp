#include "kvsqueeze/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvsqueeze/error.h"

namespace kvsqueeze {

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

void Sampler::validate(const SamplerOptions& o) {
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature))
    throw ParameterError("temperature", "`temperature` must be >= 0, got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw ParameterError("top_k", "`top_k` must be >= 0 (0 disables it), got " + std::to_string(o.top_k));
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) throw ParameterError("top_p", "`top_p` must be in (0, 1], got " + std::to_string(o.top_p));
  if (!(o.min_p >= 0.0f && o.min_p < 1.0f)) throw ParameterError("min_p", "`min_p` must be in [0, 1), got " + std::to_string(o.min_p));
}

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) { validate(options); }

int32_t Sampler::sample(const std::vector<float>& logits) {
  if (options_.temperature == 0.0f) return argmax(logits);
  struct Candidate {
    int32_t id;
    float logit;
  };
  std::vector<Candidate> c(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {static_cast<int32_t>(i), logits[i]};
  auto by_logit = [](const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
  size_t keep = c.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
    keep = static_cast<size_t>(options_.top_k);
    std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(keep), c.end(), by_logit);
  } else {
    std::sort(c.begin(), c.end(), by_logit);
  }
  c.resize(keep);
  // Probabilities at temperature 1 for the top-p and min-p filters (llama.cpp order).
  std::vector<double> p(keep);
  const double top = c[0].logit;
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp(static_cast<double>(c[i].logit) - top);
  if (options_.top_p < 1.0f) {
    double cum = 0.0;
    size_t n = 0;
    while (n < keep) {
      cum += p[n++] / sum;
      if (cum >= options_.top_p) break;
    }
    keep = std::max<size_t>(n, 1);
  }
  if (options_.min_p > 0.0f) {
    size_t n = 1;  // p[0] / p[0] == 1 always passes
    while (n < keep && p[n] >= options_.min_p) ++n;
    keep = n;
  }
  std::vector<double> w(keep);
  for (size_t i = 0; i < keep; ++i) w[i] = std::exp((static_cast<double>(c[i].logit) - top) / options_.temperature);
  std::discrete_distribution<size_t> pick(w.begin(), w.end());
  return c[pick(rng_)].id;
}

}  // namespace kvsqueeze
