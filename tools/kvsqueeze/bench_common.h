#pragma once
// Shared helpers of the bench sub-commands.
#include <cstdint>
#include <string>
#include <vector>

namespace kvsqueeze {
class Model;
}

namespace kvsqueeze::cli {

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& flag);
std::vector<double> parse_ratio_list(const std::string& text, const std::string& flag);
double ms_since_steady(int64_t start_ns);
int64_t now_ns();
size_t current_rss_bytes();
// Weight bytes a decoded token reads: every tensor of the file once (the LM head included; tied
// embeddings read as the LM head), except the embedding table, of which it reads one row.
size_t weight_bytes_per_token(const Model& model);

}  // namespace kvsqueeze::cli
