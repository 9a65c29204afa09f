// KL divergence and perplexity against the full cache (docs/METHODS.md §8.4): a continuation
// teacher-forced after the context, once from the full cache (the baseline cell) and once from
// each compressed copy; next-token distributions compared token by token.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "eval/cell_contexts.h"
#include "backend/host_math.h"
#include "eval/results_file.h"
#include "kvsqueeze/engine.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/progress.h"
#include "kvsqueeze/eval/runner.h"
#include "runtime/stopwatch.h"

namespace kvsqueeze::eval {

std::vector<KldText> kld_windows(const Model& model, const std::string& text, const std::vector<int64_t>& lengths,
                                 int64_t continuation, int64_t per_length, uint64_t seed, bool consecutive) {
  if (continuation < 1) throw ParameterError("continuation", "`continuation` must be >= 1 token, got " + std::to_string(continuation));
  if (per_length < 1) throw ParameterError("samples", "`samples` must be >= 1, got " + std::to_string(per_length));
  const Tokenizer& tok = model.tokenizer();
  const std::vector<int32_t> ids = tok.encode(text, false);
  std::vector<KldText> out;
  uint64_t state = seed ^ 0x9E3779B97F4A7C15ULL;
  for (int64_t len : lengths) {
    if (len < 2) throw Error("context lengths must be >= 2 tokens, got " + std::to_string(len));
    // The context is BOS + len - 1 text tokens (when the model adds BOS).
    const int64_t body = len - (tok.add_bos_by_default() ? 1 : 0);
    const int64_t need = body + continuation;
    if (need > static_cast<int64_t>(ids.size()))
      throw Error("the text has " + std::to_string(ids.size()) + " tokens; a context of " + std::to_string(len) + " plus " +
                  std::to_string(continuation) + " continuation tokens needs " + std::to_string(need));
    if (consecutive && need * per_length > static_cast<int64_t>(ids.size()))
      throw Error("the text has " + std::to_string(ids.size()) + " tokens; " + std::to_string(per_length) + " consecutive windows of " +
                  std::to_string(need) + " need " + std::to_string(need * per_length));
    const auto room = static_cast<uint64_t>(static_cast<int64_t>(ids.size()) - need + 1);
    for (int64_t w = 0; w < per_length; ++w) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;  // portable LCG: offsets are reproducible
      const int64_t at = consecutive ? w * need : static_cast<int64_t>((state >> 17) % room);
      KldText t;
      t.id = "L" + std::to_string(len) + "_w" + std::to_string(w);
      if (tok.add_bos_by_default()) t.context.push_back(tok.bos_id());
      t.context.insert(t.context.end(), ids.begin() + at, ids.begin() + at + body);
      t.continuation.assign(ids.begin() + at + body, ids.begin() + at + body + continuation);
      t.meta = {{"length", len}, {"offset", at}, {"continuation", continuation}};
      out.push_back(std::move(t));
    }
  }
  return out;
}

int64_t run_kld_eval(const Model& model, const std::vector<KldText>& texts, const EvalSettings& s) {
  if (s.query_aware) throw Error("kld/ppl teacher-force a continuation: there is no question for query-aware compression");
  const std::vector<GridCell> grid = make_grid(s);
  for (const auto& cell : grid)
    if (cell.press != "none" && expression_needs_question(cell.press))
      throw ParameterError("presses", cell.press + " is query-aware: kld/ppl have no question to compress with");
  ResultsFile results(s.out_dir, run_config(model, s), s.resume);
  const int64_t V = model.config().n_vocab;
  const int64_t ctx_size = s.session.ctx_size > 0 ? s.session.ctx_size : model.config().n_ctx_train;
  for (const auto& t : texts)
    if (static_cast<int64_t>(t.context.size() + t.continuation.size()) > ctx_size)
      throw Error("context " + std::to_string(t.context.size()) + " + continuation " + std::to_string(t.continuation.size()) +
                  " tokens exceed the context size " + std::to_string(ctx_size));
  Progress progress(s.kind, static_cast<int64_t>(texts.size() * grid.size()));
  int64_t appended = 0;
  for (const auto& text : texts) {
    Sample key_sample;
    key_sample.task = s.kind;
    key_sample.id = text.id;
    std::vector<const GridCell*> pending;
    for (const auto& cell : grid)
      if (!results.has(result_key(key_sample, cell, s))) pending.push_back(&cell);
    progress.advance(static_cast<int64_t>(grid.size() - pending.size()));
    if (pending.empty()) continue;
    // The baseline's distributions are the reference of every cell: run it first, always.
    if (pending.front() != &grid.front()) pending.insert(pending.begin(), &grid.front());
    const auto n = static_cast<int64_t>(text.continuation.size());
    std::vector<float> reference;
    std::vector<double> reference_lse;
    const auto set_reference = [&](std::vector<float> logits) {
      reference = std::move(logits);
      reference_lse.assign(static_cast<size_t>(n), 0.0);
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < n; ++t) reference_lse[static_cast<size_t>(t)] = host::log_sum_exp(reference.data() + t * V, V);
    };
    if (s.reference_kv_type) {  // an uncompressed cache of the reference type, stored plainly
      SessionOptions ro = s.session;
      ro.kv_type_k = ro.kv_type_v = *s.reference_kv_type;
      ro.kv_rotation = ro.kv_centering = KvTransform::Off;
      Engine ref(model, ro);
      ref.prefill_context(text.context, static_cast<int64_t>(text.continuation.size()));
      set_reference(ref.teacher_force(text.continuation));
    }
    for_each_cell(model, s, pending, text.context, [&](InstalledCell& ic) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<float> logits = ic.engine->teacher_force(text.continuation);
      const double decode_ms = ms_since(t0);
      if (ic.cell == &grid.front() && !s.reference_kv_type) set_reference(logits);
      if (reference.empty()) throw Error("internal: the kld baseline must run first");
      double kl = 0, dlogp = 0, nll_ref = 0, nll = 0;
      int64_t agree = 0;
#pragma omp parallel for schedule(static) reduction(+ : kl, dlogp, nll_ref, nll, agree)
      for (int64_t t = 0; t < n; ++t) {
        const TokenDivergence d = token_divergence(reference.data() + t * V, reference_lse[static_cast<size_t>(t)], logits.data() + t * V,
                                                   V, text.continuation[static_cast<size_t>(t)]);
        kl += d.kl, dlogp += d.abs_dlogp, nll_ref += d.nll_ref, nll += d.nll_test;
        agree += d.top1_agree;
      }
      const double dn = static_cast<double>(n);
      const double ppl = std::exp(nll / dn), ppl_full = std::exp(nll_ref / dn);
      const std::string key = result_key(key_sample, *ic.cell, s);
      if (results.has(key)) return;  // the baseline re-run only as the reference
      nlohmann::json j = results.base(s.kind, key, *ic.cell);
      j["task"] = s.kind;
      j["sample_id"] = text.id;
      j["meta"] = text.meta;
      j["score"] = s.kind == "ppl" ? ppl : kl / dn;
      j["metrics"] = {{"kl", kl / dn}, {"abs_dlogp", dlogp / dn}, {"top1", static_cast<double>(agree) / dn},
                      {"ppl", ppl}, {"ppl_full", ppl_full}, {"ppl_ratio", ppl / ppl_full}};
      fill_measurements(j, ic, decode_ms);
      j["continuation_tokens"] = n;
      results.append(j);
      ++appended;
      progress.advance(1, ic.cell->label() + " " + text.id);
    });
  }
  return appended;
}

}  // namespace kvsqueeze::eval
