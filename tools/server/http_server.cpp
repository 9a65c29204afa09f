#include "http_server.h"

#include <httplib.h>

#include <ctime>

#include "connection_probe.h"
#include "openai_format.h"
#include "request_parser.h"

namespace kvsqueeze::server {
namespace {

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  if (e.status() == 503) res.set_header("Retry-After", "1");
  if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
  res.set_content(e.body(), "application/json");
}

// Compares without an early exit, so the time taken says nothing of where a guess went wrong.
bool same_key(const std::string& given, const std::string& key) {
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ key[i % (key.empty() ? 1 : key.size())]);
  return diff == 0 && !key.empty();
}

std::string sse(const nlohmann::json& j) { return "data: " + dump(j) + "\n\n"; }

}  // namespace

HttpServer::HttpServer(const HttpOptions& options, Metrics& metrics)
    : options_(options), metrics_(metrics), http_(std::make_unique<httplib::Server>()) {
  const int threads = options_.threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(options_.max_body_bytes);
  // A connection idle for 5 s is closed (httplib's default): shutting down waits for every worker,
  // and a client that keeps an idle connection open (the openai client does) would hold SIGTERM
  // up for the whole read timeout.
  http_->set_read_timeout(5, 0);
  http_->set_write_timeout(30, 0);
  routes();
}

HttpServer::~HttpServer() = default;

void HttpServer::set_ready(Scheduler* scheduler, const RequestLimits& limits) {
  limits_ = limits;
  scheduler_ = scheduler;
}

