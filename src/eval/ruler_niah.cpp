// RULER's eight needle tasks (scripts/data/synthetic/niah.py with the arguments of synthetic.yaml).
// Templates reproduced from RULER's constants.py (Apache-2.0, NVIDIA).
#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "kvsqueeze/error.h"
#include "ruler_common.h"
#include "task_text.h"

namespace kvsqueeze::eval {

namespace {

constexpr const char* kTemplate =
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will quiz "
    "you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} for {query} "
    "mentioned in the provided text?";
constexpr const char* kAnswerPrefix = " The special magic {type_needle_v} for {query} mentioned in the provided text are";
constexpr const char* kNeedle = "One of the special magic {type_needle_v} for {key} is: {value}.";

struct NiahConfig {
  std::string haystack;  // noise | essay | needle
  std::string key_type, value_type;  // words | numbers | uuids
  int64_t keys = 1, values = 1, queries = 1;
};

NiahConfig config_of(const std::string& task) {
  // synthetic.yaml
  if (task == "niah_single_1") return {"noise", "words", "numbers", 1, 1, 1};
  if (task == "niah_single_2") return {"essay", "words", "numbers", 1, 1, 1};
  if (task == "niah_single_3") return {"essay", "words", "uuids", 1, 1, 1};
  if (task == "niah_multikey_1") return {"essay", "words", "numbers", 4, 1, 1};
  if (task == "niah_multikey_2") return {"needle", "words", "numbers", 1, 1, 1};
  if (task == "niah_multikey_3") return {"needle", "uuids", "uuids", 1, 1, 1};
  if (task == "niah_multivalue") return {"essay", "words", "numbers", 1, 4, 1};
  if (task == "niah_multiquery") return {"essay", "words", "numbers", 1, 1, 4};
  throw Error("internal: " + task + " is not a RULER needle task");
}

std::string random_of(const std::string& type, TaskRng& rng) {
  if (type == "numbers") return random_number(rng);
  if (type == "uuids") return random_uuid(rng);
  return random_key_word(rng);
}

std::string fill(std::string text, const std::string& needle_type, const std::string& query) {
  text = replace_all(std::move(text), "{type_needle_v}", needle_type);
  return replace_all(std::move(text), "{query}", query);
}

// RULER's DEPTHS: np.round(np.linspace(0, 100, 40)).astype(int) (round half to even).
const std::vector<double>& depths() {
  static const std::vector<double> values = [] {
    std::vector<double> out;
    for (int i = 0; i < 40; ++i) out.push_back(std::nearbyint(100.0 * i / 39.0));
    return out;
  }();
  return values;
}

}  // namespace

RulerGenerator ruler_niah_generator(const std::string& task, const RulerOptions& options, RulerTaskSpec& spec) {
  const NiahConfig config = config_of(task);
  spec.family = "niah";
  spec.max_new_tokens = 128;
  spec.increment = config.haystack == "essay" ? 500 : (options.length < 4096 ? 5 : 25);
  auto words = std::make_shared<std::vector<std::string>>();
  if (config.haystack == "essay") *words = essay_words(options);

  return [config, words](int64_t units, TaskRng& rng) {
    const int64_t key_count = std::max(config.keys, config.queries);
    std::vector<std::string> keys, needles;
    std::vector<std::vector<std::string>> values;
    std::set<std::string> used_keys;
    for (int64_t k = 0; k < key_count; ++k) {
      std::string key = random_of(config.key_type, rng);
      while (!used_keys.insert(key).second) key = random_of(config.key_type, rng);  // distinct keys
      keys.push_back(key);
      values.emplace_back();
      for (int64_t v = 0; v < config.values; ++v) {
        values.back().push_back(random_of(config.value_type, rng));
        needles.push_back(replace_all(
            replace_all(replace_all(kNeedle, "{type_needle_v}", config.value_type), "{key}", key), "{value}",
            values.back().back()));
      }
    }
    rng.shuffle(needles);

    std::string context;
    if (config.haystack == "essay") {
      std::vector<std::string> taken;
      taken.reserve(static_cast<size_t>(units));
      for (int64_t i = 0; i < units; ++i) taken.push_back((*words)[static_cast<size_t>(i) % words->size()]);
      const std::vector<std::string> sentences = split_sentences(join(taken, " "));
      std::vector<size_t> positions;
      for (int64_t pick : rng.sample_indices(static_cast<int64_t>(depths().size()), static_cast<int64_t>(needles.size())))
        positions.push_back(static_cast<size_t>(static_cast<double>(sentences.size()) * depths()[static_cast<size_t>(pick)] / 100.0));
      std::sort(positions.begin(), positions.end());
      positions.insert(positions.begin(), 0);
      positions.push_back(sentences.size());
      std::vector<std::string> parts;
      for (size_t i = 1; i < positions.size(); ++i) {
        parts.push_back(join({sentences.begin() + static_cast<long>(positions[i - 1]),
                              sentences.begin() + static_cast<long>(positions[i])},
                             " "));
        if (i - 1 < needles.size()) parts.push_back(needles[i - 1]);
      }
      context = join(parts, " ");
    } else {
      std::vector<std::string> sentences;
      sentences.reserve(static_cast<size_t>(units) + needles.size());
      for (int64_t i = 0; i < units; ++i) {
        if (config.haystack == "noise") {
          sentences.push_back(kRulerNoise);
        } else {
          // A distractor needle whose key is none of the asked ones.
          std::string key = random_of(config.key_type, rng);
          while (used_keys.count(key)) key = random_of(config.key_type, rng);
          used_keys.insert(key);
          sentences.push_back(replace_all(replace_all(replace_all(kNeedle, "{type_needle_v}", config.value_type),
                                                      "{key}", key),
                                          "{value}", random_of(config.value_type, rng)));
        }
      }
      const int64_t count = static_cast<int64_t>(needles.size());
      std::vector<int64_t> indexes = rng.sample_indices(std::max(units, count), count);
      std::sort(indexes.rbegin(), indexes.rend());
      for (size_t i = 0; i < indexes.size(); ++i) {
        const size_t at = std::min(static_cast<size_t>(indexes[i]), sentences.size());
        sentences.insert(sentences.begin() + static_cast<long>(at), needles[i]);
      }
      context = join(sentences, "\n");
    }

    std::vector<std::string> queries, answers;
    for (int64_t i : rng.sample_indices(key_count, config.queries)) {
      queries.push_back(keys[static_cast<size_t>(i)]);
      for (const auto& value : values[static_cast<size_t>(i)]) answers.push_back(value);
    }
    std::string query = queries.back();
    if (queries.size() > 1)
      query = join({queries.begin(), queries.end() - 1}, ", ") + ", and " + queries.back();

    std::string templ = std::string(kTemplate) + kAnswerPrefix;
    std::string needle_type = config.value_type;
    if (config.queries * config.values == 1) {
      // RULER's singular wording for one answer.
      templ = replace_all(templ, "Some", "A");
      templ = replace_all(templ, "are all", "is");
      templ = replace_all(templ, "are", "is");
      templ = replace_all(templ, "answers", "answer");
      needle_type.pop_back();
    }
    const size_t at = templ.find("{context}");
    std::string text = fill(templ.substr(0, at), needle_type, query) + context +
                       fill(templ.substr(at + 9), needle_type, query);
    return RulerPrompt{std::move(text), std::move(answers)};
  };
}

}  // namespace kvsqueeze::eval
