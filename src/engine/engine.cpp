// The engine API's sequence flow: a context compressed once as the plan says, then questions
// answered from it (rolled back, or from copies when compression changed it), or generation.
#include "kvsqueeze/engine.h"

#include <algorithm>
#include <chrono>

#include "engine/plan_presses.h"
#include "kvsqueeze/cache_file.h"
#include "kvsqueeze/shared_prefill.h"
#include "runtime/decoder.h"
#include "runtime/stopwatch.h"

namespace kvsqueeze {

struct Engine::Impl {
  Impl(const Model& m, const SessionOptions& o) : model(m), session(m, o) {}

  const Model& model;
  Session session;
  CompressionPlan plan;
  PlanReport report;
  PlanPresses presses;
  std::unique_ptr<PressRunner> runner;  // compresses the context (and decoding, if planned)
  const std::atomic<bool>* cancel = nullptr;

  bool has_context = false;
  std::vector<int32_t> context_ids;
  int32_t context_end = 0;
  std::vector<float> context_logits;
  double context_ms = 0.0;
  bool protected_end = false;
  int64_t compressions = 0, removed = 0;  // of runners already gone (query-aware questions)

  // The step interface's state (begin_context / begin_generation and their steps).
  enum class Stepping { None, Context, Question, Decode, Done };
  Stepping stepping = Stepping::None;
  std::vector<int32_t> step_ids;
  int64_t step_reserve = 0;
  int64_t step_question_tokens = 0;
  int64_t step_max_tokens = 0;
  double question_ms = 0.0;
  std::unique_ptr<Sampler> step_sampler;
  DecodeControl step_control;
  std::unique_ptr<Decoder> decoder;

  // Drops any context and rebuilds the presses (they may hold per-context state).
  void reset() {
    session.cancel_eval();  // a stepped evaluation left half way
    stepping = Stepping::None;
    decoder.reset();
    step_sampler.reset();
    runner.reset();
    session.set_layer_hook({});
    if (session.next_position() > 0) session.rollback_to(0);
    presses = build_plan_presses(plan, model.config(), session.options().kv_type_k, session.options().kv_type_v, &report);
    has_context = false;
    context_ids.clear();
    context_end = 0;
    context_logits.clear();
    context_ms = 0.0;
    compressions = removed = 0;
  }

  // The runner that compresses the context, unless compression waits for each question.
  void make_runner() {
    const bool decoding = report.policy.decoding();
    if (report.query_aware || (!presses.press && !decoding)) return;
    runner = std::make_unique<PressRunner>(session, presses.press.get(), presses.budget,
                                           decoding ? presses.decode_press : nullptr, report.policy);
  }

  // The last chunk of a stepped context ran (step_context or a batched step).
  void context_stepped() {
    stepping = Stepping::None;
    context_ids = std::move(step_ids);
    step_ids.clear();
    context_ready();
  }
  // The last chunk of a stepped question ran: generation starts.
  void question_stepped() {
    decoder = std::make_unique<Decoder>(session, *step_sampler, step_control, step_max_tokens);
    stepping = Stepping::Decode;
  }
  // What a batched step may do for this engine now: run its next prompt chunk in the shared pass
  // (a context without a press, or a question not watched by a decoding press), evaluate one
  // decode token there, or neither (it steps alone).
  enum class BatchRole { Alone, Chunk, Token };
  BatchRole batch_role(bool contexts) const {
    const bool quiet = !runner || !runner->acts_now();  // no press observes this pass
    switch (stepping) {
      case Stepping::Context: return contexts && !runner && session.evaluating() ? BatchRole::Chunk : BatchRole::Alone;
      case Stepping::Question: return quiet && session.evaluating() ? BatchRole::Chunk : BatchRole::Alone;
      case Stepping::Decode: return quiet ? BatchRole::Token : BatchRole::Alone;
      default: return BatchRole::Alone;
    }
  }

  void context_ready() {
    has_context = true;
    context_end = session.next_position();
    context_logits = session.last_logits();
    protected_end = false;
  }

  // Before the first answer: keep what rolling back to the context's end needs (sliding windows).
  void protect_context() {
    if (protected_end || report.query_aware) return;
    session.cache().protect_query_position(context_end);
    protected_end = true;
  }

