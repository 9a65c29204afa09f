#pragma once
// The HTTP front: OpenAI's routes on cpp-httplib, bearer-key checks, body limits and JSON errors.
// It parses requests (request_parser.h), hands them to the scheduler and writes what comes back,
// streamed as server-sent events or whole. It never touches an engine.
#include <atomic>
#include <memory>
#include <string>

#include "metrics.h"
#include "request.h"
#include "scheduler.h"

namespace httplib {
class Server;
}

namespace kvsqueeze::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;                 // "" : no key needed
  size_t max_body_bytes = 8u << 20;    // larger bodies get 413
  int threads = 64;                    // connections served at once (streams hold one each)
  std::string model_name = "kvsqueeze";
};

class HttpServer {
 public:
  HttpServer(const HttpOptions& options, Metrics& metrics);
  ~HttpServer();
  // Until set, completion routes and /health answer 503 (the model is loading).
  void set_ready(Scheduler* scheduler, const RequestLimits& limits);
  // Binds; false when the address is taken. Then listen() serves until stop().
  bool bind();
  int port() const { return port_; }
  void listen();
  void stop();

 private:
  void routes();
  HttpOptions options_;
  Metrics& metrics_;
  std::unique_ptr<httplib::Server> http_;
  std::atomic<Scheduler*> scheduler_{nullptr};
  RequestLimits limits_;
  std::atomic<uint64_t> next_id_{1};
  int port_ = 0;
};

}  // namespace kvsqueeze::server
