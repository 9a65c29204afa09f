#pragma once
// The errors of the engine API. Every user-facing failure is a kvsqueeze::Error whose what() is
// one line naming the bad input and what would be valid; front ends print it (the CLI) or turn it
// into their own error (a Python exception, an HTTP 400). Subclasses say which kind of input was
// wrong, so front ends can map it without parsing messages.
#include <stdexcept>
#include <string>

namespace kvsqueeze {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A parameter of the API is out of range or inconsistent with another one. parameter() is its
// name in the API (SessionOptions / CompressionPlan / SamplerOptions field names: "ratio",
// "ctx_size", "decode_interval"...); the message names it the same way, so a front end can
// rewrite it to its own spelling (the CLI: "ctx_size" -> "--ctx-size").
class ParameterError : public Error {
 public:
  ParameterError(std::string parameter, const std::string& message) : Error(message), parameter_(std::move(parameter)) {}
  const std::string& parameter() const { return parameter_; }

 private:
  std::string parameter_;
};

// The prompt, context or generation does not fit the session's context size (parameter "ctx_size").
class ContextFullError : public ParameterError {
 public:
  explicit ContextFullError(const std::string& message) : ParameterError("ctx_size", message) {}
};

// A model file that cannot be used: corrupt, truncated, or an unsupported architecture or type.
class ModelError : public Error {
 public:
  using Error::Error;
};

// A file that does not exist or cannot be opened (a model, a prompt cache, a head profile).
class FileError : public Error {
 public:
  using Error::Error;
};

// Work stopped because the caller's cancel flag was set (e.g. Ctrl-C in Python).
class CancelledError : public Error {
 public:
  using Error::Error;
};

}  // namespace kvsqueeze