  DecodeControl control(const GenerateParams& p) const {
    DecodeControl c;
    c.stop = p.stop;
    c.on_text = p.on_text;
    c.cancel = p.cancel ? p.cancel : cancel;
    c.ignore_eos = p.ignore_eos;
    return c;
  }
};

struct SharedPrefill::Impl {
  static constexpr int kOwnPrefill = -1;  // the plan compresses between chunks or while decoding
  std::vector<int32_t> ids;
  std::vector<float> logits;
  double prefill_ms = 0.0;
  std::vector<CompressionPlan> plans;
  std::vector<PlanPresses> presses;  // per plan: the presses that observed the shared pass
  std::vector<int> copy_of;          // per plan: its copy, or kOwnPrefill
  std::vector<PrefillCell> cells;
  std::vector<CompressedContext> copies;
  std::vector<bool> used;
  int full = -1;  // the uncompressed copy: plans without a press, and query-aware ones
};

struct ContextSnapshot::Impl {
  std::unique_ptr<KvCache> cache;
  int32_t next_position = 0;
  std::vector<float> logits;
  std::vector<int32_t> ids;
  PlanReport plan;
  size_t bytes_full = 0;
};

ContextSnapshot::ContextSnapshot() : impl_(std::make_unique<Impl>()) {}
ContextSnapshot::~ContextSnapshot() = default;
const std::vector<int32_t>& ContextSnapshot::tokens() const { return impl_->ids; }
size_t ContextSnapshot::bytes_held() const { return impl_->cache->bytes_held(); }
size_t ContextSnapshot::bytes_full() const { return impl_->bytes_full; }
const PlanReport& ContextSnapshot::plan() const { return impl_->plan; }

SharedPrefill::SharedPrefill() : impl_(std::make_unique<Impl>()) {}
SharedPrefill::~SharedPrefill() = default;
double SharedPrefill::prefill_ms() const { return impl_->prefill_ms; }
size_t SharedPrefill::size() const { return impl_->plans.size(); }
bool SharedPrefill::shared(size_t index) const {
  const int c = impl_->copy_of.at(index);
  return c >= 0 && impl_->copies[static_cast<size_t>(c)].shareable;
}
double SharedPrefill::compress_ms(size_t index) const {
  const int c = impl_->copy_of.at(index);
  return c >= 0 ? impl_->copies[static_cast<size_t>(c)].compress_ms : 0.0;
}

Engine::Engine(const Model& model, const SessionOptions& options) : impl_(std::make_unique<Impl>(model, options)) {
  impl_->reset();
}
Engine::~Engine() = default;

void Engine::set_cancel_flag(const std::atomic<bool>* flag) {
  impl_->cancel = flag;
  impl_->session.set_cancel_flag(flag);
}

void Engine::check_fits(int64_t tokens) const {
  const int64_t limit = impl_->session.options().ctx_size;
  if (tokens > limit)
    throw ContextFullError("prompt of " + std::to_string(tokens) + " tokens exceeds the context size " + std::to_string(limit) +
                           " (raise `ctx_size`, at most the model's " + std::to_string(impl_->model.config().n_ctx_train) + ")");
}

const PlanReport& Engine::set_plan(const CompressionPlan& plan) {
  const CompressionPlan previous = impl_->plan;
  impl_->plan = plan;
  try {
    impl_->reset();
  } catch (...) {
    impl_->plan = previous;  // a rejected plan leaves the engine as it was (without a context)
    impl_->reset();
    throw;
  }
  return impl_->report;
}

const PlanReport& Engine::plan() const { return impl_->report; }

std::vector<int32_t> Engine::context_ids(const std::string& context, bool chat) const {
  const Tokenizer& tok = impl_->model.tokenizer();
  const std::string text = chat ? impl_->model.chat_template().split(context, "").context_part : context;
  return tok.encode(text, tok.add_bos_by_default());
}

std::vector<int32_t> Engine::question_ids(const std::string& context, const std::string& question, bool chat) const {
  const std::string text = chat ? impl_->model.chat_template().split(context, question).question_part : question;
  return impl_->model.tokenizer().encode(text, false);
}

double Engine::prefill_context(const std::vector<int32_t>& ids, int64_t reserve_tokens) {
  Impl& m = *impl_;
  check_fits(static_cast<int64_t>(ids.size()));
  m.reset();
  m.make_runner();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    if (reserve_tokens > 0) m.session.reserve(static_cast<int64_t>(ids.size()) + reserve_tokens);
    if (m.runner) m.runner->prefill(ids, reserve_tokens);
    else m.session.eval(ids);
  } catch (...) {
    m.reset();  // cancelled or failed: no half context
    throw;
  }
  m.context_ms = ms_since(t0);
  m.context_ids = ids;
  m.context_ready();
  return m.context_ms;
}

