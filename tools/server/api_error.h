#pragma once
// An error a request gets back: an HTTP status and OpenAI's error object
// {"error": {"message", "type", "param", "code"}}. Thrown by the parser and the scheduler,
// turned into a response by the HTTP layer only.
#include <stdexcept>
#include <string>

namespace kvsqueeze::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string param, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)), code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }  // "" : null
  const std::string& code() const { return code_; }    // "" : null
  // The JSON body OpenAI's clients parse.
  std::string body() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

// A request field that is missing, of the wrong type or out of range: 400 invalid_request_error.
inline ApiError invalid(const std::string& param, const std::string& message, const std::string& code = "invalid_value") {
  return ApiError(400, "invalid_request_error", param, code, message);
}

}  // namespace kvsqueeze::server
