#include "scheduler.h"

#include <algorithm>
#include <cmath>

#include "prompt_split.h"
#include "sequence.h"

namespace kvsqueeze::server {

namespace {

uint64_t per_token_bytes(const Model& model, const SessionOptions& session) {
  const ModelConfig& c = model.config();
  return static_cast<uint64_t>(c.n_layer * c.n_head_kv) *
         kv_slot_bytes(session.kv_type_k, session.kv_type_v, c.head_dim_k, c.head_dim_v);
}

std::string finish_reason(StopReason r) {
  return r == StopReason::MaxTokens || r == StopReason::ContextFull ? "length" : "stop";
}

// log-softmax of the logits a token was sampled from: its logprob and the k best alternatives.
TokenLogprob logprobs_of(const Tokenizer& tok, const std::vector<float>& logits, int32_t id, int k) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - mx));
  const auto lse = static_cast<float>(mx + std::log(sum));
  TokenLogprob t;
  t.token = tok.decode({id});
  t.logprob = logits[static_cast<size_t>(id)] - lse;
  if (k > 0) {
    std::vector<int32_t> idx(logits.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
    const auto kk = std::min<size_t>(static_cast<size_t>(k), idx.size());
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(kk), idx.end(), [&](int32_t a, int32_t b) {
      return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] || (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
    });
    for (size_t i = 0; i < kk; ++i) t.top.emplace_back(tok.decode({idx[i]}), logits[static_cast<size_t>(idx[i])] - lse);
  }
  return t;
}

// What a sequence generates with: the request's settings; its text is collected in *text.
GenerateParams generate_params(const Job& job, std::string* text) {
  GenerateParams p;
  p.max_tokens = job.max_tokens;
  p.sampling = job.request.sampling;
  p.stop = job.request.stop;
  p.ignore_eos = job.request.ignore_eos;
  p.on_text = [text](const std::string& piece) { return *text += piece, true; };
  return p;
}

}  // namespace

Scheduler::Scheduler(const Model& model, const SchedulerOptions& options, Metrics& metrics)
    : model_(model), options_(options), metrics_(metrics), cache_(options.max_cached_contexts) {
  if (options_.session.ctx_size <= 0) options_.session.ctx_size = model.config().n_ctx_train;
  if (options_.max_prompt_tokens <= 0) options_.max_prompt_tokens = options_.session.ctx_size;
  options_.parallel = std::max(1, options_.parallel);
  bytes_per_token_ = per_token_bytes(model, options_.session);
  metrics_.kv_budget_bytes = options_.kv_budget_bytes;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    for (auto& j : queue_) j->cancelled = true;
    cv_.notify_all();
  }
  thread_.join();
}

std::shared_ptr<Job> Scheduler::submit(CompletionRequest request) {
  if (draining_) throw ApiError(503, "server_error", "", "shutting_down", "the server is shutting down");
  auto job = std::make_shared<Job>(std::move(request));
  const CompletionRequest& r = job->request;
  SplitPrompt split = split_prompt(model_, r);
  job->plan = r.plan;
  if (!split.compress_context) {  // no context part: only a decoding-time policy may apply
    job->plan.press = "none";
    job->plan.ratio = 0.0;
    job->plan.options.clear();
    if (job->plan.decode_press.empty() && job->plan.policy.decoding()) job->plan.policy = {};
  }
  const auto prompt = static_cast<int64_t>(split.context.size() + split.question.size());
  const int64_t ctx = options_.session.ctx_size;
  const std::string prompt_field = r.endpoint == Endpoint::Completions ? "prompt" : "messages";
  if (prompt > options_.max_prompt_tokens || prompt >= ctx)
    throw ApiError(400, "invalid_request_error", prompt_field, "context_length_exceeded",
                   "the prompt has " + std::to_string(prompt) + " tokens; this server takes at most " +
                       std::to_string(std::min(options_.max_prompt_tokens, ctx - 1)) + " (context size " + std::to_string(ctx) + ")");
  job->max_tokens = r.max_tokens ? *r.max_tokens : (r.endpoint == Endpoint::Completions ? 16 : ctx - prompt);
  if (prompt + job->max_tokens > ctx)
    throw ApiError(400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                   "the prompt's " + std::to_string(prompt) + " tokens plus `max_tokens` " + std::to_string(job->max_tokens) +
                       " exceed the context size " + std::to_string(ctx));
  const uint64_t need = static_cast<uint64_t>(prompt + job->max_tokens) * bytes_per_token_;
  if (options_.kv_budget_bytes > 0 && need > options_.kv_budget_bytes)
    throw ApiError(400, "invalid_request_error", prompt_field, "kv_budget_exceeded",
                   "the prompt and `max_tokens` need up to " + std::to_string(need) + " bytes of KV cache while prefilled, more than the " +
                       "server's KV budget of " + std::to_string(options_.kv_budget_bytes) + " bytes");
  job->context_ids = std::move(split.context);
  job->question_ids = std::move(split.question);
  std::lock_guard<std::mutex> lock(mutex_);
  if (queue_.size() >= options_.queue_max)
    throw ApiError(503, "server_error", "", "queue_full", "the server is busy: " + std::to_string(queue_.size()) + " requests are waiting");
  queue_.push_back(job);
  metrics_.queue_length = static_cast<int64_t>(queue_.size());
  cv_.notify_all();
  return job;
}

