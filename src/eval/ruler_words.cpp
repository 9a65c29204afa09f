// RULER's aggregation tasks: common words extraction (cwe, scripts/data/synthetic/
// common_words_extraction.py: 10 words x30 among words x3, one example shown first) and frequent
// words extraction (fwe, freq_words_extraction.py: Zipf-distributed coded words, alpha 2).
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

constexpr const char* kCweTemplate =
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that "
    "appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?";
constexpr const char* kCweAnswerPrefix = " Answer: The top 10 words that appear most often in the list are:";
constexpr int64_t kCommonWords = 10;

constexpr const char* kFweTemplate =
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What "
    "are the three most frequently appeared words in the above coded text?";
constexpr const char* kFweAnswerPrefix =
    " Answer: According to the coded text above, the three most frequently appeared words are:";
constexpr double kFweAlpha = 2.0;
constexpr int kCodedWordLength = 6;

std::string numbered(const std::vector<std::string>& words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(i + 1) + ". " + words[i];
  }
  return out;
}

std::string with_context(const char* templ, const char* answer_prefix, const std::string& context) {
  const std::string full = std::string(templ) + answer_prefix;
  const size_t at = full.find("{context}");
  return full.substr(0, at) + context + full.substr(at + 9);
}

// One cwe list: `count` distinct words, the first ten repeated `common` times, the rest `rare` times.
std::pair<std::string, std::vector<std::string>> cwe_example(const std::vector<std::string>& pool, int64_t count,
                                                             int64_t common, int64_t rare, TaskRng& rng) {
  std::vector<std::string> chosen;
  for (int64_t i : rng.sample_indices(static_cast<int64_t>(pool.size()), count))
    chosen.push_back(pool[static_cast<size_t>(i)]);
  std::vector<std::string> list;
  for (size_t i = 0; i < chosen.size(); ++i)
    for (int64_t r = 0; r < (static_cast<int64_t>(i) < kCommonWords ? common : rare); ++r) list.push_back(chosen[i]);
  rng.shuffle(list);
  chosen.resize(static_cast<size_t>(std::min<int64_t>(kCommonWords, count)));
  return {numbered(list), chosen};
}

// Riemann zeta(alpha), alpha > 1: a partial sum and its Euler-Maclaurin tail.
double riemann_zeta(double alpha) {
  const int terms = 1000;
  double sum = 0;
  for (int k = 1; k < terms; ++k) sum += std::pow(double(k), -alpha);
  const double n = terms;
  return sum + std::pow(n, 1 - alpha) / (alpha - 1) + 0.5 * std::pow(n, -alpha) + alpha * std::pow(n, -alpha - 1) / 12;
}

}  // namespace

RulerGenerator ruler_cwe_generator(const RulerOptions& options, RulerTaskSpec& spec) {
  spec.family = "cwe";
  spec.max_new_tokens = 120;
  spec.increment = 10;
  // RULER: sorted(set(nouns + adjectives + verbs)).
  auto pool = std::make_shared<std::vector<std::string>>();
  {
    std::set<std::string> words(wonderwords_nouns().begin(), wonderwords_nouns().end());
    words.insert(wonderwords_adjectives().begin(), wonderwords_adjectives().end());
    words.insert(wonderwords_verbs().begin(), wonderwords_verbs().end());
    pool->assign(words.begin(), words.end());
  }
  // RULER draws from a larger English list past this size; kvsqueeze caps the list instead.
  spec.max_units = static_cast<int64_t>(pool->size());
  const bool short_prompt = options.length < 4096;  // RULER's lighter repeats below 4K
  return [pool, short_prompt](int64_t units, TaskRng& rng) {
    const int64_t count = std::max(units, kCommonWords);
    auto [example_context, example_answer] = short_prompt ? cwe_example(*pool, 20, 3, 1, rng) : cwe_example(*pool, 40, 10, 3, rng);
    auto [context, answer] = short_prompt ? cwe_example(*pool, count, 6, 1, rng) : cwe_example(*pool, count, 30, 3, rng);
    const std::string example = with_context(kCweTemplate, kCweAnswerPrefix, example_context) + " " + numbered(example_answer);
    return RulerPrompt{example + "\n" + with_context(kCweTemplate, kCweAnswerPrefix, context), answer};
  };
}

RulerGenerator ruler_fwe_generator(const RulerOptions& options, RulerTaskSpec& spec) {
  spec.family = "fwe";
  spec.max_new_tokens = 50;
  const int64_t budget = options.length - spec.max_new_tokens;
  const int64_t vocab_size = budget / 50;  // RULER: vocab_size = max_seq_length // 50
  if (vocab_size < 4)
    throw Error("RULER fwe: length " + std::to_string(options.length) + " is too small (needs a coded vocabulary of at least 4 words, i.e. length >= " +
                std::to_string(4 * 50 + spec.max_new_tokens) + ")");
  spec.increment = std::max<int64_t>(1, budget / 32);
  const double zeta = riemann_zeta(kFweAlpha);

  return [vocab_size, zeta](int64_t units, TaskRng& rng) {
    std::set<std::string> distinct;
    while (static_cast<int64_t>(distinct.size()) < vocab_size) {
      std::string word;
      for (int i = 0; i < kCodedWordLength; ++i) word += static_cast<char>('a' + rng.below(26));
      distinct.insert(word);
    }
    std::vector<std::string> vocab(distinct.begin(), distinct.end());
    rng.shuffle(vocab);
    vocab[0] = "...";  // the top rank is noise
    std::vector<std::string> words;
    for (int64_t k = 1; k <= vocab_size; ++k) {
      const auto count = static_cast<int64_t>(double(units) * std::pow(double(k), -kFweAlpha) / zeta);
      for (int64_t c = 0; c < count; ++c) words.push_back(vocab[static_cast<size_t>(k - 1)]);
    }
    rng.shuffle(words);
    return RulerPrompt{with_context(kFweTemplate, kFweAnswerPrefix, join(words, " ")), {vocab[1], vocab[2], vocab[3]}};
  };
}

}  // namespace kvsqueeze::eval
