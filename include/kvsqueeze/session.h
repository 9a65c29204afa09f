#pragma once
// A session: one sequence being processed by a model, with its KV cache.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvsqueeze/device.h"
#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/layer_stats.h"
#include "kvsqueeze/model.h"

namespace kvsqueeze {

struct SessionOptions {
  int64_t ctx_size = 0;  // most positions this session may use; 0: the model's trained context
  int64_t chunk = 512;   // prefill is processed in chunks of this many tokens
  int threads = 0;       // 0: one per core
  KvType kv_type_k = KvType::F16;  // the element type of cached keys (llama.cpp's --cache-type-k)
  KvType kv_type_v = KvType::F16;  // ... and of cached values
  // Store keys and values Walsh-Hadamard rotated: Auto rotates quantized rows (q8_0, q4_0),
  // On every type. On Qwen2.5 it cuts q8_0's KL divergence ~4x (docs/QUANTIZATION.md).
  KvTransform kv_rotation = KvTransform::Auto;
  // Store keys centred: each run's per-channel mean of its first keys is taken off before they are
  // stored and added back when they are read. Exact for attention (softmax ignores the constant
  // q.offset it adds to every score of a query); Auto centres quantized keys, whose blocks would
  // otherwise spend their range on the large constant channels of models such as Qwen2.5.
  KvTransform kv_centering = KvTransform::Auto;
  Device device = default_device();  // where the forward pass runs: cuda when built and a GPU is present
};

class ForwardPass;
namespace backend {
class Backend;
}

class Session {
 public:
  Session(const Model& model, const SessionOptions& options);
  ~Session();

  // Runs tokens at the next positions, appending their keys and values to the cache, and
  // returns the logits of the last one. With all_logits, every token's logits are written
  // there (tokens x n_vocab). Throws kvsqueeze::Error if the context would exceed ctx_size.
  const std::vector<float>& eval(const std::vector<int32_t>& tokens, std::vector<float>* all_logits = nullptr);

  // The same evaluation one chunk at a time (a server interleaves sequences between chunks):
  // begin_eval checks and reserves as eval() does; each eval_step() runs the next chunk and returns
  // true after the last one (then the logits are ready and next_position has moved on), so that
  // begin_eval + eval_step until true == eval(). `tokens` is copied; `all_logits` must outlive it.
  // cancel_eval() drops the chunks evaluated so far. Other calls wait until the evaluation ends.
  void begin_eval(const std::vector<int32_t>& tokens, std::vector<float>* all_logits = nullptr);
  bool eval_step();
  void cancel_eval();
  bool evaluating() const { return pending_.active; }

  // One token for each of several sessions of the same model, in one forward pass that reads the
  // weights once for all of them (a server's decode step): as sessions[i]->eval({tokens[i]}) for
  // every i, without statistics and without calling layer hooks (batch only sessions whose press
  // does not act on this token). Every check is done before any work; on failure no cache changes.
  static void eval_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens);
  // eval_batch where a session may instead give the next chunk of its pending evaluation
  // (tokens[i] == kNextChunk; begin_eval without all_logits, no statistics requested): the chunks
  // and the tokens go through one pass, so a server batches prompt chunks with decode tokens.
  // Each chunk is the one eval_step() would run (the cancel flag is not consulted). Returns, per
  // session, whether its evaluation is complete (always for a token). Checks come before any
  // work; if the pass fails, the tokens leave no trace and the chunks' evaluations are cancelled.
  static constexpr int32_t kNextChunk = -1;
  static std::vector<bool> step_batch(const std::vector<Session*>& sessions, const std::vector<int32_t>& tokens);

  int32_t next_position() const { return next_pos_; }
  // A flag checked between prefill chunks: when set, eval() drops the chunks it added and throws
  // CancelledError. Null (the default): never cancelled.
  void set_cancel_flag(const std::atomic<bool>* flag) { cancel_ = flag; }
  // Replaces the cache, the next position and the last logits at once (loading a saved cache).
  // The cache must have this session's shape and KV type and hold only positions below
  // next_position, which must fit the context size; otherwise throws and changes nothing.
  void restore(KvCache cache, int32_t next_position, std::vector<float> last_logits);
  // Later tokens take positions from `pos` on. Every cached position must be below it and it may
  // not pass the context size. Key re-rotation renumbers the kept context to 0..n-1 and then
  // continues at n (the last logits stay those of the context's last token).
  void set_next_position(int32_t pos);
  // Sets the logits the next sampled token comes from (those of the token at next_position - 1).
  void set_last_logits(std::vector<float> logits);
  // Allocates cache room for n more tokens now, so that a known prompt plus generation never
  // reallocates (capped at the context size).
  void reserve(int64_t n_more);
  // Forgets every token at or after pos (cache slots included), e.g. after answering a question.
  void rollback_to(int32_t pos);

  // What the forward pass should compute for compression, and a hook called after each layer's
  // attention (where a press compresses that layer). Both apply to later eval() calls.
  void set_stats_request(const StatsRequest& request);
  void set_layer_hook(LayerHook hook);
  // Per-layer statistics of the last chunk evaluated (empty unless requested).
  const std::vector<LayerStats>& layer_stats() const;

  const Model& model() const { return model_; }
  const SessionOptions& options() const { return options_; }
  KvCache& cache() { return *cache_; }
  const KvCache& cache() const { return *cache_; }
  const std::vector<float>& last_logits() const { return logits_; }
  // What an uncompressed fp16 cache of the positions seen so far would hold.
  size_t kv_bytes_full() const;

 private:
  const Model& model_;
  SessionOptions options_;
  std::unique_ptr<backend::Backend> backend_;  // before forward_, which uses it
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<ForwardPass> forward_;
  std::unique_ptr<ForwardPass> batch_forward_;  // eval_batch's (no statistics, no hook), made on first use
  int32_t next_pos_ = 0;
  // Tokens evaluated before a renumbering (set_next_position below next_pos_, key re-rotation):
  // they still count in kv_bytes_full, the uncompressed cache's size.
  int64_t renumbered_away_ = 0;
  std::vector<float> logits_;
  const std::atomic<bool>* cancel_ = nullptr;
  // The [start, start + len) of pending_.tokens that the next eval_step() runs.
  std::pair<int64_t, int64_t> next_chunk() const;
  // Moves the pending evaluation past a chunk just run; true after its last one.
  bool chunk_done(int64_t len);
  struct PendingEval {  // an evaluation between begin_eval and its last eval_step
    bool active = false;
    std::vector<int32_t> tokens;
    std::vector<int32_t> positions;
    std::vector<float>* all_logits = nullptr;
    int64_t start = 0, tail = 0;
  };
  PendingEval pending_;
};

}  // namespace kvsqueeze