std::unique_ptr<SharedPrefill> Engine::prefill_shared(const std::vector<int32_t>& ids, const std::vector<CompressionPlan>& plans) {
  Impl& m = *impl_;
  check_fits(static_cast<int64_t>(ids.size()));
  std::unique_ptr<SharedPrefill> out(new SharedPrefill());
  SharedPrefill::Impl& sp = *out->impl_;
  sp.ids = ids;
  sp.plans = plans;
  for (const auto& plan : plans) {
    PlanReport report;
    sp.presses.push_back(build_plan_presses(plan, m.model.config(), m.session.options().kv_type_k,
                                                m.session.options().kv_type_v, &report));
    Press* press = sp.presses.back().press.get();
    if (!press || report.query_aware) {
      if (sp.full < 0) {
        sp.full = static_cast<int>(sp.cells.size());
        sp.cells.push_back({nullptr, {}});
      }
      sp.copy_of.push_back(sp.full);
    } else if (report.policy.every_chunk || report.policy.decoding()) {
      sp.copy_of.push_back(SharedPrefill::Impl::kOwnPrefill);
    } else {
      sp.copy_of.push_back(static_cast<int>(sp.cells.size()));
      sp.cells.push_back({press, sp.presses.back().budget});
    }
  }
  m.plan = {};
  m.reset();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    sp.copies = shared_prefill(m.session, ids, sp.cells);
  } catch (...) {
    m.reset();
    throw;
  }
  sp.prefill_ms = ms_since(t0);
  sp.logits = m.session.last_logits();
  sp.used.assign(sp.copies.size(), false);
  m.reset();  // the engine holds no context until use_shared picks one
  return out;
}

const PlanReport& Engine::use_shared(SharedPrefill& shared, size_t index, int64_t reserve_tokens) {
  Impl& m = *impl_;
  SharedPrefill::Impl& sp = *shared.impl_;
  if (index >= sp.plans.size())
    throw ParameterError("index", "`index` " + std::to_string(index) + " is not a plan of this prefill (it has " + std::to_string(sp.plans.size()) + ")");
  const int c = sp.copy_of[index];
  auto& copy = c >= 0 ? sp.copies[static_cast<size_t>(c)] : sp.copies.front();
  if (c < 0 || !copy.shareable) {  // compressed between chunks or while decoding: a prefill of its own
    set_plan(sp.plans[index]);
    prefill_context(sp.ids, reserve_tokens);
    return m.report;
  }
  if (c != sp.full && sp.used[static_cast<size_t>(c)])
    throw Error("the compressed copy of plan " + std::to_string(index) + " was already used (a copy serves one context)");
  m.plan = sp.plans[index];
  m.reset();
  const auto t0 = std::chrono::steady_clock::now();
  const auto n = static_cast<int32_t>(sp.ids.size());
  if (c == sp.full) {
    m.session.restore(clone_cache(*copy.cache), n, sp.logits);
    m.session.cache().release_slack(0);
  } else {
    sp.used[static_cast<size_t>(c)] = true;
    install_context(m.session, copy, sp.cells[static_cast<size_t>(c)], n, sp.logits, 0);
    m.presses = std::move(sp.presses[index]);  // the presses that observed the pass (finish() state)
  }
  if (reserve_tokens > 0) m.session.reserve(reserve_tokens);
  m.context_ms = sp.prefill_ms + ms_since(t0) + (c >= 0 && c != sp.full ? copy.compress_ms : 0.0);
  m.context_ids = sp.ids;
  m.context_ready();
  return m.report;
}

std::vector<int32_t> Engine::load_prompt_cache(const std::string& path, const std::vector<int32_t>& ids) {
  Impl& m = *impl_;
  m.reset();
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> cached = load_cache(m.session, path).tokens;
  if (!ids.empty() && cached != ids) {
    const size_t same = static_cast<size_t>(std::mismatch(ids.begin(), ids.end(), cached.begin(), cached.end()).first - ids.begin());
    m.reset();
    throw ParameterError("prompt", "the prompt does not match the cached tokens of '" + path + "' (" + std::to_string(ids.size()) +
                                       " prompt tokens, " + std::to_string(cached.size()) + " cached, the first " +
                                       std::to_string(same) + " equal)");
  }
  m.make_runner();  // decoding-time compression still applies to what is generated from it
  m.context_ms = ms_since(t0);
  m.context_ids = cached;
  m.context_ready();
  return cached;
}

