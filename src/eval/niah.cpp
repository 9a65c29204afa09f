// Needle in a haystack, kvpress style (evaluation/benchmarks/needle_in_haystack/utils.py): the
// haystack is cut to `length - needle tokens - 150` tokens (150 for the framing, the question and
// a chat template), the needle goes in at `depth` percent of those tokens, moved back to the
// sentence boundary before that point (as the KVCache-Factory / Fu et al. harness does), and the
// whole is framed as "a very long story book".
#include <algorithm>
#include <map>
#include <set>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"
#include "task_random.h"
#include "task_text.h"

namespace kvsqueeze::eval {

namespace {

// kvpress's context_wrapper and the reserve it keeps for the rest of the prompt.
constexpr const char* kBookOpen = "This is a very long story book: <book> ";
constexpr const char* kBookClose = " </book>.";
constexpr int64_t kPromptReserve = 150;

// The San Francisco needle of Kamradt's test, used by kvpress and KVCache-Factory.
constexpr const char* kSingleNeedle =
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.";
constexpr const char* kSingleQuestion =
    "\nBased on the content of the book, Question: What is the best thing to do in San Francisco?\n";

// The pass-key retrieval task (Mohtashami & Jaggi's landmark attention; LongLoRA; LagKV).
constexpr const char* kPasskeyIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.";
constexpr const char* kFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

const std::vector<std::string>& cities() {
  static const std::vector<std::string> names = {
      "Singapore", "Chicago", "Sydney", "Amsterdam", "Tokyo",  "Berlin",   "Nairobi", "Lima",
      "Toronto",   "Cairo",   "Oslo",   "Mumbai",    "Lisbon", "Santiago", "Seoul",   "Dublin"};
  return names;
}

struct Needle {
  std::string text;
  double depth = 0;
};

struct CellPrompt {
  std::vector<Needle> needles;
  std::string question, answer_prefix, metric;
  std::vector<std::string> references;
  int64_t max_new_tokens = 32;
};

std::string random_digits(TaskRng& rng, int64_t digits) {
  std::string out(1, static_cast<char>('1' + rng.below(9)));  // no leading zero
  for (int64_t i = 1; i < digits; ++i) out += static_cast<char>('0' + rng.below(10));
  return out;
}

CellPrompt make_cell(const NiahOptions& options, double depth, TaskRng& rng) {
  CellPrompt cell;
  if (options.variant == "single") {
    cell.needles.push_back({kSingleNeedle, depth});
    cell.question = kSingleQuestion;
    cell.answer_prefix = "Answer:";
    cell.references = {kSingleNeedle};
    cell.metric = "niah_rouge";
    cell.max_new_tokens = 64;
  } else if (options.variant == "multi") {
    // n distinct cities, each with its own number, spread from `depth` to the end; all are asked.
    std::vector<std::string> names;
    for (int64_t i : rng.sample_indices(static_cast<int64_t>(cities().size()), options.n_needles))
      names.push_back(cities()[static_cast<size_t>(i)]);
    const double n = static_cast<double>(options.n_needles);
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string number = random_digits(rng, 7);
      cell.needles.push_back({"The special magic " + names[i] + " number is: " + number + ".",
                              depth + (100.0 - depth) * static_cast<double>(i) / n});
      cell.references.push_back(number);
    }
    std::string listed;
    for (size_t i = 0; i < names.size(); ++i)
      listed += (i == 0 ? "" : (i + 1 == names.size() ? (names.size() > 2 ? ", and " : " and ") : ", ")) + names[i];
    cell.question = "\nBased on the content of the book, Question: What are the special magic numbers for " + listed + "?\n";
    cell.answer_prefix = "Answer: The special magic numbers are";
    cell.metric = "string_match_all";
    cell.max_new_tokens = 16 + 16 * options.n_needles;
  } else {
    const std::string key = random_digits(rng, options.passkey_digits);
    cell.needles.push_back({"The pass key is " + key + ". Remember it. " + key + " is the pass key.", depth});
    cell.question = "\nWhat is the pass key?";
    cell.answer_prefix = "The pass key is";
    cell.references = {key};
    cell.metric = "string_match_all";
    cell.max_new_tokens = 16 + options.passkey_digits;
  }
  return cell;
}

void validate(const NiahOptions& options) {
  static const std::set<std::string> variants = {"single", "multi", "passkey"};
  if (!variants.count(options.variant))
    throw Error("unknown NIAH variant '" + options.variant + "' (valid: single, multi, passkey)");
  if (options.lengths.empty()) throw Error("NIAH needs at least one length");
  for (int64_t length : options.lengths)
    if (length <= 0) throw Error("NIAH length " + std::to_string(length) + " must be positive");
  if (options.depths.empty()) throw Error("NIAH needs at least one depth");
  for (double depth : options.depths)
    if (!(depth >= 0 && depth <= 100)) throw Error("NIAH depth " + format_number(depth) + " is outside 0..100 (percent)");
  if (options.variant == "multi" && (options.n_needles < 1 || options.n_needles > static_cast<int64_t>(cities().size())))
    throw Error("NIAH multi: n_needles " + std::to_string(options.n_needles) + " must be within 1.." +
                std::to_string(cities().size()));
  if (options.variant == "passkey" && (options.passkey_digits < 1 || options.passkey_digits > 1000))
    throw Error("NIAH passkey: passkey_digits " + std::to_string(options.passkey_digits) + " must be within 1..1000");
}

}  // namespace

