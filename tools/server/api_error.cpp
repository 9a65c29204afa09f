#include "api_error.h"

#include <nlohmann/json.hpp>

namespace kvsqueeze::server {

std::string ApiError::body() const {
  nlohmann::json e = {{"message", what()}, {"type", type_}, {"param", nullptr}, {"code", nullptr}};
  if (!param_.empty()) e["param"] = param_;
  if (!code_.empty()) e["code"] = code_;
  // Messages may echo request bytes that are not UTF-8: replace them rather than fail.
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kvsqueeze::server
