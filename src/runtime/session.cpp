#include "kvsqueeze/session.h"

#include <algorithm>
#include <numeric>

#include "backend/backend.h"
#include "backend/kv_storage.h"
#include "kvsqueeze/error.h"
#include "runtime/forward_pass.h"

namespace kvsqueeze {

Session::Session(const Model& model, const SessionOptions& options) : model_(model), options_(options) {
  const ModelConfig& c = model.config();
  if (options_.ctx_size <= 0) options_.ctx_size = c.n_ctx_train;
  if (options_.chunk <= 0) throw ParameterError("chunk", "`chunk` must be positive, got " + std::to_string(options_.chunk));
  backend_ = backend::make_backend(options_.device, model);
  backend_->set_threads(options_.threads);
  KvCacheShape shape{c.n_layer, c.n_head_kv, c.head_dim_k, c.head_dim_v, options_.kv_type_k, options_.kv_type_v,
                     kv_keys_rotated(options_.kv_rotation, options_.kv_type_k),
                     kv_rows_rotated(options_.kv_rotation, options_.kv_type_v),
                     kv_keys_centered(options_.kv_centering, options_.kv_type_k), {}};
  for (int64_t l = 0; l < c.n_layer; ++l) shape.layer_window.push_back(c.layer_sliding[static_cast<size_t>(l)] ? c.sliding_window : 0);
  cache_ = std::make_unique<KvCache>(backend_->kv_storage(shape));  // sized by eval() and reserve() as tokens come
  forward_ = std::make_unique<ForwardPass>(model, *backend_);
}

Session::~Session() = default;

const std::vector<float>& Session::eval(const std::vector<int32_t>& tokens, std::vector<float>* all_logits) {
  begin_eval(tokens, all_logits);
  while (!eval_step()) {
  }
  return logits_;
}

void Session::begin_eval(const std::vector<int32_t>& tokens, std::vector<float>* all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) throw Error("nothing to evaluate: empty token list");
  if (next_pos_ + n > options_.ctx_size)
    throw ContextFullError("context of " + std::to_string(next_pos_ + n) + " tokens exceeds the context size " +
                std::to_string(options_.ctx_size) + " (raise `ctx_size`, at most the model's " +
                std::to_string(model_.config().n_ctx_train) + ")");
  const int32_t vocab_id_limit = static_cast<int32_t>(model_.config().n_vocab);
  for (int32_t id : tokens)
    if (id < 0 || id >= vocab_id_limit)
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab_id_limit) + ")");
  backend_->set_threads(options_.threads);
  cache_->reserve(n);

  const int64_t V = model_.config().n_vocab;
  logits_.resize(static_cast<size_t>(V));
  if (all_logits) all_logits->resize(static_cast<size_t>(n * V));
  pending_.tokens = tokens;
  pending_.all_logits = all_logits;
  pending_.start = 0;
  pending_.positions.resize(static_cast<size_t>(n));
  std::iota(pending_.positions.begin(), pending_.positions.end(), next_pos_);
  // Statistics of the context's last rows (a press's query window) are computed on the last
  // chunk only: the chunks before it leave it at least that many rows, even past --chunk.
  // Requests of more query rows than a chunk ("every row") are accumulated over chunks by the
  // press itself and must not turn the prefill into one huge chunk.
  const StatsRequest& req = forward_->stats_request();
  const int64_t query_rows = req.pre_rope_query_rows <= options_.chunk ? req.pre_rope_query_rows : 0;
  pending_.tail = std::min(n, std::max(req.window_queries, query_rows));
  pending_.active = true;
}

void Session::eval_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens) {
  if (sessions.size() != tokens.size()) throw Error("eval_batch: one token per session");
  for (int32_t id : tokens)
    if (id < 0) throw Error("token id " + std::to_string(id) + " is outside the vocabulary");
  step_batch(sessions, tokens);
}

