// Generation tasks: each sample's context compressed per cell, the question appended, a greedy
// answer decoded and scored with the sample's metric.
#include <chrono>
#include <filesystem>
#include <set>

#include "eval/cell_contexts.h"
#include "eval/results_file.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/metrics.h"
#include "kvsqueeze/eval/progress.h"
#include "kvsqueeze/eval/report.h"
#include "kvsqueeze/eval/runner.h"
#include "kvsqueeze/generation.h"

namespace kvsqueeze::eval {
namespace {

struct PromptIds {
  std::vector<int32_t> context, question;
};

PromptIds tokenize(const Model& model, const Sample& sample, bool chat) {
  const Tokenizer& tok = model.tokenizer();
  PromptIds p;
  if (chat) {
    const auto split = model.chat_template().split(sample.context, sample.question);
    p.context = tok.encode(split.context_part, tok.add_bos_by_default());
    p.question = tok.encode(split.question_part + sample.answer_prefix, false);
  } else {
    p.context = tok.encode(sample.context, tok.add_bos_by_default());
    p.question = tok.encode(sample.question + sample.answer_prefix, false);
  }
  return p;
}

}  // namespace

int64_t run_generation_eval(const Model& model, const std::vector<Sample>& samples, const EvalSettings& s) {
  const std::vector<GridCell> grid = make_grid(s);
  ResultsFile results(s.out_dir, run_config(model, s), s.resume);
  const int64_t ctx_size = s.session.ctx_size > 0 ? s.session.ctx_size : model.config().n_ctx_train;
  // Every prompt must fit before the first one runs.
  std::vector<PromptIds> prompts;
  for (const auto& sample : samples) {
    prompts.push_back(tokenize(model, sample, s.chat));
    const int64_t need = static_cast<int64_t>(prompts.back().context.size() + prompts.back().question.size()) + sample.max_new_tokens;
    if (need > ctx_size)
      throw Error("sample " + sample.task + "/" + sample.id + " needs " + std::to_string(need) +
                  " positions (prompt and answer), more than the context size " + std::to_string(ctx_size) +
                  " (raise `ctx_size` or use shorter `lengths`)");
  }
  Progress progress(s.kind, static_cast<int64_t>(samples.size() * grid.size()));
  int64_t appended = 0;
  SamplerOptions greedy;
  greedy.temperature = 0.0f;
  for (size_t si = 0; si < samples.size(); ++si) {
    const Sample& sample = samples[si];
    std::vector<const GridCell*> pending;
    for (const auto& cell : grid)
      if (!results.has(result_key(sample, cell, s))) pending.push_back(&cell);
    progress.advance(static_cast<int64_t>(grid.size() - pending.size()));
    if (pending.empty()) continue;
    const PromptIds& ids = prompts[si];
    for_each_cell(model, s, pending, ids.context, [&](InstalledCell& ic) {
      GenerateParams params;
      params.max_tokens = sample.max_new_tokens;
      params.sampling = greedy;
      const double context_ms = ic.engine->context_ms();
      const Completion r = ic.engine->answer(ids.question, params, false);
      double answer_ms = r.timings.decode_ms + (r.timings.prefill_ms - context_ms);  // the question's prefill and the answer
      if (ic.query_aware) {
        // Compressed with the question: measured then, the question's prefill counted as prefill.
        measure(model, r.prompt, static_cast<int64_t>(ids.context.size() + ids.question.size()), ic);
        ic.prefill_ms = r.timings.prefill_ms;
        answer_ms = r.timings.decode_ms;
      }
      // What is scored (LongBench cuts some answers at their first line).
      const std::string answer = sample.first_line_only ? longbench_first_line(r.text) : r.text;
      const double score = score_sample(sample, r.text);
      nlohmann::json j = results.base(s.kind, result_key(sample, *ic.cell, s), *ic.cell);
      j["task"] = sample.task;
      j["sample_id"] = sample.id;
      j["meta"] = sample.meta;
      j["score"] = score;
      j["metrics"] = {{sample.metric, score}};
      j["prediction"] = answer;
      j["references"] = sample.references;
      fill_measurements(j, ic, answer_ms);
      j["answer_tokens"] = r.tokens.size();
      results.append(j);
      ++appended;
      progress.advance(1, ic.cell->label() + " " + sample.id);
    });
  }
  return appended;
}

}  // namespace kvsqueeze::eval
