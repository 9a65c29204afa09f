#pragma once
// Numbers in the reference fixtures' JSON: Python writes non-finite floats as the strings
// "inf", "-inf" and "nan".
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

namespace fixture_json {

inline double num(const nlohmann::json& v) {
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    if (s == "inf") return INFINITY;
    if (s == "-inf") return -INFINITY;
    return NAN;
  }
  return v.get<double>();
}

}  // namespace fixture_json
