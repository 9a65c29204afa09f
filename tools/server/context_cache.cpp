#include "context_cache.h"

#include <nlohmann/json.hpp>

namespace kvsqueeze::server {

std::string plan_key(const CompressionPlan& p) {
  return nlohmann::json{{"press", p.press},
                        {"ratio", p.ratio},
                        {"options", p.options},
                        {"every_chunk", p.policy.every_chunk},
                        {"decode", {p.policy.decode_interval, p.policy.decode_target, p.policy.decode_ratio, p.policy.decode_triggers}},
                        {"decode_press", p.decode_press},
                        {"decode_options", p.decode_options}}
      .dump();
}

std::shared_ptr<const ContextSnapshot> ContextCache::longest_prefix(const std::string& key, const std::vector<int32_t>& tokens) {
  auto best = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const auto& t = it->snapshot->tokens();
    if (it->key != key || t.size() > tokens.size() || !std::equal(t.begin(), t.end(), tokens.begin())) continue;
    if (best == entries_.end() || t.size() > best->snapshot->tokens().size()) best = it;
  }
  if (best == entries_.end()) return nullptr;
  entries_.splice(entries_.begin(), entries_, best);  // most recently used
  return entries_.front().snapshot;
}

void ContextCache::put(const std::string& key, std::shared_ptr<const ContextSnapshot> snapshot) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->key == key && it->snapshot->tokens() == snapshot->tokens()) {  // the same context again
      bytes_ -= it->snapshot->bytes_held();
      entries_.erase(it);
      break;
    }
  bytes_ += snapshot->bytes_held();
  entries_.push_front({key, std::move(snapshot)});
  while (entries_.size() > max_entries_) evict_one();
}

bool ContextCache::evict_one(size_t* freed) {
  if (entries_.empty()) return false;
  const size_t b = entries_.back().snapshot->bytes_held();
  bytes_ -= b;
  entries_.pop_back();
  if (freed) *freed = b;
  return true;
}

size_t ContextCache::bytes_full() const {
  size_t full = 0;
  for (const auto& e : entries_) full += e.snapshot->bytes_full();
  return full;
}

}  // namespace kvsqueeze::server