std::vector<bool> Session::step_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens) {
  if (sessions.size() != tokens.size()) throw Error("step_batch: one entry per session");
  if (sessions.empty()) return {};
  Session& lead = *sessions.front();
  for (size_t i = 0; i < sessions.size(); ++i) {
    const Session& s = *sessions[i];
    if (&s.model_ != &lead.model_) throw Error("eval_batch: every session must run the same model");
    if (s.forward_->stats_request().any()) throw Error("eval_batch: a session asks for statistics; evaluate it alone");
    for (size_t j = 0; j < i; ++j)
      if (sessions[j] == &s) throw Error("eval_batch: a session appears twice");
    if (tokens[i] == kNextChunk) {
      if (!s.pending_.active) throw Error("step_batch: a session has no evaluation in progress for its next chunk");
      if (s.pending_.all_logits) throw Error("step_batch: an evaluation that keeps every token's logits runs alone");
      continue;
    }
    if (s.pending_.active) throw Error("eval_batch: a session is in the middle of an evaluation");
    if (s.next_pos_ + 1 > s.options_.ctx_size)
      throw ContextFullError("context of " + std::to_string(s.next_pos_ + 1) + " tokens exceeds the context size " +
                             std::to_string(s.options_.ctx_size));
    if (tokens[i] < 0 || tokens[i] >= s.model_.config().n_vocab)
      throw Error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " + std::to_string(s.model_.config().n_vocab) + ")");
  }
  if (!lead.batch_forward_) lead.batch_forward_ = std::make_unique<ForwardPass>(lead.model_, *lead.backend_);
  lead.backend_->set_threads(lead.options_.threads);
  const size_t V = static_cast<size_t>(lead.model_.config().n_vocab);
  const size_t count = sessions.size();
  std::vector<ForwardPass::Segment> segments(count);
  std::vector<int32_t> positions(count);
  std::vector<int64_t> lengths(count, 1);
  for (size_t i = 0; i < count; ++i) {
    Session& s = *sessions[i];
    if (tokens[i] == kNextChunk) {
      const auto [start, len] = s.next_chunk();
      const bool last = start + len == static_cast<int64_t>(s.pending_.tokens.size());
      const size_t at = static_cast<size_t>(start);
      lengths[i] = len;
      s.cache_->prepare_append(s.pending_.positions[at], len);
      segments[i] = {.tokens = s.pending_.tokens.data() + at, .pos = s.pending_.positions.data() + at, .n = len,
                     .cache = s.cache_.get(), .logits = last ? s.logits_.data() : nullptr};
      continue;
    }
    s.cache_->reserve(1);
    s.logits_.resize(V);
    positions[i] = s.next_pos_;
    s.cache_->prepare_append(s.next_pos_, 1);
    segments[i] = {.tokens = &tokens[i], .pos = &positions[i], .n = 1, .cache = s.cache_.get(), .logits = s.logits_.data()};
  }
  try {
    lead.batch_forward_->run_batch(segments);
  } catch (...) {
    for (size_t i = 0; i < count; ++i) {
      if (tokens[i] == kNextChunk) sessions[i]->cancel_eval();
      else sessions[i]->cache_->truncate_from_position(sessions[i]->next_pos_);
    }
    throw;
  }
  std::vector<bool> complete(count, true);
  for (size_t i = 0; i < count; ++i) {
    if (tokens[i] == kNextChunk) complete[i] = sessions[i]->chunk_done(lengths[i]);
    else ++sessions[i]->next_pos_;
  }
  return complete;
}

std::pair<int64_t, int64_t> Session::next_chunk() const {
  const int64_t n = static_cast<int64_t>(pending_.tokens.size());
  const int64_t start = pending_.start;
  int64_t len = std::min(options_.chunk, n - start);
  if (n - start - len > 0 && n - start - len < pending_.tail) len = n - start - pending_.tail;
  if (len <= 0) len = n - start;
  return {start, len};
}

bool Session::chunk_done(int64_t len) {
  pending_.start += len;
  const int64_t n = static_cast<int64_t>(pending_.tokens.size());
  if (pending_.start < n) return false;
  if (pending_.all_logits) {
    const int64_t V = model_.config().n_vocab;
    std::copy(pending_.all_logits->end() - V, pending_.all_logits->end(), logits_.begin());
  }
  next_pos_ += static_cast<int32_t>(n);
  pending_ = {};
  return true;
}

bool Session::eval_step() {
  if (!pending_.active) throw Error("no evaluation in progress: begin_eval first");
  const auto [start, len] = next_chunk();
  const int64_t n = static_cast<int64_t>(pending_.tokens.size());
  if (start > 0 && cancel_ && cancel_->load(std::memory_order_relaxed)) {
    cancel_eval();
    throw CancelledError("cancelled during prefill after " + std::to_string(start) + " of " + std::to_string(n) + " tokens");
  }
  const int64_t V = model_.config().n_vocab;
  const bool last_chunk = start + len == n;
  std::vector<float>* all_logits = pending_.all_logits;
  float* out = all_logits ? all_logits->data() + start * V : logits_.data();
  if (!all_logits && !last_chunk) out = nullptr;
  cache_->prepare_append(pending_.positions[static_cast<size_t>(start)], len);
  forward_->set_last_chunk(last_chunk);
  try {
    forward_->run(pending_.tokens.data() + start, pending_.positions.data() + start, len, *cache_, all_logits != nullptr, out);
  } catch (...) {
    cancel_eval();
    throw;
  }
  return chunk_done(len);
}

void Session::cancel_eval() {
  if (!pending_.active) return;
  cache_->truncate_from_position(next_pos_);  // the chunks of this evaluation are dropped
  pending_ = {};
}