double Engine::compress_context(int64_t reserve_tokens) {
  Impl& m = *impl_;
  if (!m.has_context) throw Error("no context to compress: prefill or load one first");
  if (!m.presses.press) throw ParameterError("press", "the plan has no press: nothing to compress the context with");
  if (m.presses.press->needs().any())
    throw ParameterError("press", "press " + m.plan.press + " needs attention statistics, which a loaded context does not carry " +
                                      "(use a press that scores from the cache alone)");
  const auto t0 = std::chrono::steady_clock::now();
  KvCache& cache = m.session.cache();
  for (int64_t l = 0; l < cache.shape().n_layer; ++l) {
    LayerStats stats;
    stats.layer = l;
    m.removed += compress_layer(*m.presses.press, LayerView(m.model, l, cache, stats), m.presses.budget, cache);
    ++m.compressions;
  }
  cache.release_slack(reserve_tokens);
  const double ms = ms_since(t0);
  m.context_ms += ms;
  return ms;
}

void Engine::save_prompt_cache(const std::string& path, const std::string& meta_json) const {
  if (!impl_->has_context) throw Error("no context to save: prefill or load one first");
  save_cache(impl_->session, impl_->context_ids, path, meta_json);
}

Completion Engine::answer(const std::vector<int32_t>& question_ids, const GenerateParams& params, bool keep_context) {
  Impl& m = *impl_;
  if (!m.has_context) throw Error("no context to answer from: prefill or load one first");
  if (question_ids.empty()) throw ParameterError("question", "`question` is empty");
  Sampler::validate(params.sampling);
  Sampler sampler(params.sampling);
  const bool decoding = m.report.policy.decoding();
  m.protect_context();
  // Decoding-time and query-aware compression change the context for good: later questions
  // start from a copy of it (a fork) instead of a rollback.
  std::unique_ptr<KvCache> snapshot;
  if (keep_context && (decoding || m.report.query_aware)) snapshot = std::make_unique<KvCache>(clone_cache(m.session.cache()));
  Completion out;
  GenerationResult r;
  if (m.report.query_aware) {
    // The question is compressed together with the context (Finch; kvpress's question-in-context
    // setting) by a press of its own, told the question's length.
    std::vector<std::string> opts = m.presses.press_options;
    for (const auto& o : question_length_options(m.plan.press, static_cast<int64_t>(question_ids.size()))) opts.push_back(o);
    auto question_press = make_press(m.plan.press, opts);
    // Decoding with the context press itself continues with the press that compressed this question.
    Press* decode_press = m.presses.decode_press == m.presses.press.get() ? question_press.get() : m.presses.decode_press;
    const auto t0 = std::chrono::steady_clock::now();
    PressRunner question_runner(m.session, question_press.get(), m.presses.budget, decoding ? decode_press : nullptr, m.report.policy);
    question_runner.prefill(question_ids, params.max_tokens);
    const double question_ms = ms_since(t0);
    out.kv_bytes_used = m.session.cache().bytes_used();
    out.prompt = accounting();
    out.prompt.layer_compressions += question_runner.compressions();
    out.prompt.slots_removed += question_runner.slots_removed();
    question_runner.start_decoding();
    r = kvsqueeze::generate(m.session, {}, params.max_tokens, sampler, m.control(params));
    r.prefill_ms = m.context_ms + question_ms;
    r.prompt_tokens = static_cast<int64_t>(m.context_ids.size() + question_ids.size());
    m.compressions += question_runner.compressions();
    m.removed += question_runner.slots_removed();
  } else {
    if (m.runner) m.runner->start_decoding();
    m.session.reserve(static_cast<int64_t>(question_ids.size()) + params.max_tokens);
    const auto t0 = std::chrono::steady_clock::now();
    m.session.eval(question_ids);
    const double question_ms = ms_since(t0);
    out.kv_bytes_used = m.session.cache().bytes_used();
    out.prompt = accounting();
    r = kvsqueeze::generate(m.session, {}, params.max_tokens, sampler, m.control(params));
    r.prefill_ms = m.context_ms + question_ms;
    r.prompt_tokens = static_cast<int64_t>(m.context_ids.size() + question_ids.size());
  }
  if (snapshot) m.session.restore(std::move(*snapshot), m.context_end, m.context_logits);
  else if (!decoding && !m.report.query_aware) m.session.rollback_to(m.context_end);
  if (!keep_context && (decoding || m.report.query_aware)) m.has_context = false;  // the last question used it up
  out.tokens = std::move(r.tokens);
  out.text = std::move(r.text);
  out.stop_reason = r.stop_reason;
  out.timings.prompt_tokens = r.prompt_tokens;
  out.timings.generated_tokens = static_cast<int64_t>(out.tokens.size());
  out.timings.prefill_ms = r.prefill_ms;
  out.timings.decode_ms = r.decode_ms;
  return out;
}