void Scheduler::drain(std::chrono::steady_clock::time_point deadline) {
  draining_ = true;
  auto idle = [&] {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.empty() && idle_.load();
  };
  while (!idle() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& j : queue_) j->cancelled = true;
    cancel_all_ = true;
    cv_.notify_all();
  }
  while (!idle()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

uint64_t Scheduler::reserved_bytes() const {
  uint64_t total = cache_.bytes_held();
  for (const auto& s : running_) total += s->reserved;
  return total;
}

// Admits queued requests in order while a sequence slot and the budget allow (the head waits for
// room rather than being overtaken, so long prompts are not starved). Cached contexts give way to
// running requests, least recently used first.
void Scheduler::admit_locked() {
  while (!queue_.empty() && static_cast<int>(running_.size()) < options_.parallel) {
    std::shared_ptr<Job> job = queue_.front();
    if (job->cancelled) {
      queue_.pop_front();
      job->push({.final = true, .finish_reason = "stop"});
      ++metrics_.requests_cancelled;
      continue;
    }
    auto s = std::make_unique<Sequence>();
    s->job = job;
    s->key = plan_key(job->plan);
    std::vector<int32_t> prompt = job->context_ids;
    prompt.insert(prompt.end(), job->question_ids.begin(), job->question_ids.end());
    std::shared_ptr<const ContextSnapshot> hit;
    if (options_.max_cached_contexts > 0) hit = cache_.longest_prefix(s->key, prompt);
    if (hit && hit->tokens().size() == prompt.size() && !job->question_ids.empty()) hit = nullptr;  // keep a question to evaluate
    // A compressed context serves only the very same context: what a press keeps depends on all of
    // it (a longer context compressed at once keeps other slots than a prefix compressed, then
    // extended), so only an uncompressed cache can serve as a prefix.
    if (hit && job->plan.press != "none" && hit->tokens() != job->context_ids) hit = nullptr;
    const auto tail = static_cast<uint64_t>(prompt.size()) + static_cast<uint64_t>(job->max_tokens);
    s->reserved = hit ? hit->bytes_held() + (tail - hit->tokens().size()) * bytes_per_token_ : tail * bytes_per_token_;
    if (!make_room(s->reserved)) {
      if (hit && cache_.size() == 0) continue;  // the hit itself was evicted: size it again as a miss
      break;                                    // wait for running sequences to free their share
    }
    queue_.pop_front();
    try {
      s->engine = std::make_unique<Engine>(model_, options_.session);
      s->engine->set_plan(job->plan);
      if (hit) {
        s->engine->restore_context(*hit, static_cast<int64_t>(tail - hit->tokens().size()));
        s->cached_tokens = static_cast<int64_t>(hit->tokens().size());
        ++metrics_.context_cache_hits;
        // What follows the cached context is evaluated as the question, uncompressed.
        std::vector<int32_t> rest(prompt.begin() + static_cast<std::ptrdiff_t>(hit->tokens().size()), prompt.end());
        s->engine->begin_generation(rest, generate_params(*job, &s->text));
        s->phase = Sequence::Phase::Generate;
      } else {
        ++metrics_.context_cache_misses;
        s->cache_context = options_.max_cached_contexts > 0 && !job->plan.policy.decoding();
        s->engine->begin_context(job->context_ids, static_cast<int64_t>(job->question_ids.size()) + job->max_tokens);
      }
    } catch (const std::exception& e) {
      job->push({.final = true, .error = ApiError(500, "server_error", "", "", e.what())});
      continue;
    }
    s->last_token = std::chrono::steady_clock::now();
    running_.push_back(std::move(s));
  }
  metrics_.queue_length = static_cast<int64_t>(queue_.size());
  metrics_.running = static_cast<int64_t>(running_.size());
}

void Scheduler::loop() {
  for (;;) {
    std::deque<std::packaged_task<nlohmann::json()>> tasks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      tasks.swap(tasks_);
      admit_locked();
      if (running_.empty() && tasks.empty()) {
        idle_ = true;
        if (stop_) return;
        cv_.wait_for(lock, std::chrono::milliseconds(200));
        continue;
      }
      idle_ = false;
      if (stop_ || cancel_all_)
        for (auto& s : running_) s->job->cancelled = true;
    }
    for (auto& task : tasks) task();
    if (!running_.empty()) step_all();
    publish_memory();
  }
}

