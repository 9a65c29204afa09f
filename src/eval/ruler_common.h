#pragma once
// Shared machinery of the RULER generators (NVIDIA/RULER scripts/data/synthetic/*.py): the
// haystack-size search in the model's own tokens, kvpress's split of RULER's prompt into
// context / question / answer prefix, and the random needles.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kvsqueeze/eval/sample.h"
#include "kvsqueeze/eval/tasks.h"
#include "task_random.h"

namespace kvsqueeze::eval {

// One generated RULER prompt: the task template filled in and followed by its answer prefix.
struct RulerPrompt {
  std::string text;
  std::vector<std::string> references;
};

// Builds a prompt with `units` haystack units (sentences, words, documents, ...) from `rng`.
using RulerGenerator = std::function<RulerPrompt(int64_t units, TaskRng& rng)>;

struct RulerTaskSpec {
  std::string name;     // "niah_single_1", ...
  std::string family;   // niah | vt | cwe | fwe | qa: the question / answer patterns
  int64_t max_new_tokens = 128;
  std::string metric = "string_match_all";
  int64_t increment = 25;          // RULER's step (incremental): the search's first probe
  int64_t max_units = int64_t{1} << 40;
};

// RULER's fitting: the largest unit count whose probe prompt plus the generation length fits in
// options.length tokens; a sample whose own prompt is over budget or well under it is refitted.
std::vector<Sample> generate_ruler_samples(const RulerTaskSpec& spec, const RulerOptions& options,
                                           const Tokenizer& tokenizer, const RulerGenerator& generate);

// kvpress's split (evaluation/benchmarks/ruler/create_huggingface_dataset.py): the context ends
// where the task's question pattern last starts, the answer prefix starts at the answer pattern.
void split_ruler_prompt(const std::string& family, const std::string& text, Sample& sample);

// Needle parts as RULER draws them.
std::string random_number(TaskRng& rng, int digits = 7);  // random.randint(10**(d-1), 10**d - 1)
std::string random_uuid(TaskRng& rng);                     // uuid.UUID(int=getrandbits(128), version=4)
std::string random_key_word(TaskRng& rng);                 // "adjective-noun" over wonderwords' lists

// wonderwords' word lists (MIT; shipped as data/words_*.txt), duplicates removed, file order.
const std::vector<std::string>& wonderwords_nouns();
const std::vector<std::string>& wonderwords_adjectives();
const std::vector<std::string>& wonderwords_verbs();

// The essay haystack (RulerOptions::haystack_dir or the default) as words.
std::vector<std::string> essay_words(const RulerOptions& options);

// RULER's "noise" haystack sentence.
inline constexpr const char* kRulerNoise =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// Generators of the task families; `spec` is filled with the task's constants.
RulerGenerator ruler_niah_generator(const std::string& task, const RulerOptions& options, RulerTaskSpec& spec);
RulerGenerator ruler_vt_generator(const RulerOptions& options, const Tokenizer& tokenizer, RulerTaskSpec& spec);
RulerGenerator ruler_cwe_generator(const RulerOptions& options, RulerTaskSpec& spec);
RulerGenerator ruler_fwe_generator(const RulerOptions& options, RulerTaskSpec& spec);
RulerGenerator ruler_qa_generator(const std::string& task, const RulerOptions& options, RulerTaskSpec& spec);

}  // namespace kvsqueeze::eval
