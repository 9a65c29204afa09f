#include "ruler_common.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "embedded_data.h"
#include "kvsqueeze/error.h"
#include "task_text.h"

namespace kvsqueeze::eval {

std::vector<Sample> generate_ruler_samples(const RulerTaskSpec& spec, const RulerOptions& options,
                                           const Tokenizer& tokenizer, const RulerGenerator& generate) {
  const int64_t budget = options.length - spec.max_new_tokens;
  const std::string task = "ruler/" + spec.name;
  auto too_small = [&](int64_t tokens) {
    return Error("RULER " + spec.name + ": length " + std::to_string(options.length) +
                 " is too small: the prompt with the smallest haystack has " + std::to_string(tokens) + " tokens and " +
                 std::to_string(spec.max_new_tokens) + " more are reserved for the answer");
  };
  if (budget <= 0) throw too_small(0);

  // The unit count, fitted on a probe sample of its own stream.
  const uint64_t probe_seed = derive_seed(options.seed, task + "/probe");
  auto probe_tokens = [&](int64_t units) {
    TaskRng rng(probe_seed);
    return count_tokens(tokenizer, generate(units, rng).text);
  };
  const int64_t fitted = fit_units(probe_tokens, budget, spec.increment, spec.max_units);
  if (fitted == 0) throw too_small(probe_tokens(1));

  std::vector<Sample> samples;
  for (int64_t index = 0; index < options.samples_per_task; ++index) {
    const uint64_t seed = derive_seed(options.seed, task, static_cast<uint64_t>(index));
    auto tokens_at = [&](int64_t units) {
      TaskRng rng(seed);
      return count_tokens(tokenizer, generate(units, rng).text);
    };
    // RULER lowers an over-budget sample by `increment` units. Here a sample over budget, or more
    // than 2% under it (its random needles or words tokenize differently from the probe's), is
    // fitted on its own stream, so that every prompt stays close to the length.
    int64_t units = fitted;
    const int64_t first = tokens_at(units);
    if (first > budget || first < budget - options.length / 50) {
      units = fit_units(tokens_at, budget, fitted, spec.max_units);
      if (units == 0) throw too_small(tokens_at(1));
    }
    TaskRng rng(seed);
    RulerPrompt prompt = generate(units, rng);
    const int64_t tokens = count_tokens(tokenizer, prompt.text);
    Sample sample;
    sample.task = task;
    sample.id = "L" + std::to_string(options.length) + "_" + std::to_string(index);
    split_ruler_prompt(spec.family, prompt.text, sample);
    sample.references = std::move(prompt.references);
    sample.metric = spec.metric;
    sample.max_new_tokens = spec.max_new_tokens;
    sample.meta = {{"length", options.length}, {"index", index}, {"prompt_tokens", tokens}, {"haystack_units", units}};
    samples.push_back(std::move(sample));
  }
  return samples;
}

void split_ruler_prompt(const std::string& family, const std::string& text, Sample& sample) {
  // The patterns of kvpress's QUESTION_PATTERNS / ANSWER_PATTERNS.
  size_t question_at = std::string::npos;
  std::string answer_pattern = "Answer:";
  auto last = [&](const char* pattern) {
    const size_t at = text.rfind(pattern);
    if (at != std::string::npos && (question_at == std::string::npos || at > question_at)) question_at = at;
  };
  if (family == "niah") {
    last("What is the special magic");
    last("What are all the special magic");
    answer_pattern = "The special magic";
  } else if (family == "vt") {
    last("Question: Find all variables that are assigned the value");
  } else if (family == "cwe") {
    last("Question: What are the 10 most common words in the above list?");
  } else if (family == "fwe") {
    last("Question: Do not provide any explanation.");
  } else if (family == "qa") {
    last("Answer the question based on the given documents.");
  }
  if (question_at == std::string::npos) throw Error("internal: RULER " + family + " prompt has no question");
  const size_t answer_at = text.find(answer_pattern, question_at);
  if (answer_at == std::string::npos) throw Error("internal: RULER " + family + " prompt has no answer prefix");
  sample.context = text.substr(0, question_at);
  sample.question = text.substr(question_at, answer_at - question_at);
  sample.answer_prefix = text.substr(answer_at);
}

std::string random_number(TaskRng& rng, int digits) {
  int64_t low = 1;
  for (int i = 1; i < digits; ++i) low *= 10;
  return std::to_string(rng.uniform_int(low, low * 10 - 1));
}

std::string random_uuid(TaskRng& rng) {
  uint64_t high = rng.next(), low = rng.next();
  high = (high & ~0xf000ULL) | 0x4000ULL;                      // version 4
  low = (low & ~(0xc000ULL << 48)) | (0x8000ULL << 48);        // RFC 4122 variant
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%08llx-%04llx-%04llx-%04llx-%012llx",
                static_cast<unsigned long long>(high >> 32), static_cast<unsigned long long>((high >> 16) & 0xffff),
                static_cast<unsigned long long>(high & 0xffff), static_cast<unsigned long long>(low >> 48),
                static_cast<unsigned long long>(low & 0xffffffffffffULL));
  return buffer;
}

std::string random_key_word(TaskRng& rng) {
  // RULER picks from sorted(set(f"{adj}-{noun}")); with duplicate-free lists every pair is one
  // distinct word, so a uniform pair is the same distribution.
  const auto& adjectives = wonderwords_adjectives();
  const auto& nouns = wonderwords_nouns();
  const std::string& adjective = adjectives[rng.below(adjectives.size())];
  return adjective + "-" + nouns[rng.below(nouns.size())];
}

namespace {

std::vector<std::string> load_word_list(const char* name) {
  const auto& files = embedded_data();
  auto it = files.find(name);
  if (it == files.end()) throw Error(std::string("the word list data/") + name + " is missing from this build");
  std::vector<std::string> words;
  std::set<std::string> seen;
  size_t start = 0;
  const std::string& text = it->second;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string word = text.substr(start, end - start);
    while (!word.empty() && (word.back() == '\r' || word.back() == ' ')) word.pop_back();
    if (!word.empty() && seen.insert(word).second) words.push_back(word);
    start = end + 1;
  }
  return words;
}

}  // namespace

const std::vector<std::string>& wonderwords_nouns() {
  static const std::vector<std::string> words = load_word_list("words_nouns.txt");
  return words;
}
const std::vector<std::string>& wonderwords_adjectives() {
  static const std::vector<std::string> words = load_word_list("words_adjectives.txt");
  return words;
}
const std::vector<std::string>& wonderwords_verbs() {
  static const std::vector<std::string> words = load_word_list("words_verbs.txt");
  return words;
}

std::vector<std::string> essay_words(const RulerOptions& options) {
  return split_words(load_haystack(options.haystack_dir));
}

}  // namespace kvsqueeze::eval