std::vector<Sample> niah_samples(const NiahOptions& options, const Tokenizer& tokenizer) {
  validate(options);
  const bool passkey = options.variant == "passkey";
  const std::string task = options.variant == "single" ? "niah" : "niah/" + options.variant;

  // The haystack's tokens, the text repeated until it covers the longest length.
  const std::string base = passkey ? std::string(kFiller) : load_haystack(options.haystack_dir);
  const std::string separator = passkey ? " " : "\n\n";
  const int64_t longest = *std::max_element(options.lengths.begin(), options.lengths.end());
  const int64_t base_tokens = std::max<int64_t>(count_tokens(tokenizer, base), 1);
  std::string haystack = base;
  for (int64_t covered = base_tokens; covered < longest + 16; covered += base_tokens) haystack += separator + base;
  const std::vector<int32_t> haystack_ids = tokenizer.encode(haystack, false, false);

  std::map<int64_t, std::pair<std::string, std::vector<size_t>>> cut_cache;  // limit -> text, sentence ends
  std::vector<Sample> samples;
  std::set<std::string> seen;
  for (int64_t length : options.lengths) {
    for (double depth : options.depths) {
      const std::string id = "L" + std::to_string(length) + "_D" + format_number(depth);
      if (!seen.insert(id).second) continue;
      TaskRng rng(derive_seed(options.seed, task + "/" + id));
      CellPrompt cell = make_cell(options, depth, rng);

      int64_t needle_tokens = 0;
      for (const auto& needle : cell.needles) needle_tokens += count_tokens(tokenizer, needle.text);
      const int64_t limit = length - needle_tokens - kPromptReserve;
      if (limit <= 0)
        throw Error("NIAH length " + std::to_string(length) + " is too small: it must exceed the needle length (" +
                    std::to_string(needle_tokens) + " tokens) plus " + std::to_string(kPromptReserve) +
                    " tokens reserved for the prompt");
      const size_t kept = std::min<size_t>(static_cast<size_t>(limit), haystack_ids.size());
      auto cached = cut_cache.find(limit);
      if (cached == cut_cache.end()) {
        std::string text = tokenizer.decode({haystack_ids.begin(), haystack_ids.begin() + static_cast<long>(kept)}, true);
        std::vector<size_t> ends = sentence_ends(text);
        cached = cut_cache.emplace(limit, std::make_pair(std::move(text), std::move(ends))).first;
      }
      const std::string& text = cached->second.first;
      const std::vector<size_t>& ends = cached->second.second;

      // Each needle's place: its depth in tokens, as text, moved back to a sentence end.
      std::vector<std::pair<size_t, size_t>> places;  // (offset, needle index)
      for (size_t i = 0; i < cell.needles.size(); ++i) {
        const size_t index = static_cast<size_t>(static_cast<double>(kept) * cell.needles[i].depth / 100.0);
        size_t offset = std::min(
            tokenizer.decode({haystack_ids.begin(), haystack_ids.begin() + static_cast<long>(index)}, true).size(),
            text.size());
        auto it = std::upper_bound(ends.begin(), ends.end(), offset);
        offset = it == ends.begin() ? 0 : *(it - 1);
        places.emplace_back(offset, i);
      }
      std::sort(places.rbegin(), places.rend());
      std::string body = text;
      for (const auto& [offset, i] : places) {
        const std::string& needle = cell.needles[i].text;
        body.insert(offset, offset == 0 ? needle + " " : " " + needle);
      }

      Sample sample;
      sample.task = task;
      sample.id = id;
      sample.context = passkey ? std::string(kPasskeyIntro) + " " + body : kBookOpen + body + kBookClose;
      sample.question = cell.question;
      sample.answer_prefix = cell.answer_prefix;
      sample.references = cell.references;
      sample.metric = cell.metric;
      sample.max_new_tokens = cell.max_new_tokens;
      sample.meta = {{"depth", depth}, {"length", length}, {"variant", options.variant}};
      samples.push_back(std::move(sample));
    }
  }
  return samples;
}

}  // namespace kvsqueeze::eval