Completion Engine::generate(const std::vector<int32_t>& prompt, const GenerateParams& params) {
  Impl& m = *impl_;
  Sampler::validate(params.sampling);
  Sampler sampler(params.sampling);
  if (m.runner) m.runner->start_decoding();
  GenerationResult r = kvsqueeze::generate(m.session, prompt, params.max_tokens, sampler, m.control(params));
  Completion out;
  out.tokens = std::move(r.tokens);
  out.text = std::move(r.text);
  out.stop_reason = r.stop_reason;
  const bool continues_context = m.has_context && prompt.empty();
  out.timings.prompt_tokens = r.prompt_tokens + (continues_context ? static_cast<int64_t>(m.context_ids.size()) : 0);
  out.timings.prefill_ms = r.prefill_ms + (continues_context ? m.context_ms : 0.0);
  out.timings.generated_tokens = static_cast<int64_t>(out.tokens.size());
  out.timings.decode_ms = r.decode_ms;
  m.has_context = false;  // the sequence moved on: answers need a fresh context
  return out;
}

std::vector<float> Engine::teacher_force(const std::vector<int32_t>& tokens) {
  Impl& m = *impl_;
  if (!m.has_context) throw Error("no context to continue: prefill or load one first");
  if (tokens.empty()) throw ParameterError("tokens", "`tokens` is empty");
  const auto n = static_cast<int64_t>(tokens.size());
  check_fits(static_cast<int64_t>(m.session.next_position()) + n);
  const auto V = static_cast<size_t>(m.model.config().n_vocab);
  std::vector<float> out(static_cast<size_t>(n) * V);
  std::copy(m.context_logits.begin(), m.context_logits.end(), out.begin());
  m.has_context = false;  // whatever happens next, the context is no longer as prefilled
  if (n == 1) return out;
  const std::vector<int32_t> inputs(tokens.begin(), tokens.end() - 1);
  m.session.reserve(n);
  if (m.runner) m.runner->start_decoding();
  if (m.report.policy.decoding()) {
    // The runner compresses between decoding steps: one token per step, as generation runs.
    for (size_t t = 0; t < inputs.size(); ++t) {
      const auto& logits = m.session.eval({inputs[t]});
      std::copy(logits.begin(), logits.end(), out.begin() + static_cast<std::ptrdiff_t>((t + 1) * V));
    }
  } else {
    std::vector<float> all;
    m.session.eval(inputs, &all);
    std::copy(all.begin(), all.end(), out.begin() + static_cast<std::ptrdiff_t>(V));
  }
  return out;
}

void Engine::begin_context(const std::vector<int32_t>& ids, int64_t reserve_tokens) {
  Impl& m = *impl_;
  check_fits(static_cast<int64_t>(ids.size()));
  m.reset();
  m.make_runner();
  try {
    if (reserve_tokens > 0) m.session.reserve(static_cast<int64_t>(ids.size()) + reserve_tokens);
    if (m.runner) m.runner->begin_prefill(ids);
    else m.session.begin_eval(ids);
  } catch (...) {
    m.reset();
    throw;
  }
  m.step_ids = ids;
  m.step_reserve = reserve_tokens;
  m.stepping = Impl::Stepping::Context;
}

bool Engine::step_context() {
  Impl& m = *impl_;
  if (m.stepping != Impl::Stepping::Context) throw Error("no context being prefilled: call begin_context first");
  const auto t0 = std::chrono::steady_clock::now();
  bool done = false;
  try {
    done = m.runner ? m.runner->prefill_step() : m.session.eval_step();
    if (done && m.runner) m.runner->finish_prefill(m.step_reserve);
  } catch (...) {
    m.reset();  // cancelled or failed: no half context
    throw;
  }
  m.context_ms += ms_since(t0);
  if (done) m.context_stepped();
  return done;
}

