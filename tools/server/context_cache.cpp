#include "context_cache.h"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace kvsqueeze::server {

std::string plan_key(const CompressionPlan& p) {
  return nlohmann::json{{"press", p.press},
                        {"ratio", p.ratio},
                        {"options", p.options},
                        {"query_aware", p.query_aware},
                        {"every_chunk", p.policy.every_chunk},
                        {"decode", {p.policy.decode_interval, p.policy.decode_target, p.policy.decode_ratio, p.policy.decode_triggers}},
                        {"decode_press", p.decode_press},
                        {"decode_options", p.decode_options}}
      .dump();
}

CompressionPlan plan_from_key(const std::string& key) {
  try {
    const auto j = nlohmann::json::parse(key);
    CompressionPlan p;
    p.press = j.at("press").get<std::string>();
    p.ratio = j.at("ratio").get<double>();
    p.options = j.at("options").get<std::vector<std::string>>();
    p.query_aware = j.at("query_aware").get<bool>();
    p.policy.every_chunk = j.at("every_chunk").get<bool>();
    const auto& d = j.at("decode");
    p.policy.decode_interval = d.at(0).get<int64_t>();
    p.policy.decode_target = d.at(1).get<int64_t>();
    p.policy.decode_ratio = d.at(2).get<double>();
    p.policy.decode_triggers = d.at(3).get<bool>();
    p.decode_press = j.at("decode_press").get<std::string>();
    p.decode_options = j.at("decode_options").get<std::vector<std::string>>();
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("not a compression plan written by this server: ") + e.what());
  }
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

std::string ContextCache::put(const std::string& key, std::shared_ptr<const ContextSnapshot> snapshot) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->key == key && it->snapshot->tokens() == snapshot->tokens()) {  // the same context again
      bytes_ -= it->snapshot->bytes_held();
      entries_.erase(it);
      break;
    }
  // FNV-1a over the key and the tokens: the same context under the same plan keeps its id.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* data, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(data)[i]) * 1099511628211ull;
  };
  mix(key.data(), key.size());
  mix(snapshot->tokens().data(), snapshot->tokens().size() * sizeof(int32_t));
  char id[17];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(h));
  bytes_ += snapshot->bytes_held();
  entries_.push_front({id, key, std::move(snapshot)});
  while (entries_.size() > max_entries_) evict_one();
  return id;
}

const ContextCache::Entry* ContextCache::find(const std::string& id) const {
  for (const auto& e : entries_)
    if (e.id == id) return &e;
  return nullptr;
}

bool ContextCache::erase(const std::string& id) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->id == id) {
      bytes_ -= it->snapshot->bytes_held();
      entries_.erase(it);
      return true;
    }
  return false;
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
