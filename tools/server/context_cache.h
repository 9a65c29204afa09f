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

// A string that is equal for plans that compress a context the same way.
std::string plan_key(const CompressionPlan& plan);

class ContextCache {
 public:
  explicit ContextCache(size_t max_entries) : max_entries_(max_entries) {}
  // The longest cached context under `key` whose tokens begin `tokens` (all of them at most).
  std::shared_ptr<const ContextSnapshot> longest_prefix(const std::string& key, const std::vector<int32_t>& tokens);
  void put(const std::string& key, std::shared_ptr<const ContextSnapshot> snapshot);
  // Drops the least recently used context; false when there is none. Returns its bytes in *freed.
  bool evict_one(size_t* freed = nullptr);
  size_t bytes_held() const { return bytes_; }
  size_t bytes_full() const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const ContextSnapshot> snapshot;
  };
  std::list<Entry> entries_;  // most recently used first
  size_t max_entries_;
  size_t bytes_ = 0;
};

}  // namespace kvsqueeze::server