void Engine::begin_generation(const std::vector<int32_t>& question_ids, const GenerateParams& params) {
  Impl& m = *impl_;
  if (m.stepping != Impl::Stepping::None) throw Error("a stepped context or generation is still in progress");
  if (!m.has_context) throw Error("no context to generate from: prefill, load or restore one first");
  if (m.report.query_aware)
    throw ParameterError("query_aware", "`query_aware` plans compress each question with a press of its own and cannot be stepped");
  if (params.max_tokens < 0) throw ParameterError("max_tokens", "`max_tokens` must be >= 0, got " + std::to_string(params.max_tokens));
  Sampler::validate(params.sampling);
  check_fits(static_cast<int64_t>(m.session.next_position()) + static_cast<int64_t>(question_ids.size()));
  m.step_sampler = std::make_unique<Sampler>(params.sampling);
  m.step_control = m.control(params);
  m.step_max_tokens = params.max_tokens;
  m.step_question_tokens = static_cast<int64_t>(question_ids.size());
  m.question_ms = 0.0;
  m.has_context = false;  // the sequence moves on: no rollback
  if (m.runner) m.runner->start_decoding();
  m.session.reserve(static_cast<int64_t>(question_ids.size()) + params.max_tokens);
  if (!question_ids.empty()) {
    m.session.begin_eval(question_ids);
    m.stepping = Impl::Stepping::Question;
  } else {
    m.decoder = std::make_unique<Decoder>(m.session, *m.step_sampler, m.step_control, m.step_max_tokens);
    m.stepping = Impl::Stepping::Decode;
  }
}

bool Engine::step_generation() {
  Impl& m = *impl_;
  switch (m.stepping) {
    case Impl::Stepping::Question: {
      const auto t0 = std::chrono::steady_clock::now();
      bool done = false;
      try {
        done = m.session.eval_step();
      } catch (...) {
        m.stepping = Impl::Stepping::Done;
        throw;
      }
      m.question_ms += ms_since(t0);
      if (done) m.question_stepped();
      return true;
    }
    case Impl::Stepping::Decode:
      if (m.decoder->step()) return true;
      m.stepping = Impl::Stepping::Done;
      return false;
    case Impl::Stepping::Done: return false;
    default: throw Error("no generation in progress: call begin_generation first");
  }
}

std::vector<Engine::BatchStep> Engine::step_generation(const std::vector<Engine*>& engines) {
  return step_engines(engines, false);
}

std::vector<Engine::BatchStep> Engine::step_batch(const std::vector<Engine*>& engines) {
  return step_engines(engines, true);
}

std::vector<Engine::BatchStep> Engine::step_engines(const std::vector<Engine*>& engines, bool contexts) {
  using Role = Impl::BatchRole;
  std::vector<BatchStep> results(engines.size());
  std::vector<size_t> batched;
  std::vector<Session*> sessions;
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < engines.size(); ++i) {
    Impl& m = *engines[i]->impl_;
    try {
      const Role role = m.batch_role(contexts);
      if (role == Role::Alone) {
        results[i].more = m.stepping == Impl::Stepping::Context ? !engines[i]->step_context() : engines[i]->step_generation();
        continue;
      }
      int32_t id = Session::kNextChunk;
      if (role == Role::Token) {
        id = m.decoder->next_token();
        if (id < 0) {
          m.stepping = Impl::Stepping::Done;
          continue;
        }
      }
      batched.push_back(i);
      sessions.push_back(&m.session);
      tokens.push_back(id);
    } catch (...) {
      results[i].error = std::current_exception();
    }
  }
  if (batched.empty()) return results;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<bool> complete;
  try {
    complete = Session::step_batch(sessions, tokens);
  } catch (...) {
    for (size_t i : batched) {
      results[i].error = std::current_exception();
      Impl& m = *engines[i]->impl_;
      if (m.stepping == Impl::Stepping::Context) m.reset();  // no half context, as step_context
      else m.stepping = Impl::Stepping::Done;
    }
    return results;
  }
  const double ms = ms_since(t0);
  for (size_t b = 0; b < batched.size(); ++b) {
    const size_t i = batched[b];
    Impl& m = *engines[i]->impl_;
    BatchStep& r = results[i];
    r.batched = true;
    r.chunk = tokens[b] == Session::kNextChunk;
    try {
      if (m.stepping == Impl::Stepping::Context) {
        m.context_ms += ms;
        if (complete[b]) m.context_stepped();
        r.more = !complete[b];
      } else if (m.stepping == Impl::Stepping::Question) {
        m.question_ms += ms;
        if (complete[b]) m.question_stepped();
        r.more = true;
      } else {
        r.more = m.decoder->evaluated();
        if (!r.more) m.stepping = Impl::Stepping::Done;
      }
    } catch (...) {
      r.error = std::current_exception();
      m.stepping = Impl::Stepping::Done;
    }
  }
  return results;
}

