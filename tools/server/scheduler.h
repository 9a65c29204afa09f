#pragma once
// Continuous batching over one Engine per sequence: requests wait in a bounded queue, are admitted
// while fewer than `parallel` run and the KV budget has room, and every scheduler step advances
// every running sequence by one prefill chunk or one token (step_all, step_batch.cpp: the tokens
// of all generating sequences go through one batched forward pass). Running streams never wait for a long prompt more
// than one chunk. The HTTP layer only submits jobs and reads their events.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "context_cache.h"
#include "heap_policy.h"
#include "job.h"
#include "kvsqueeze/engine.h"
#include "metrics.h"
#include <nlohmann/json.hpp>

namespace kvsqueeze::server {

struct SchedulerOptions {
  int parallel = 4;             // sequences stepped together
  size_t queue_max = 64;        // waiting requests beyond which a request gets 503
  uint64_t kv_budget_bytes = 0; // running sequences + cached contexts (0: no limit)
  int64_t max_prompt_tokens = 0;  // 0: the context size
  SessionOptions session;       // per sequence (ctx_size, chunk, threads)
  size_t max_cached_contexts = 64;  // 0: no context reuse
  std::string prompt_cache_dir;     // where cached contexts are saved and restored ("": nowhere)
};

class Scheduler {
 public:
  Scheduler(const Model& model, const SchedulerOptions& options, Metrics& metrics);
  ~Scheduler();  // cancels what runs and joins the thread

  // Tokenizes and checks the request, then queues it. Throws ApiError: 400 for a prompt that is
  // too long (for the context size or the KV budget), 503 when the queue is full or draining.
  std::shared_ptr<Job> submit(CompletionRequest request);
  // Stops accepting, lets running and queued requests finish until `deadline`, then cancels the
  // rest and returns once the scheduler is idle.
  void drain(std::chrono::steady_clock::time_point deadline);
  bool draining() const { return draining_; }
  const SchedulerOptions& options() const { return options_; }
  // KV bytes a token costs at most in an uncompressed cache (all layers, heads, K, V, position).
  uint64_t bytes_per_token() const { return bytes_per_token_; }

  // The cached compressed contexts, as llama-server's slot save/restore (context_files.cpp): each
  // runs on the scheduler thread between two steps. Files live in prompt_cache_dir, named by the
  // client with a plain file name that cannot leave it. Throw ApiError (404 unknown id, 400 bad
  // name or file, 501 without a folder).
  nlohmann::json list_contexts();
  nlohmann::json save_context(const std::string& id, const std::string& filename);
  nlohmann::json restore_context(const std::string& filename);
  nlohmann::json erase_context(const std::string& id);

 private:
  struct Sequence;
  void loop();
  void admit_locked();
  void step_all();  // step_batch.cpp
  void context_ready(Sequence& s);  // after its prompt's last chunk: keeps the context, begins generating
  // Sends what the sequence's generation step produced; true once it has ended (final event sent).
  bool generation_stepped(Sequence& s, bool more);
  void finish(Sequence& s);
  void publish_memory();
  // Runs `task` on the scheduler thread before its next step and returns what it returned (or
  // throws what it threw).
  nlohmann::json between_steps(std::function<nlohmann::json()> task);
  // Makes room in the budget for `bytes` more by dropping cached contexts; false if it cannot.
  bool make_room(uint64_t bytes);
  uint64_t reserved_bytes() const;

  const Model& model_;
  SchedulerOptions options_;
  Metrics& metrics_;
  uint64_t bytes_per_token_ = 0;
  ContextCache cache_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::deque<std::packaged_task<nlohmann::json()>> tasks_;  // between_steps
  bool stop_ = false;
  bool cancel_all_ = false;  // drain past its deadline
  std::atomic<bool> draining_{false};
  std::atomic<bool> idle_{true};
  std::vector<std::unique_ptr<Sequence>> running_;  // scheduler thread only
  HeapTrimmer trimmer_;                             // scheduler thread only
  std::thread thread_;
};

}  // namespace kvsqueeze::server