bool HttpServer::bind() {
  port_ = options_.port == 0 ? http_->bind_to_any_port(options_.host) : (http_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  return port_ > 0;
}

void HttpServer::listen() { http_->listen_after_bind(); }
void HttpServer::stop() { http_->stop(); }

void HttpServer::routes() {
  // Every route but /health needs the key when one is set.
  http_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    const bool ok = auth.size() > prefix.size() && auth.compare(0, prefix.size(), prefix) == 0 &&
                    same_key(auth.substr(prefix.size()), options_.api_key);
    if (ok) return httplib::Server::HandlerResponse::Unhandled;
    ++metrics_.requests_client_error;
    send_error(res, ApiError(401, "invalid_request_error", "", "invalid_api_key", "a valid API key is needed: Authorization: Bearer KEY"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors httplib answers by itself (unknown route, body too large) get OpenAI's JSON shape too.
  http_->set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ++metrics_.requests_client_error;
    if (res.status == 404) send_error(res, ApiError(404, "invalid_request_error", "", "not_found", "no route " + req.method + " " + req.path));
    else if (res.status == 413)
      send_error(res, ApiError(413, "invalid_request_error", "", "request_too_large",
                               "the body is larger than the server's limit of " + std::to_string(options_.max_body_bytes) + " bytes"));
    else send_error(res, ApiError(res.status, "invalid_request_error", "", "", "the request could not be served (HTTP " + std::to_string(res.status) + ")"));
  });
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "server_error", "", "", what));
  });

  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    Scheduler* s = scheduler_.load();
    if (!s || s->draining()) {
      res.status = 503;
      res.set_content(std::string("{\"status\":\"") + (s ? "shutting down" : "loading model") + "\"}", "application/json");
      return;
    }
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });
  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const nlohmann::json m = {{"id", options_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "kvsqueeze"}};
    res.set_content(dump({{"object", "list"}, {"data", nlohmann::json::array({m})}}), "application/json");
  });

  auto completion = [this](const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
    Scheduler* scheduler = scheduler_.load();
    std::shared_ptr<Job> job;
    try {
      if (!scheduler) throw ApiError(503, "server_error", "", "loading", "the model is still loading");
      job = scheduler->submit(parse_request(req.body, endpoint, limits_));
    } catch (const ApiError& e) {
      (e.status() == 503 ? metrics_.requests_server_busy : metrics_.requests_client_error)++;
      send_error(res, e);
      return;
    }
    const bool chat = endpoint == Endpoint::ChatCompletions;
    const ResponseIds ids{(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++), static_cast<int64_t>(std::time(nullptr)),
                          job->request.model.empty() ? options_.model_name : job->request.model};
    if (!job->request.stream) {
      std::string text;
      std::vector<TokenLogprob> tokens;
      JobEvent e;
      // Every 0.2 s, events or not (a generating sequence sends one per token), the connection is
      // looked at: a client gone frees the sequence at the next step; its final event follows.
      ConnectionProbe probe(req.remote_addr, req.remote_port, req.local_port);
      auto next_probe = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
      for (;;) {
        if (std::chrono::steady_clock::now() >= next_probe) {
          if (!job->cancelled && probe.client_gone()) job->cancelled = true;
          next_probe = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
        }
        if (!job->pop(e, std::chrono::milliseconds(200))) continue;
        text += e.text;
        tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
        if (e.final) break;
      }
      if (e.error) return send_error(res, *e.error);
      res.set_content(dump(full_response(*job, ids, text, tokens, e)), "application/json");
      return;
    }
    // Streamed: one SSE event per step that completed text, then [DONE]. A client that goes away
    // makes a write fail: its job is cancelled and the scheduler frees the sequence at its next step.
    auto first = std::make_shared<bool>(true);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, ids, first](size_t, httplib::DataSink& sink) {
          JobEvent e;
          if (!job->pop(e, std::chrono::milliseconds(500))) {
            const std::string ping = ": keep-alive\n\n";  // finds a client that went away during a long prefill
            if (!sink.write(ping.data(), ping.size())) {
              job->cancelled = true;
              return false;
            }
            return true;
          }
          std::string out;
          if (e.error) {
            out = "data: " + e.error->body() + "\n\n";
          } else if (!e.text.empty() || !e.tokens.empty() || e.final) {
            out = sse(stream_chunk(*job, ids, e.text, e.tokens, e.final ? e.finish_reason : "", *first));
            *first = false;
            if (e.final && job->request.include_usage) out += sse(usage_chunk(*job, ids, e.usage));
          }
          if (e.final) out += "data: [DONE]\n\n";
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            job->cancelled = true;
            return false;
          }
          if (e.final) sink.done();
          return true;
        },
        [job](bool success) {
          if (!success) job->cancelled = true;
        });
  };
  // Cached contexts, as llama-server's slots: GET lists them; POST /contexts/ID?action=save|erase
  // with {"filename": NAME} saves one to --prompt-cache-dir or drops it; POST
  // /contexts?action=restore with {"filename": NAME} reads one back; DELETE /contexts/ID drops it.
  auto contexts = [this](const httplib::Request& req, httplib::Response& res, const std::string& id) {
    try {
      Scheduler* s = scheduler_.load();
      if (!s) throw ApiError(503, "server_error", "", "loading", "the model is still loading");
      const std::string action = req.method == "DELETE" ? "erase" : req.get_param_value("action");
      auto filename = [&req] { return parse_context_filename(req.body); };
      nlohmann::json out;
      if (req.method == "GET") out = s->list_contexts();
      else if (id.empty() && action == "restore") out = s->restore_context(filename());
      else if (!id.empty() && action == "save") out = s->save_context(id, filename());
      else if (!id.empty() && action == "erase") out = s->erase_context(id);
      else throw invalid("action", "`action` must be " + std::string(id.empty() ? "restore" : "save or erase"));
      res.set_content(dump(out), "application/json");
    } catch (const ApiError& e) {
      if (e.status() < 500) ++metrics_.requests_client_error;
      send_error(res, e);
    }
  };
  http_->Get("/contexts", [contexts](const httplib::Request& req, httplib::Response& res) { contexts(req, res, ""); });
  http_->Post("/contexts", [contexts](const httplib::Request& req, httplib::Response& res) { contexts(req, res, ""); });
  http_->Post(R"(/contexts/([0-9a-f]{16}))", [contexts](const httplib::Request& req, httplib::Response& res) {
    contexts(req, res, req.matches[1]);
  });
  http_->Delete(R"(/contexts/([0-9a-f]{16}))", [contexts](const httplib::Request& req, httplib::Response& res) {
    contexts(req, res, req.matches[1]);
  });
  http_->Post("/v1/completions", [completion](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, Endpoint::Completions);
  });
  http_->Post("/v1/chat/completions", [completion](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, Endpoint::ChatCompletions);
  });
}

}  // namespace kvsqueeze::server
