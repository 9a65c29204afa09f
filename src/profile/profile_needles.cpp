// The profiler's needles: three built in (in the style of DiliLazyKV's README table, §5.1), or a
// JSONL file of {"needle", "question", "answer"}.
#include <fstream>

#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"
#include "kvsqueeze/head_profile.h"

namespace kvsqueeze::profile {

// The references are what a correct answer must share with: short enough that a terse answer
// ("Relax and do nothing.") and a full sentence both pass token F1 >= 0.5.
std::vector<Needle> default_needles() {
  return {
      {"The good ways to spend time on campus are to relax and do nothing.",
       "What are the good ways to spend time on campus?", "to relax and do nothing"},
      {"The healthy habits of a Ph.D. student are exercise and a healthy diet.",
       "What are the healthy habits of a Ph.D. student?", "exercise and a healthy diet"},
      {"Tom was born in 2005, and he started high school fifteen years after he was born.",
       "In which year did Tom start high school?", "in 2020"},
  };
}

std::vector<Needle> read_needles(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read needles file '" + path + "' (give a JSONL file of {\"needle\", \"question\", \"answer\"})");
  std::vector<Needle> needles;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    const std::string where = "needles file '" + path + "' line " + std::to_string(number);
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error(where + " is not a JSON object");
    Needle n;
    for (auto [key, field] : {std::pair<const char*, std::string*>{"needle", &n.needle}, {"question", &n.question}, {"answer", &n.answer}}) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_string() || it->get<std::string>().find_first_not_of(" \t\r\n") == std::string::npos)
        throw Error(where + ": \"" + key + "\" must be a non-empty string (each line: {\"needle\", \"question\", \"answer\"})");
      *field = it->get<std::string>();
    }
    needles.push_back(std::move(n));
  }
  if (in.bad()) throw Error("cannot read needles file '" + path + "'");
  if (needles.empty()) throw Error("needles file '" + path + "' holds no needles (one JSON object per line)");
  return needles;
}

}  // namespace kvsqueeze::profile
