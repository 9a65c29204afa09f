#include "request_parser.h"

#include <cctype>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "kvsqueeze/field_names.h"

namespace kvsqueeze::server {
namespace {

using nlohmann::json;

const char* type_name(const json& v) { return v.type_name(); }

ApiError wrong_type(const std::string& field, const char* want, const json& got) {
  return invalid(field, "`" + field + "` must be " + want + ", got " + type_name(got), "invalid_type");
}

// Field readers: each checks the JSON type and the range, naming the field in the error.
double number(const json& body, const std::string& field, double lo, double hi) {
  const json& v = body.at(field);
  if (!v.is_number()) throw wrong_type(field, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw invalid(field, "`" + field + "` must be between " + json(lo).dump() + " and " + json(hi).dump() + ", got " + v.dump());
  return x;
}

int64_t integer(const json& body, const std::string& field, int64_t lo, int64_t hi) {
  const json& v = body.at(field);
  if (!v.is_number_integer()) throw wrong_type(field, "an integer", v);
  if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(hi) : (v.get<int64_t>() < lo || v.get<int64_t>() > hi))
    throw invalid(field, "`" + field + "` must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + v.dump());
  return v.get<int64_t>();
}

bool boolean(const json& body, const std::string& field) {
  const json& v = body.at(field);
  if (!v.is_boolean()) throw wrong_type(field, "a boolean", v);
  return v.get<bool>();
}

std::string string(const json& body, const std::string& field) {
  const json& v = body.at(field);
  if (!v.is_string()) throw wrong_type(field, "a string", v);
  return v.get<std::string>();
}

// "stop": a string or up to 4 strings (OpenAI's limit).
std::vector<std::string> stop_strings(const json& v) {
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) throw wrong_type("stop", "a string or an array of strings", v);
  if (v.size() > 4) throw invalid("stop", "`stop` takes at most 4 strings, got " + std::to_string(v.size()));
  std::vector<std::string> out;
  for (const auto& s : v) {
    if (!s.is_string()) throw wrong_type("stop", "a string or an array of strings", s);
    out.push_back(s.get<std::string>());
  }
  return out;
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts.
std::string content_text(const json& v, const std::string& field) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) throw wrong_type(field, "a string or an array of text parts", v);
  std::string out;
  for (const auto& part : v) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
      throw invalid(field, "`" + field + "` parts must be {\"type\": \"text\", \"text\": STRING} (only text is supported)");
    out += part["text"].get<std::string>();
  }
  return out;
}

std::vector<ChatMessage> chat_messages(const json& v) {
  if (!v.is_array()) throw wrong_type("messages", "an array", v);
  if (v.empty()) throw invalid("messages", "`messages` is empty");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string field = "messages[" + std::to_string(i) + "]";
    const json& m = v[i];
    if (!m.is_object()) throw wrong_type(field, "an object", m);
    for (const auto& [key, value] : m.items())
      if (key != "role" && key != "content" && key != "name")
        throw invalid(field + "." + key, "`" + field + "." + key + "` is not supported", "unsupported_parameter");
    if (!m.contains("role") || !m["role"].is_string()) throw invalid(field + ".role", "`" + field + ".role` must be a string");
    const std::string role = m["role"].get<std::string>();
    const std::string r = role == "developer" ? "system" : role;  // OpenAI's newer name for system
    if (r != "system" && r != "user" && r != "assistant")
      throw invalid(field + ".role", "`" + field + ".role` must be system, user or assistant, got '" + role + "'");
    if (!m.contains("content") || m["content"].is_null()) throw invalid(field + ".content", "`" + field + ".content` is missing");
    out.push_back({r, content_text(m["content"], field + ".content")});
  }
  return out;
}

// kv_press_options: {"KEY": VALUE, ...} or ["KEY=VALUE", ...] (the CLI's --press-opt).
std::vector<std::string> press_options(const json& v, const std::string& field) {
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& o : v) {
      if (!o.is_string()) throw wrong_type(field, "an object or an array of KEY=VALUE strings", o);
      out.push_back(o.get<std::string>());
    }
    return out;
  }
  if (!v.is_object()) throw wrong_type(field, "an object or an array of KEY=VALUE strings", v);
  for (const auto& [key, value] : v.items()) {
    if (value.is_string()) out.push_back(key + "=" + value.get<std::string>());
    else if (value.is_number() || value.is_boolean()) out.push_back(key + "=" + value.dump());
    else throw wrong_type(field + "." + key, "a string, number or boolean", value);
  }
  return out;
}

// Rewrites `plan_field` names in an engine message to the request's field names.
std::string with_request_fields(const std::string& message) {
  return rename_fields(message, [](const std::string& field) { return "`" + request_field_of(field) + "`"; });
}

