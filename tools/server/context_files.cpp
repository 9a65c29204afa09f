// The cached compressed contexts as files, like llama-server's slot save/restore: a context kept in
// RAM is written to the prompt-cache folder in the prompt-cache format (its compression plan in the
// file's metadata), and a file written so is read back into the context cache, where requests under
// the same plan reuse it. Runs on the scheduler thread (Scheduler::between_steps).
#include <chrono>
#include <filesystem>
#include <system_error>

#include "kvsqueeze/cache_file.h"
#include "scheduler.h"

namespace kvsqueeze::server {
namespace {

namespace fs = std::filesystem;

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The file of a name parse_context_filename accepted (a plain name: it stays in the folder), never
// a link.
fs::path file_in(const std::string& dir, const std::string& filename) {
  if (dir.empty())
    throw ApiError(501, "not_supported_error", "", "not_supported", "saving and restoring contexts needs the server started with --prompt-cache-dir");
  const fs::path path = fs::path(dir) / filename;
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(path, ec))) throw invalid("filename", "`" + filename + "` is a link; contexts are plain files");
  return path;
}

nlohmann::json describe(const ContextCache::Entry& e) {
  const CompressionPlan plan = plan_from_key(e.key);
  return {{"id", e.id},
          {"tokens", e.snapshot->tokens().size()},
          {"bytes_held", e.snapshot->bytes_held()},
          {"bytes_full", e.snapshot->bytes_full()},
          {"kv_press", plan.press},
          {"kv_ratio", plan.ratio},
          {"kv_press_options", plan.options}};
}

const char* kPlanField = "kvsqueeze_server_plan";  // the plan_key in a saved file's metadata

}  // namespace

nlohmann::json Scheduler::list_contexts() {
  return between_steps([this] {
    nlohmann::json data = nlohmann::json::array();
    for (const auto& e : cache_.entries()) data.push_back(describe(e));
    return nlohmann::json{{"object", "list"}, {"data", data}};
  });
}

nlohmann::json Scheduler::save_context(const std::string& id, const std::string& filename) {
  const fs::path path = file_in(options_.prompt_cache_dir, filename);
  return between_steps([this, id, filename, path] {
    const ContextCache::Entry* e = cache_.find(id);
    if (!e) throw ApiError(404, "invalid_request_error", "id", "not_found", "no cached context " + id);
    const auto t0 = std::chrono::steady_clock::now();
    Engine engine(model_, options_.session);
    engine.set_plan(plan_from_key(e->key));
    engine.restore_context(*e->snapshot);
    // Written aside and renamed: a file of that name is either the old one or the new one, whole.
    const fs::path part = path.string() + ".part";
    try {
      engine.save_prompt_cache(part.string(), nlohmann::json{{kPlanField, e->key}}.dump());
      fs::rename(part, path);
    } catch (const std::exception& ex) {
      std::error_code ec;
      fs::remove(part, ec);
      throw ApiError(500, "server_error", "filename", "", std::string("cannot save the context: ") + ex.what());
    }
    return nlohmann::json{{"id", id},
                          {"filename", filename},
                          {"n_saved", e->snapshot->tokens().size()},
                          {"n_written", fs::file_size(path)},
                          {"timings", {{"save_ms", ms_since(t0)}}}};
  });
}

nlohmann::json Scheduler::restore_context(const std::string& filename) {
  const fs::path path = file_in(options_.prompt_cache_dir, filename);
  return between_steps([this, filename, path] {
    if (options_.max_cached_contexts == 0)
      throw ApiError(501, "not_supported_error", "", "not_supported", "context reuse is off (--cached-contexts 0)");
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) throw ApiError(404, "invalid_request_error", "filename", "not_found", "no saved context " + filename);
    const auto t0 = std::chrono::steady_clock::now();
    std::string key;
    Engine engine(model_, options_.session);
    try {
      const nlohmann::json meta = nlohmann::json::parse(read_cache_info(path.string()).meta_json);
      key = meta.at(kPlanField).get<std::string>();
      engine.set_plan(plan_from_key(key));
      engine.load_prompt_cache(path.string());
    } catch (const std::exception& ex) {
      throw invalid("filename", "`" + filename + "` is not a context this server saved for this model: " + ex.what());
    }
    auto snapshot = engine.snapshot_context();
    if (!make_room(snapshot->bytes_held()))
      throw ApiError(400, "invalid_request_error", "filename", "kv_budget_exceeded",
                     "the context holds " + std::to_string(snapshot->bytes_held()) + " bytes, more than the KV budget leaves now");
    const size_t tokens = snapshot->tokens().size();
    const std::string id = cache_.put(key, std::move(snapshot));
    return nlohmann::json{{"id", id},
                          {"filename", filename},
                          {"n_restored", tokens},
                          {"n_read", fs::file_size(path)},
                          {"timings", {{"restore_ms", ms_since(t0)}}}};
  });
}

nlohmann::json Scheduler::erase_context(const std::string& id) {
  return between_steps([this, id] {
    const ContextCache::Entry* e = cache_.find(id);
    if (!e) throw ApiError(404, "invalid_request_error", "id", "not_found", "no cached context " + id);
    const size_t tokens = e->snapshot->tokens().size();
    cache_.erase(id);
    return nlohmann::json{{"id", id}, {"n_erased", tokens}};
  });
}

}  // namespace kvsqueeze::server