const std::vector<int32_t>& Engine::generated_tokens() const {
  static const std::vector<int32_t> none;
  return impl_->decoder ? impl_->decoder->tokens() : none;
}

const std::vector<float>& Engine::last_token_logits() const {
  static const std::vector<float> none;
  return impl_->decoder ? impl_->decoder->sampled_from() : none;
}

Completion Engine::finish_generation() {
  Impl& m = *impl_;
  if (m.stepping == Impl::Stepping::None || m.stepping == Impl::Stepping::Context)
    throw Error("no generation in progress: call begin_generation first");
  Completion out;
  if (m.decoder) {
    GenerationResult r = m.decoder->finish();
    out.tokens = std::move(r.tokens);
    out.text = std::move(r.text);
    out.stop_reason = r.stop_reason;
    out.timings.decode_ms = r.decode_ms;
  } else {
    out.stop_reason = StopReason::Cancelled;  // ended during the question
  }
  out.timings.prompt_tokens = static_cast<int64_t>(m.context_ids.size()) + m.step_question_tokens;
  out.timings.prefill_ms = m.context_ms + m.question_ms;
  out.timings.generated_tokens = static_cast<int64_t>(out.tokens.size());
  m.session.cancel_eval();
  m.decoder.reset();
  m.step_sampler.reset();
  m.stepping = Impl::Stepping::None;
  return out;
}

std::shared_ptr<const ContextSnapshot> Engine::snapshot_context() const {
  const Impl& m = *impl_;
  if (!m.has_context || m.stepping != Impl::Stepping::None) throw Error("no context to keep: prefill, load or restore one first");
  std::shared_ptr<ContextSnapshot> snap(new ContextSnapshot());
  snap->impl_->cache = std::make_unique<KvCache>(clone_cache(m.session.cache()));
  snap->impl_->next_position = m.session.next_position();
  snap->impl_->logits = m.context_logits;
  snap->impl_->ids = m.context_ids;
  snap->impl_->plan = m.report;
  snap->impl_->bytes_full = m.session.kv_bytes_full();
  return snap;
}

void Engine::restore_context(const ContextSnapshot& snapshot, int64_t reserve_tokens) {
  Impl& m = *impl_;
  m.reset();
  const auto t0 = std::chrono::steady_clock::now();
  const ContextSnapshot::Impl& s = *snapshot.impl_;
  try {
    m.session.restore(clone_cache(*s.cache), s.next_position, s.logits);
    if (reserve_tokens > 0) m.session.reserve(reserve_tokens);
  } catch (...) {
    m.reset();
    throw;
  }
  m.make_runner();  // decoding-time compression still applies to what is generated from it
  m.context_ms = ms_since(t0);
  m.context_ids = s.ids;
  m.context_ready();
}

double Engine::context_ms() const { return impl_->context_ms; }
const std::vector<int32_t>& Engine::context_tokens() const { return impl_->context_ids; }

Accounting Engine::accounting() const {
  const Impl& m = *impl_;
  Accounting a;
  a.kv_bytes_held = m.session.cache().bytes_held();
  a.kv_bytes_used = m.session.cache().bytes_used();
  a.kv_bytes_full = m.session.kv_bytes_full();
  a.context_tokens = static_cast<int64_t>(m.context_ids.size());
  a.kv_lengths = m.session.cache().lengths();
  a.layer_compressions = m.compressions + (m.runner ? m.runner->compressions() : 0);
  a.slots_removed = m.removed + (m.runner ? m.runner->slots_removed() : 0);
  return a;
}

const Model& Engine::model() const { return impl_->model; }
Session& Engine::session() { return impl_->session; }

}  // namespace kvsqueeze