void apply_plan_fields(const json& body, CompletionRequest& r) {
  CompressionPlan& plan = r.plan;
  if (body.contains("kv_press")) {  // a press of the request's own: none of the server's settings
    plan.press = string(body, "kv_press");
    plan.ratio = 0.0;
    plan.options.clear();
  }
  if (body.contains("kv_ratio")) plan.ratio = number(body, "kv_ratio", -1e9, 1e9);  // the engine checks the range
  if (body.contains("kv_budget"))
    plan.options.push_back("budget=" + std::to_string(integer(body, "kv_budget", 1, std::numeric_limits<int32_t>::max())));
  if (body.contains("kv_press_options"))
    for (const auto& o : press_options(body["kv_press_options"], "kv_press_options")) plan.options.push_back(o);
  if (body.contains("kv_compress_chunks")) plan.policy.every_chunk = boolean(body, "kv_compress_chunks");
  if (body.contains("kv_decode_interval")) plan.policy.decode_interval = integer(body, "kv_decode_interval", -1, 1 << 30);
  if (body.contains("kv_decode_target")) plan.policy.decode_target = integer(body, "kv_decode_target", -1, 1 << 30);
  if (body.contains("kv_decode_ratio")) plan.policy.decode_ratio = number(body, "kv_decode_ratio", -1e9, 1e9);
  if (body.contains("kv_decode_press")) plan.decode_press = string(body, "kv_decode_press");
  if (body.contains("kv_decode_press_options"))
    plan.decode_options = press_options(body["kv_decode_press_options"], "kv_decode_press_options");
  PlanReport report;
  try {
    report = validate_plan(plan);
  } catch (const ParameterError& e) {
    throw invalid(request_field_of(e.parameter()), with_request_fields(e.what()));
  } catch (const Error& e) {
    throw invalid("kv_press", with_request_fields(e.what()));
  }
  if (report.query_aware)
    throw invalid("kv_press", "query-aware compression (finch, query_aware) is not served: each question would need its own "
                              "compressed copy of the context; use a question-agnostic press");
}

}  // namespace

std::string request_field_of(const std::string& plan_field) {
  static const std::map<std::string, std::string> fields = {
      {"press", "kv_press"}, {"ratio", "kv_ratio"}, {"options", "kv_press_options"}, {"query_aware", "kv_press"},
      {"every_chunk", "kv_compress_chunks"}, {"decode_interval", "kv_decode_interval"}, {"decode_target", "kv_decode_target"},
      {"decode_ratio", "kv_decode_ratio"}, {"decode_press", "kv_decode_press"}, {"decode_options", "kv_decode_press_options"},
      {"policy.decode_interval", "kv_decode_interval"}, {"policy.decode_target", "kv_decode_target"},
      {"policy.decode_ratio", "kv_decode_ratio"}, {"budget", "kv_budget"}};
  const auto it = fields.find(plan_field);
  return it != fields.end() ? it->second : plan_field;
}

