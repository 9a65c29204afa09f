#pragma once
// Compressed contexts kept in RAM for reuse across requests (many questions on one document pay
// only for their question), keyed by the plan that compressed them and their tokens, dropped least
// recently used first when the KV budget needs the room. Used from the scheduler thread only.
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "kvsqueeze/engine.h"

namespace kvsqueeze::server {

// A string that is equal for plans that compress a context the same way: the plan as JSON, which
// plan_from_key turns back into the plan (a saved context carries it).
std::string plan_key(const CompressionPlan& plan);
CompressionPlan plan_from_key(const std::string& key);  // throws Error for text plan_key did not write

class ContextCache {
 public:
  explicit ContextCache(size_t max_entries) : max_entries_(max_entries) {}
  // The longest cached context under `key` whose tokens begin `tokens` (all of them at most).
  std::shared_ptr<const ContextSnapshot> longest_prefix(const std::string& key, const std::vector<int32_t>& tokens);
  // Keeps a context; returns its id (a hash of key and tokens, 16 hex digits).
  std::string put(const std::string& key, std::shared_ptr<const ContextSnapshot> snapshot);
  struct Entry {
    std::string id;
    std::string key;
    std::shared_ptr<const ContextSnapshot> snapshot;
  };
  // The entry of `id` (null when there is none) without touching the recency order; erase drops it.
  const Entry* find(const std::string& id) const;
  bool erase(const std::string& id);
  const std::list<Entry>& entries() const { return entries_; }
  // Drops the least recently used context; false when there is none. Returns its bytes in *freed.
  bool evict_one(size_t* freed = nullptr);
  size_t bytes_held() const { return bytes_; }
  size_t bytes_full() const;
  size_t size() const { return entries_.size(); }

 private:
  std::list<Entry> entries_;  // most recently used first
  size_t max_entries_;
  size_t bytes_ = 0;
};

}  // namespace kvsqueeze::server
