// RULER's variable tracking (scripts/data/synthetic/variable_tracking.py; synthetic.yaml: noise
// haystack, 1 chain of 4 hops), with its one-shot example of about 500 tokens in front.
// Template reproduced from RULER's constants.py (Apache-2.0, NVIDIA).
#include <algorithm>
#include <set>

#include "ruler_common.h"
#include "task_text.h"

namespace kvsqueeze::eval {

namespace {

constexpr const char* kTemplate =
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above.";
constexpr const char* kAnswerPrefix =
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned the "
    "value {query}, they are: ";
constexpr int64_t kHops = 4;
constexpr int64_t kExampleTokens = 500;  // RULER sizes its example with max_seq_length=500

struct Chain {
  std::vector<std::string> variables;  // the answer: every variable that ends up holding the value
  std::string text;                    // the prompt with its answer prefix
};

std::string random_name(TaskRng& rng, int letters) {
  std::string name;
  for (int i = 0; i < letters; ++i) name += static_cast<char>('A' + rng.below(26));
  return name;
}

// One prompt: `noises` noise sentences with the chain's assignments inserted in order.
Chain make_chain(int64_t noises, int letters, TaskRng& rng) {
  Chain chain;
  std::set<std::string> names;
  while (static_cast<int64_t>(chain.variables.size()) < kHops + 1) {
    std::string name = random_name(rng, letters);
    if (names.insert(name).second) chain.variables.push_back(name);
  }
  const std::string value = std::to_string(rng.uniform_int(10000, 99998));  // np.random.randint(10000, 99999)
  std::vector<std::string> assignments = {"VAR " + chain.variables[0] + " = " + value};
  for (int64_t j = 0; j < kHops; ++j)
    assignments.push_back("VAR " + chain.variables[static_cast<size_t>(j + 1)] + " = VAR " +
                          chain.variables[static_cast<size_t>(j)] + " ");

  std::vector<std::string> sentences(static_cast<size_t>(noises), kRulerNoise);
  const int64_t count = static_cast<int64_t>(assignments.size());
  std::vector<int64_t> positions = rng.sample_indices(std::max(noises, count), count);
  std::sort(positions.begin(), positions.end());
  for (size_t j = 0; j < positions.size(); ++j) {
    const size_t at = std::min(static_cast<size_t>(positions[j]) + j, sentences.size());
    sentences.insert(sentences.begin() + static_cast<long>(at), assignments[j]);
  }
  const std::string context = replace_all(join(sentences, "\n"), ". \n", ".\n");

  std::string templ = std::string(kTemplate) + kAnswerPrefix;
  templ = replace_all(replace_all(templ, "{num_v}", std::to_string(kHops + 1)), "{query}", value);
  const size_t at = templ.find("{context}");
  chain.text = templ.substr(0, at) + context + templ.substr(at + 9);
  return chain;
}

}  // namespace

RulerGenerator ruler_vt_generator(const RulerOptions& options, const Tokenizer& tokenizer, RulerTaskSpec& spec) {
  spec.family = "vt";
  spec.max_new_tokens = 30;
  spec.increment = options.length < 4096 ? 5 : 10;

  // The example's size, fitted once like RULER's (3-letter names, its answer appended).
  auto example_text = [](int64_t noises, TaskRng& rng) {
    Chain example = make_chain(noises, 3, rng);
    return example.text + " " + join(example.variables, " ") + "\n";
  };
  const uint64_t probe_seed = derive_seed(options.seed, "ruler/vt/example");
  const int64_t example_noises = std::max<int64_t>(
      1, fit_units(
             [&](int64_t noises) {
               TaskRng rng(probe_seed);
               return count_tokens(tokenizer, example_text(noises, rng));
             },
             kExampleTokens, 5, int64_t{1} << 20));

  return [example_text, example_noises](int64_t units, TaskRng& rng) {
    const std::string example = example_text(example_noises, rng);
    Chain chain = make_chain(units, 5, rng);
    return RulerPrompt{example + "\n" + chain.text, chain.variables};
  };
}

}  // namespace kvsqueeze::eval