nlohmann::json Scheduler::between_steps(std::function<nlohmann::json()> task) {
  std::packaged_task<nlohmann::json()> job(std::move(task));
  auto result = job.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) throw ApiError(503, "server_error", "", "shutting_down", "the server is shutting down");
    tasks_.push_back(std::move(job));
    cv_.notify_all();
  }
  return result.get();
}

bool Scheduler::make_room(uint64_t bytes) {
  if (options_.kv_budget_bytes == 0) return true;
  size_t freed = 0;
  while (reserved_bytes() + bytes > options_.kv_budget_bytes && cache_.evict_one(&freed)) ++metrics_.context_cache_evictions;
  return reserved_bytes() + bytes <= options_.kv_budget_bytes;
}

// A sequence whose prompt's last chunk ran: keeps its context for later requests if asked and the
// budget allows, then begins its generation.
void Scheduler::context_ready(Sequence& s) {
  if (s.cache_context) {
    // Keep the compressed context for later requests, if the budget has room for the copy.
    if (make_room(s.engine->accounting().kv_bytes_used)) {
      cache_.put(s.key, s.engine->snapshot_context());
      make_room(0);  // the estimate was the kept slots; the copy's real size decides
    }
  }
  s.engine->begin_generation(s.job->question_ids, generate_params(*s.job, &s.text));
  s.phase = Sequence::Phase::Generate;
  // From here on the engine holds all it will need: its share is what it holds.
  s.reserved = s.engine->accounting().kv_bytes_held;
}

bool Scheduler::generation_stepped(Sequence& s, bool more) {
  Job& job = *s.job;
  JobEvent e;
  const auto& tokens = s.engine->generated_tokens();
  if (tokens.size() > s.emitted) {
    const auto now = std::chrono::steady_clock::now();
    if (s.emitted == 0) metrics_.time_to_first_token.observe(std::chrono::duration<double>(now - job.submitted).count());
    else metrics_.inter_token.observe(std::chrono::duration<double>(now - s.last_token).count());
    s.last_token = now;
    if (job.request.top_logprobs >= 0)
      for (size_t i = s.emitted; i < tokens.size(); ++i)
        e.tokens.push_back(logprobs_of(model_.tokenizer(), s.engine->last_token_logits(), tokens[i], job.request.top_logprobs));
    s.emitted = tokens.size();
  }
  if (!s.text.empty() || !e.tokens.empty()) {
    e.text = std::move(s.text);
    s.text.clear();
    job.push(std::move(e));
  }
  if (more) return false;
  finish(s);
  return true;
}

void Scheduler::finish(Sequence& s) {
  const Completion c = s.engine->finish_generation();  // flushes held-back text into s.text
  JobEvent e;
  e.text = std::move(s.text);
  e.final = true;
  e.finish_reason = finish_reason(c.stop_reason);
  e.usage.prompt_tokens = static_cast<int64_t>(s.job->context_ids.size() + s.job->question_ids.size());
  e.usage.completion_tokens = static_cast<int64_t>(c.tokens.size());
  e.usage.cached_tokens = s.cached_tokens;
  metrics_.prompt_tokens += static_cast<uint64_t>(e.usage.prompt_tokens);
  metrics_.cached_prompt_tokens += static_cast<uint64_t>(s.cached_tokens);
  metrics_.generated_tokens += c.tokens.size();
  ++metrics_.requests_ok;
  s.job->push(std::move(e));
}

void Scheduler::publish_memory() {
  uint64_t held = cache_.bytes_held(), full = cache_.bytes_full();
  for (const auto& s : running_) {
    const Accounting a = s->engine->accounting();
    held += a.kv_bytes_held;
    full += a.kv_bytes_full;
  }
  metrics_.kv_bytes_held = held;
  metrics_.kv_bytes_full = full;
  metrics_.kv_bytes_cached = cache_.bytes_held();
  metrics_.cached_contexts = static_cast<int64_t>(cache_.size());
  metrics_.note_held(held);
  metrics_.running = static_cast<int64_t>(running_.size());
}

}  // namespace kvsqueeze::server