CompletionRequest parse_request(const std::string& text, Endpoint endpoint, const RequestLimits& limits) {
  json body;
  try {
    body = json::parse(text);
  } catch (const json::exception& e) {
    throw ApiError(400, "invalid_request_error", "", "invalid_json", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, "invalid_request_error", "", "invalid_json", "the body must be a JSON object");
  const bool chat = endpoint == Endpoint::ChatCompletions;
  // Every field this server understands; anything else is refused rather than silently ignored.
  static const std::set<std::string> common = {
      "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stream", "stream_options", "n", "user",
      "ignore_eos",
      "presence_penalty", "frequency_penalty", "logprobs", "kv_press", "kv_ratio", "kv_budget", "kv_press_options",
      "kv_compress_chunks", "kv_decode_interval", "kv_decode_target", "kv_decode_ratio", "kv_decode_press",
      "kv_decode_press_options"};
  static const std::set<std::string> completions_only = {"prompt", "echo", "suffix"};
  static const std::set<std::string> chat_only = {"messages", "top_logprobs", "max_completion_tokens"};
  for (const auto& [key, value] : body.items()) {
    const bool known = common.count(key) || (chat ? chat_only.count(key) : completions_only.count(key));
    if (!known) throw invalid(key, "`" + key + "` is not supported by this server", "unsupported_parameter");
  }
  // OpenAI's clients send null for fields left unset: treat null as absent.
  for (auto it = body.begin(); it != body.end();) it = it->is_null() ? body.erase(it) : std::next(it);

  CompletionRequest r;
  r.endpoint = endpoint;
  r.plan = limits.default_plan;
  r.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 42};
  if (body.contains("model")) r.model = string(body, "model");
  if (chat) {
    if (!body.contains("messages")) throw invalid("messages", "`messages` is required");
    r.messages = chat_messages(body["messages"]);
    bool has_user = false;
    for (const auto& m : r.messages) has_user = has_user || m.role == "user";
    if (!has_user) throw invalid("messages", "`messages` needs a user message");
  } else {
    if (!body.contains("prompt")) throw invalid("prompt", "`prompt` is required");
    const json& p = body["prompt"];
    if (p.is_array() && p.size() == 1 && p[0].is_string()) r.prompt = p[0].get<std::string>();
    else if (p.is_string()) r.prompt = p.get<std::string>();
    else throw invalid("prompt", "`prompt` must be a string (or an array of one string; batches and token ids are not supported)", "invalid_type");
    if (r.prompt.empty()) throw invalid("prompt", "`prompt` is empty");
  }
  for (const char* f : {"max_tokens", "max_completion_tokens"})
    if (body.contains(f)) r.max_tokens = integer(body, f, 0, limits.max_tokens_cap);
  if (body.contains("temperature")) r.sampling.temperature = static_cast<float>(number(body, "temperature", 0.0, 2.0));
  if (body.contains("top_p")) r.sampling.top_p = static_cast<float>(number(body, "top_p", 1e-9, 1.0));
  if (body.contains("top_k")) r.sampling.top_k = static_cast<int32_t>(integer(body, "top_k", 0, 1 << 20));
  if (body.contains("min_p")) r.sampling.min_p = static_cast<float>(number(body, "min_p", 0.0, 1.0));
  if (body.contains("seed")) r.sampling.seed = static_cast<uint64_t>(integer(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  if (body.contains("stop")) r.stop = stop_strings(body["stop"]);
  if (body.contains("stream")) r.stream = boolean(body, "stream");
  if (body.contains("ignore_eos")) r.ignore_eos = boolean(body, "ignore_eos");
  if (body.contains("stream_options")) {
    const json& so = body["stream_options"];
    if (!so.is_object()) throw wrong_type("stream_options", "an object", so);
    for (const auto& [key, value] : so.items())
      if (key != "include_usage") throw invalid("stream_options." + key, "`stream_options." + key + "` is not supported", "unsupported_parameter");
    if (so.contains("include_usage")) r.include_usage = boolean(so, "include_usage");
  }
  if (body.contains("n") && integer(body, "n", 1, 1 << 20) != 1) throw invalid("n", "`n` must be 1 (one choice per request)", "unsupported_value");
  if (body.contains("user")) string(body, "user");
  for (const char* f : {"presence_penalty", "frequency_penalty"})
    if (body.contains(f) && number(body, f, -2.0, 2.0) != 0.0) throw invalid(f, std::string("`") + f + "` is not supported (only 0)", "unsupported_value");
  if (chat) {
    if (body.contains("logprobs") && boolean(body, "logprobs")) r.top_logprobs = 0;
    if (body.contains("top_logprobs")) {
      const int64_t k = integer(body, "top_logprobs", 0, 20);
      if (r.top_logprobs < 0) throw invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`");
      r.top_logprobs = static_cast<int>(k);
    }
  } else {
    if (body.contains("logprobs")) r.top_logprobs = static_cast<int>(integer(body, "logprobs", 0, 5));
    if (body.contains("echo") && boolean(body, "echo")) throw invalid("echo", "`echo` is not supported", "unsupported_value");
    if (body.contains("suffix")) throw invalid("suffix", "`suffix` is not supported", "unsupported_parameter");
  }
  apply_plan_fields(body, r);
  return r;
}

std::string parse_context_filename(const std::string& text) {
  json body;
  try {
    body = json::parse(text.empty() ? std::string("{}") : text);
  } catch (const json::exception& e) {
    throw ApiError(400, "invalid_request_error", "", "invalid_json", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, "invalid_request_error", "", "invalid_json", "the body must be a JSON object");
  for (const auto& [key, value] : body.items())
    if (key != "filename") throw invalid(key, "`" + key + "` is not supported here", "unsupported_parameter");
  if (!body.contains("filename")) throw invalid("filename", "`filename` is required");
  const std::string name = string(body, "filename");
  bool ok = !name.empty() && name.size() <= 128 && std::isalnum(static_cast<unsigned char>(name[0])) && name.find("..") == std::string::npos;
  for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  if (!ok) throw invalid("filename", "`filename` must be a plain file name (letters, digits, '.', '_', '-'; no '..'; at most 128 characters)");
  return name;
}

}  // namespace kvsqueeze::server