void Session::set_stats_request(const StatsRequest& request) { forward_->set_stats_request(request); }
void Session::set_layer_hook(LayerHook hook) { forward_->set_layer_hook(std::move(hook)); }
const std::vector<LayerStats>& Session::layer_stats() const { return forward_->stats(); }

void Session::restore(KvCache cache, int32_t next_position, std::vector<float> last_logits) {
  const KvCacheShape &have = cache.shape(), &want = cache_->shape();
  if (have.n_layer != want.n_layer || have.n_head_kv != want.n_head_kv || have.head_dim_k != want.head_dim_k ||
      have.head_dim_v != want.head_dim_v || have.layer_window != want.layer_window)
    throw Error("cannot restore a KV cache of another shape into this session");
  if (have.k_rotated != want.k_rotated || have.v_rotated != want.v_rotated)
    throw Error("cannot restore a KV cache whose rows are rotated otherwise than this session's (`kv_rotation`)");
  if (have.k_centered != want.k_centered)
    throw Error("cannot restore a KV cache whose keys are centred otherwise than this session's (`kv_centering`)");
  if (have.k_type != want.k_type || have.v_type != want.v_type)
    throw Error(std::string("cannot restore a KV cache of ") + kv_type_name(have.k_type) + " keys and " +
                kv_type_name(have.v_type) + " values into a session using " + kv_type_name(want.k_type) + " and " +
                kv_type_name(want.v_type));
  if (next_position < 0 || next_position > options_.ctx_size)
    throw ContextFullError("cannot restore a cache of " + std::to_string(next_position) + " positions: the context size is " +
                std::to_string(options_.ctx_size) + " (raise `ctx_size`)");
  if (!last_logits.empty() && static_cast<int64_t>(last_logits.size()) != model_.config().n_vocab)
    throw Error("cannot restore " + std::to_string(last_logits.size()) + " logits for a vocabulary of " +
                std::to_string(model_.config().n_vocab));
  for (int64_t l = 0; l < have.n_layer; ++l)
    for (int64_t h = 0; h < have.n_head_kv; ++h) {
      const auto pos = cache.positions(l, h);
      if (!pos.empty() && pos.back() >= next_position)
        throw Error("cannot restore a cache holding position " + std::to_string(pos.back()) + " at next position " +
                    std::to_string(next_position));
    }
  if (cache.storage().device() != cache_->storage().device()) cache = copy_cache(cache, backend_->kv_storage(cache.shape()));
  *cache_ = std::move(cache);
  next_pos_ = next_position;
  renumbered_away_ = 0;
  logits_ = std::move(last_logits);
}

void Session::set_next_position(int32_t pos) {
  if (pos < 0 || pos > options_.ctx_size)
    throw Error("cannot continue at position " + std::to_string(pos) + ": the context size is " + std::to_string(options_.ctx_size));
  const auto& shape = cache_->shape();
  for (int64_t l = 0; l < shape.n_layer; ++l)
    for (int64_t h = 0; h < shape.n_head_kv; ++h) {
      const auto p = cache_->positions(l, h);
      if (!p.empty() && p.back() >= pos)
        throw Error("cannot continue at position " + std::to_string(pos) + ": the cache holds position " + std::to_string(p.back()));
    }
  renumbered_away_ = std::max<int64_t>(0, renumbered_away_ + next_pos_ - pos);
  next_pos_ = pos;
}

void Session::set_last_logits(std::vector<float> logits) {
  if (static_cast<int64_t>(logits.size()) != model_.config().n_vocab)
    throw Error("cannot set " + std::to_string(logits.size()) + " logits for a vocabulary of " +
                std::to_string(model_.config().n_vocab));
  logits_ = std::move(logits);
}

void Session::reserve(int64_t n_more) { cache_->reserve(std::min<int64_t>(n_more, options_.ctx_size - next_pos_)); }

void Session::rollback_to(int32_t pos) {
  if (pos < 0 || pos > next_pos_) throw Error("cannot roll back to position " + std::to_string(pos));
  if (!cache_->can_roll_back_to(pos))
    throw Error("cannot roll back to position " + std::to_string(pos) +
                ": sliding-window layers no longer hold its window (protect it first with KvCache::protect_query_position)");
  cache_->truncate_from_position(pos);
  if (pos != next_pos_) logits_.clear();  // they belonged to a token now forgotten
  next_pos_ = pos;
  if (pos == 0) renumbered_away_ = 0;  // everything forgotten, renumbered tokens included
}

size_t Session::kv_bytes_full() const {
  return static_cast<size_t>(next_pos_ + renumbered_away_) * static_cast<size_t>(model_.config().kv_bytes_per_token_f16());
}

}  // namespace kvsqueeze
