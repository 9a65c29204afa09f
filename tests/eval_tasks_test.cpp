// Task generators: the shipped haystack, NIAH (kvpress style) and RULER's 13 tasks. Checks are
// structural and recomputed from the generated text itself: references occur in the context,
// prompts fit their token budget, the vt chain resolves to its answer, cwe/fwe answers are the
// most frequent words, and generation is reproducible from the seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"
#include "kvsqueeze/gguf.h"
#include "kvsqueeze/tokenizer.h"
#include "eval/task_random.h"
#include "eval/task_text.h"
#include "test_paths.h"

using namespace kvsqueeze;
using namespace kvsqueeze::eval;

namespace {

struct LoadedTokenizer {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
};

const Tokenizer& stories_tokenizer() {
  static LoadedTokenizer loaded = [] {
    LoadedTokenizer l;
    l.file = GgufFile::open(test_paths::stories260k());
    l.tokenizer = Tokenizer::from_gguf(*l.file);
    return l;
  }();
  return *loaded.tokenizer;
}

int64_t tokens_of(const Tokenizer& tokenizer, const std::string& text) {
  return static_cast<int64_t>(tokenizer.encode(text, false, false).size());
}

int64_t prompt_tokens(const Tokenizer& tokenizer, const Sample& s) {
  return tokens_of(tokenizer, s.context + s.question + s.answer_prefix);
}

// Expects `call` to throw kvsqueeze::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "no Error thrown";
  } catch (const Error& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

std::filesystem::path scratch(const std::string& name) {
  auto dir = std::filesystem::path(test_paths::scratch_dir()) / ("eval-tasks" + test_paths::process_tag()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

bool same_samples(const std::vector<Sample>& a, const std::vector<Sample>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].id != b[i].id || a[i].context != b[i].context || a[i].question != b[i].question ||
        a[i].answer_prefix != b[i].answer_prefix || a[i].references != b[i].references || a[i].meta != b[i].meta)
      return false;
  return true;
}

// A small SQuAD v2 file: 3 articles x 4 paragraphs, one answerable and one impossible question each.
std::string squad_file() {
  static const std::string path = [] {
    nlohmann::json data = nlohmann::json::array();
    for (int a = 0; a < 3; ++a) {
      nlohmann::json paragraphs = nlohmann::json::array();
      for (int p = 0; p < 4; ++p) {
        const std::string tag = std::to_string(a) + "x" + std::to_string(p);
        std::string context = "Paragraph " + tag + " says that the keeper of lighthouse " + tag + " is named Ada" + tag + ".";
        for (int r = 0; r < 6; ++r) context += " The weather near lighthouse " + tag + " was calm on day " + std::to_string(r) + ".";
        paragraphs.push_back({{"context", context},
                              {"qas",
                               {{{"question", "Who keeps lighthouse " + tag + "?"},
                                 {"answers", {{{"text", "Ada" + tag}, {"answer_start", 0}}}},
                                 {"is_impossible", false}},
                                {{"question", "Who painted lighthouse " + tag + "?"},
                                 {"answers", nlohmann::json::array()},
                                 {"is_impossible", true}}}}});
      }
      data.push_back({{"title", "Article" + std::to_string(a)}, {"paragraphs", paragraphs}});
    }
    auto file = scratch("squad") / "squad.json";
    write_file(file, nlohmann::json{{"version", "v2.0"}, {"data", data}}.dump());
    return file.string();
  }();
  return path;
}

// A small HotpotQA dev file: 6 questions with two supporting paragraphs and two distractors each.
std::string hotpot_file() {
  static const std::string path = [] {
    nlohmann::json root = nlohmann::json::array();
    for (int q = 0; q < 6; ++q) {
      const std::string tag = std::to_string(q);
      nlohmann::json context = nlohmann::json::array();
      context.push_back({"Town " + tag, {"Town " + tag + " lies on river Ro" + tag + ". ", "It is old."}});
      context.push_back({"Ro" + tag, {"The river Ro" + tag + " ends in lake Mere" + tag + ". ", "It is long."}});
      context.push_back({"Hill " + tag, {"Hill " + tag + " is green. ", "Sheep graze there."}});
      context.push_back({"Road " + tag, {"Road " + tag + " is straight."}});
      root.push_back({{"_id", tag},
                      {"question", "Into which lake flows the river of town " + tag + "?"},
                      {"answer", "Mere" + tag},
                      {"context", context}});
    }
    auto file = scratch("hotpot") / "hotpot.json";
    write_file(file, root.dump());
    return file.string();
  }();
  return path;
}

RulerOptions ruler_options(int64_t length, int64_t samples = 2, uint64_t seed = 42) {
  RulerOptions options;
  options.length = length;
  options.samples_per_task = samples;
  options.seed = seed;
  return options;
}

RulerOptions with_qa_file(RulerOptions options, const std::string& task) {
  if (task == "qa_1") options.qa_file = squad_file();
  if (task == "qa_2") options.qa_file = hotpot_file();
  return options;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Helpers: the seeded RNG, the sentence splitter and the length search

TEST(EvalTaskHelpers, RngIsTheStandardEngineWithPortableDraws) {
  // The C++ standard fixes mt19937_64's 10000th output for the default seed 5489.
  TaskRng rng(5489);
  for (int i = 0; i < 9999; ++i) rng.next();
  EXPECT_EQ(rng.next(), 9981545732273789042ULL);

  TaskRng a(42), b(42), c(43);
  std::vector<int64_t> draws_a, draws_b, draws_c;
  for (int i = 0; i < 1000; ++i) {
    draws_a.push_back(a.uniform_int(10, 19));
    draws_b.push_back(b.uniform_int(10, 19));
    draws_c.push_back(c.uniform_int(10, 19));
  }
  EXPECT_EQ(draws_a, draws_b);
  EXPECT_NE(draws_a, draws_c);
  std::map<int64_t, int> histogram;
  for (int64_t d : draws_a) ++histogram[d];
  ASSERT_EQ(histogram.size(), 10u);  // every value of [10, 19], none outside
  EXPECT_EQ(histogram.begin()->first, 10);
  EXPECT_EQ(histogram.rbegin()->first, 19);
  for (const auto& [value, n] : histogram) EXPECT_GT(n, 50) << value;  // ~100 each

  const auto picked = a.sample_indices(1000, 40);
  EXPECT_EQ(std::set<int64_t>(picked.begin(), picked.end()).size(), 40u);
  EXPECT_TRUE(std::all_of(picked.begin(), picked.end(), [](int64_t i) { return i >= 0 && i < 1000; }));
  const auto all = a.sample_indices(7, 7);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()), (std::set<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  std::vector<int> items = {1, 2, 3, 4, 5, 6, 7, 8};
  a.shuffle(items);
  EXPECT_EQ(std::set<int>(items.begin(), items.end()).size(), 8u);

  EXPECT_NE(derive_seed(42, "ruler/vt", 0), derive_seed(42, "ruler/vt", 1));
  EXPECT_NE(derive_seed(42, "ruler/vt", 0), derive_seed(42, "ruler/cwe", 0));
  EXPECT_NE(derive_seed(42, "ruler/vt", 0), derive_seed(43, "ruler/vt", 0));
}

TEST(EvalTaskHelpers, SentencesEndAtPunctuationBeforeANewSentence) {
  const auto sentences = split_sentences(
      "Mr. Smith came. 'Oh dear!' said Alice. 'I shall be late!' The end? Yes... and so on. Done");
  EXPECT_EQ(sentences, (std::vector<std::string>{"Mr. Smith came.", "'Oh dear!' said Alice.", "'I shall be late!'",
                                                 "The end?", "Yes... and so on.", "Done"}));
  EXPECT_EQ(split_words("  a\n\tb  c "), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(EvalTaskHelpers, FitFindsTheLargestCountWithinBudget) {
  // A linear count: 3n + 17 <= 1000 holds up to n = 327.
  int calls = 0;
  auto linear = [&](int64_t n) { return ++calls, 3 * n + 17; };
  EXPECT_EQ(fit_units(linear, 1000, 25, int64_t{1} << 40), 327);
  EXPECT_LT(calls, 20);
  // Steps of 40 tokens per 7 units (a haystack unit that is several sentences).
  auto steps = [](int64_t n) { return 40 * (n / 7) + 5; };
  EXPECT_EQ(fit_units(steps, 1000, 500, int64_t{1} << 40), 7 * 24 + 6);  // 40*24+5 = 965 <= 1000 < 1005
  EXPECT_EQ(fit_units(linear, 1000, 25, 100), 100);                       // capped by max_units
  EXPECT_EQ(fit_units(linear, 10, 25, 100), 0);                           // one unit is over budget
}

// ---------------------------------------------------------------------------------------------
// Haystack

TEST(EvalHaystack, DefaultIsTheShippedBook) {
  const std::string& text = default_haystack();
  EXPECT_GT(text.size(), 100000u);
  EXPECT_NE(text.find("Alice was beginning to get very tired"), std::string::npos);
  EXPECT_TRUE(std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 128; }));
  EXPECT_EQ(load_haystack(""), text);
}

TEST(EvalHaystack, FolderIsItsTxtFilesInNameOrder) {
  auto dir = scratch("haystack-dir");
  write_file(dir / "b.txt", "Second file.");
  write_file(dir / "a.txt", "First file.");
  write_file(dir / "c.md", "Not a text file.");
  write_file(dir / "d.txt", "  \n");
  const std::string text = load_haystack(dir.string());
  EXPECT_EQ(text, "First file.\n\nSecond file.");
}

TEST(EvalHaystack, MissingOrEmptyFolderIsAnError) {
  auto dir = scratch("haystack-empty");
  expect_error([&] { load_haystack((dir / "nowhere").string()); }, {"nowhere", "does not exist"});
  write_file(dir / "notes.md", "text");
  expect_error([&] { load_haystack(dir.string()); }, {dir.string(), ".txt"});
}

// ---------------------------------------------------------------------------------------------
// NIAH

TEST(EvalNiah, SingleNeedleSitsAtItsDepthOnASentenceBoundary) {
  const Tokenizer& tok = stories_tokenizer();
  const NiahOptions options{.lengths = {1024, 2048}, .depths = {0, 25, 50, 75, 100}};
  const auto samples = niah_samples(options, tok);
  ASSERT_EQ(samples.size(), 10u);
  const std::string needle = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.";
  for (const auto& s : samples) {
    const int64_t length = s.meta.at("length").get<int64_t>();
    const double depth = s.meta.at("depth").get<double>();
    EXPECT_EQ(s.task, "niah");
    EXPECT_EQ(s.id, "L" + std::to_string(length) + "_D" + std::to_string(static_cast<int>(depth)));
    EXPECT_EQ(s.metric, "niah_rouge");
    ASSERT_EQ(s.references, std::vector<std::string>{needle});
    EXPECT_NE(s.question.find("San Francisco"), std::string::npos);
    // kvpress's budget: haystack = length - needle - 150 tokens, so the prompt stays under length.
    const int64_t tokens = prompt_tokens(tok, s);
    EXPECT_LE(tokens, length) << s.id;
    EXPECT_GE(tokens, length - 200) << s.id;

    const std::string open = "This is a very long story book: <book> ", close = " </book>.";
    ASSERT_EQ(s.context.rfind(open, 0), 0u);
    ASSERT_EQ(s.context.substr(s.context.size() - close.size()), close);
    const std::string body = s.context.substr(open.size(), s.context.size() - open.size() - close.size());
    const size_t at = body.find(needle);
    ASSERT_NE(at, std::string::npos) << s.id;
    EXPECT_EQ(body.find(needle, at + 1), std::string::npos);
    // A sentence boundary: the start of the text, or a space after the end of a sentence.
    if (at > 0) {
      ASSERT_GE(at, 2u);
      EXPECT_EQ(body[at - 1], ' ');
      EXPECT_NE(std::string(".!?'\")").find(body[at - 2]), std::string::npos) << body.substr(at - 20, 40);
    }
    // The needle's place in tokens: at or before the requested depth, by less than a long sentence.
    std::string haystack = body;
    haystack.erase(at == 0 ? 0 : at - 1, needle.size() + 1);
    const double total = static_cast<double>(tokens_of(tok, haystack));
    const double before = at == 0 ? 0.0 : static_cast<double>(tokens_of(tok, body.substr(0, at - 1)));
    EXPECT_LE(before, total * depth / 100.0 + 3) << s.id;
    EXPECT_GE(before, total * depth / 100.0 - 250) << s.id;
  }
  EXPECT_EQ(samples[0].context.rfind("This is a very long story book: <book> The best thing", 0), 0u);  // depth 0
}

TEST(EvalNiah, SameSeedSameSamplesOtherSeedOtherValues) {
  const Tokenizer& tok = stories_tokenizer();
  for (const std::string variant : {"single", "multi", "passkey"}) {
    NiahOptions options;
    options.variant = variant;
    options.lengths = {1024};
    options.depths = {10, 60};
    const auto a = niah_samples(options, tok), b = niah_samples(options, tok);
    EXPECT_TRUE(same_samples(a, b)) << variant;
    options.seed = 7;
    const auto c = niah_samples(options, tok);
    if (variant == "single") {
      EXPECT_TRUE(same_samples(a, c));  // nothing random in the single needle
    } else {
      EXPECT_NE(a[0].references, c[0].references) << variant;
    }
  }
}

TEST(EvalNiah, MultiAsksEveryNeedle) {
  const Tokenizer& tok = stories_tokenizer();
  const NiahOptions options{.lengths = {2048}, .depths = {0, 40, 100}, .variant = "multi", .n_needles = 4};
  for (const auto& s : niah_samples(options, tok)) {
    EXPECT_EQ(s.task, "niah/multi");
    EXPECT_EQ(s.metric, "string_match_all");
    ASSERT_EQ(s.references.size(), 4u);
    EXPECT_EQ(std::set<std::string>(s.references.begin(), s.references.end()).size(), 4u);
    std::regex needle_re("The special magic ([A-Za-z]+) number is: ([0-9]{7})\\.");
    std::vector<std::string> cities;
    std::vector<std::string> numbers;
    for (auto it = std::sregex_iterator(s.context.begin(), s.context.end(), needle_re); it != std::sregex_iterator(); ++it) {
      cities.push_back((*it)[1]);
      numbers.push_back((*it)[2]);
    }
    EXPECT_EQ(numbers, s.references) << "needles in order of depth";
    for (const auto& city : cities) EXPECT_NE(s.question.find(city), std::string::npos) << s.question;
    EXPECT_LE(prompt_tokens(tok, s), 2048);
    // The first needle at the requested depth (or before it, at a sentence end).
    const double depth = s.meta.at("depth").get<double>();
    const size_t first = s.context.find("The special magic");
    const double fraction = double(tokens_of(tok, s.context.substr(0, first))) / double(tokens_of(tok, s.context));
    EXPECT_LE(fraction, depth / 100.0 + 0.02);
    EXPECT_GE(fraction, depth / 100.0 - 0.2);
  }
}

TEST(EvalNiah, PasskeyInRepeatedFiller) {
  const Tokenizer& tok = stories_tokenizer();
  const NiahOptions options{.lengths = {1024}, .depths = {50}, .variant = "passkey", .passkey_digits = 12};
  const auto samples = niah_samples(options, tok);
  ASSERT_EQ(samples.size(), 1u);
  const auto& s = samples[0];
  ASSERT_EQ(s.references.size(), 1u);
  const std::string key = s.references[0];
  EXPECT_EQ(key.size(), 12u);
  EXPECT_TRUE(std::all_of(key.begin(), key.end(), ::isdigit));
  EXPECT_NE(s.context.find("The pass key is " + key + ". Remember it. " + key + " is the pass key."), std::string::npos);
  EXPECT_NE(s.context.find("The grass is green. The sky is blue."), std::string::npos);
  EXPECT_EQ(s.answer_prefix, "The pass key is");
  EXPECT_EQ(s.metric, "string_match_all");
  EXPECT_LE(prompt_tokens(tok, s), 1024);
}

TEST(EvalNiah, BadOptionsAreErrors) {
  const Tokenizer& tok = stories_tokenizer();
  NiahOptions options;
  options.lengths = {100};
  expect_error([&] { niah_samples(options, tok); }, {"100", "too small", "needle"});
  options.lengths = {1024};
  options.variant = "triple";
  expect_error([&] { niah_samples(options, tok); }, {"triple", "single, multi, passkey"});
  options.variant = "single";
  options.depths = {120};
  expect_error([&] { niah_samples(options, tok); }, {"120", "0..100"});
  options.depths = {50};
  options.haystack_dir = (scratch("niah-missing") / "absent").string();
  expect_error([&] { niah_samples(options, tok); }, {"absent"});
}

// ---------------------------------------------------------------------------------------------
// RULER

TEST(EvalRuler, ThirteenTasksAndUnknownNamesListThem) {
  const auto names = ruler_task_names();
  EXPECT_EQ(names.size(), 13u);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), 13u);
  expect_error([&] { ruler_samples("niah_single_9", ruler_options(4096), stories_tokenizer()); },
               {"niah_single_9", "niah_single_1", "vt", "cwe", "fwe", "qa_2"});
}

TEST(EvalRuler, EveryTaskFitsItsLengthAndItsReferencesAreInTheContext) {
  const Tokenizer& tok = stories_tokenizer();
  const std::map<std::string, std::pair<int64_t, std::string>> expected = {
      {"niah", {128, "string_match_all"}}, {"vt", {30, "string_match_all"}}, {"cwe", {120, "string_match_all"}},
      {"fwe", {50, "string_match_all"}},   {"qa", {32, "string_match_part"}}};
  for (const auto& task : ruler_task_names()) {
    // stories260K's 512-token vocabulary spends ~6 tokens on "12. word": cwe's 300 common-word
    // entries alone need more than 4096 of them (RULER's lighter cwe below 4K fits 2048).
    for (int64_t length : {int64_t{2048}, task == "cwe" ? int64_t{8192} : int64_t{4096}}) {
      const auto samples = ruler_samples(task, with_qa_file(ruler_options(length), task), tok);
      ASSERT_EQ(samples.size(), 2u) << task;
      const auto& [max_new, metric] = expected.at(task.substr(0, task.find('_')));
      for (const auto& s : samples) {
        SCOPED_TRACE(task + " " + s.id);
        EXPECT_EQ(s.task, "ruler/" + task);
        EXPECT_EQ(s.max_new_tokens, max_new);
        EXPECT_EQ(s.metric, metric);
        const int64_t tokens = prompt_tokens(tok, s);
        EXPECT_EQ(tokens, s.meta.at("prompt_tokens").get<int64_t>());
        EXPECT_LE(tokens + max_new, length);
        // The haystack fills the budget to within 2% plus one unit (a document, a noise line).
        EXPECT_GE(tokens + max_new, length * 9 / 10);
        ASSERT_FALSE(s.references.empty());
        for (const auto& ref : s.references) EXPECT_NE(s.context.find(ref), std::string::npos) << ref;
        EXPECT_FALSE(s.question.empty());
        EXPECT_FALSE(s.answer_prefix.empty());
      }
    }
  }
}

TEST(EvalRuler, SameSeedSameSamplesOtherSeedOtherSamples) {
  const Tokenizer& tok = stories_tokenizer();
  for (const auto& task : ruler_task_names()) {
    const auto a = ruler_samples(task, with_qa_file(ruler_options(2048, 3), task), tok);
    const auto b = ruler_samples(task, with_qa_file(ruler_options(2048, 3), task), tok);
    EXPECT_TRUE(same_samples(a, b)) << task;
    const auto c = ruler_samples(task, with_qa_file(ruler_options(2048, 3, 43), task), tok);
    EXPECT_NE(a[0].context, c[0].context) << task;
    EXPECT_NE(a[0].context, a[1].context) << task;
    EXPECT_EQ(a[2].id, "L2048_2");
  }
}

TEST(EvalRuler, NeedleTemplatesAndSplit) {
  const Tokenizer& tok = stories_tokenizer();
  // One answer: RULER's singular wording; kvpress's split at "What is"/"The special magic".
  const auto single = ruler_samples("niah_single_1", ruler_options(2048, 1), tok)[0];
  EXPECT_EQ(single.context.rfind("A special magic number is hidden within the following text.", 0), 0u);
  EXPECT_EQ(single.question.rfind("What is the special magic number for ", 0), 0u) << single.question;
  EXPECT_EQ(single.answer_prefix.rfind("The special magic number for ", 0), 0u) << single.answer_prefix;
  const std::string ending = "mentioned in the provided text is";
  EXPECT_EQ(single.answer_prefix.substr(single.answer_prefix.size() - ending.size()), ending);
  ASSERT_EQ(single.references.size(), 1u);
  EXPECT_EQ(single.references[0].size(), 7u);
  EXPECT_NE(single.context.find("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"),
            std::string::npos);

  // A UUID value in the essay haystack.
  const auto uuid = ruler_samples("niah_single_3", ruler_options(2048, 1), tok)[0];
  ASSERT_EQ(uuid.references.size(), 1u);
  EXPECT_TRUE(std::regex_match(uuid.references[0], std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))
      << uuid.references[0];
  EXPECT_NE(uuid.context.find("Alice"), std::string::npos);

  // Several answers: plural wording, all asked.
  const auto multivalue = ruler_samples("niah_multivalue", ruler_options(4096, 1), tok)[0];
  EXPECT_EQ(multivalue.references.size(), 4u);
  EXPECT_EQ(multivalue.question.rfind("What are all the special magic numbers for ", 0), 0u);
  const auto multiquery = ruler_samples("niah_multiquery", ruler_options(4096, 1), tok)[0];
  EXPECT_EQ(multiquery.references.size(), 4u);
  EXPECT_NE(multiquery.question.find(", and "), std::string::npos);
  const auto multikey = ruler_samples("niah_multikey_1", ruler_options(4096, 1), tok)[0];
  std::regex needle_re("One of the special magic numbers for ([a-z' -]+) is: ([0-9]+)\\.");
  int needles = 0;
  for (auto it = std::sregex_iterator(multikey.context.begin(), multikey.context.end(), needle_re); it != std::sregex_iterator(); ++it)
    ++needles;
  EXPECT_EQ(needles, 4);
}

TEST(EvalRuler, MultikeyDistractorKeysAreDistinct) {
  const Tokenizer& tok = stories_tokenizer();
  for (const std::string task : {"niah_multikey_2", "niah_multikey_3"}) {
    for (const auto& s : ruler_samples(task, ruler_options(4096, 2), tok)) {
      std::regex needle_re("One of the special magic (numbers|uuids) for ([^\n]+?) is: ([^\n]+)\\.");
      std::map<std::string, std::string> value_of;
      int lines = 0;
      for (auto it = std::sregex_iterator(s.context.begin(), s.context.end(), needle_re); it != std::sregex_iterator(); ++it) {
        ++lines;
        EXPECT_TRUE(value_of.emplace((*it)[2], (*it)[3]).second) << "key repeated: " << (*it)[2];
      }
      EXPECT_GT(lines, 20) << task;
      // The asked key is in the haystack once, with the reference as its value.
      const std::string prefix = "What is the special magic " + std::string(task == "niah_multikey_2" ? "number" : "uuid") + " for ";
      ASSERT_EQ(s.question.rfind(prefix, 0), 0u) << s.question;
      const std::string key = s.question.substr(prefix.size(), s.question.find(" mentioned") - prefix.size());
      ASSERT_TRUE(value_of.count(key)) << key;
      EXPECT_EQ(std::vector<std::string>{value_of[key]}, s.references);
    }
  }
}

TEST(EvalRuler, VariableChainResolvesToTheReferences) {
  const Tokenizer& tok = stories_tokenizer();
  for (const auto& s : ruler_samples("vt", ruler_options(4096, 3), tok)) {
    // The one-shot example comes first; the task's own text starts at the last instruction.
    const std::string text = s.context.substr(s.context.rfind("Memorize and track the chain(s)"));
    EXPECT_NE(s.context.find("Memorize and track the chain(s)"), s.context.rfind("Memorize and track the chain(s)"));
    std::smatch m;
    ASSERT_TRUE(std::regex_search(s.question, m, std::regex("assigned the value ([0-9]+) in the text above")));
    const std::string value = m[1];
    std::map<std::string, std::string> assigned;  // variable -> what it is assigned
    std::regex assign_re("VAR ([A-Z]+) = (VAR [A-Z]+|[0-9]+)");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), assign_re); it != std::sregex_iterator(); ++it)
      assigned[(*it)[1]] = (*it)[2];
    std::set<std::string> holding;
    for (bool grew = true; grew;) {
      grew = false;
      for (const auto& [var, source] : assigned)
        if (!holding.count(var) && (source == value || (source.rfind("VAR ", 0) == 0 && holding.count(source.substr(4)))))
          grew = holding.insert(var).second;
    }
    EXPECT_EQ(holding, std::set<std::string>(s.references.begin(), s.references.end()));
    EXPECT_EQ(s.references.size(), 5u);
    EXPECT_NE(s.answer_prefix.find("5 variables are assigned the value " + value), std::string::npos);
  }
}

TEST(EvalRuler, CommonWordsAreTheTenMostFrequent) {
  const Tokenizer& tok = stories_tokenizer();
  for (int64_t length : {2048, 8192}) {
    for (const auto& s : ruler_samples("cwe", ruler_options(length, 2), tok)) {
      const std::string list = s.context.substr(s.context.rfind("Below is a numbered list"));
      std::map<std::string, int> count;
      std::regex item_re("[0-9]+\\. ([^0-9\n]+?)(?= [0-9]+\\. |\n)");
      for (auto it = std::sregex_iterator(list.begin(), list.end(), item_re); it != std::sregex_iterator(); ++it)
        ++count[(*it)[1]];
      std::vector<std::pair<int, std::string>> ranked;
      for (const auto& [word, n] : count) ranked.emplace_back(n, word);
      std::sort(ranked.rbegin(), ranked.rend());
      ASSERT_GT(ranked.size(), 10u);
      EXPECT_GT(ranked[9].first, ranked[10].first);
      EXPECT_EQ(ranked[0].first, length < 4096 ? 6 : 30);
      std::set<std::string> top;
      for (int i = 0; i < 10; ++i) top.insert(ranked[static_cast<size_t>(i)].second);
      EXPECT_EQ(top, std::set<std::string>(s.references.begin(), s.references.end()));
    }
  }
}

TEST(EvalRuler, FrequentWordsAreTheThreeMostFrequentCodedWords) {
  const Tokenizer& tok = stories_tokenizer();
  for (const auto& s : ruler_samples("fwe", ruler_options(4096, 2), tok)) {
    const size_t start = s.context.find("coded words. ") + 13;
    const std::string coded = s.context.substr(start, s.context.find("\n", start) - start);
    std::map<std::string, int> count;
    std::istringstream words(coded);
    for (std::string w; words >> w;) ++count[w];
    EXPECT_GT(count["..."], 0);
    count.erase("...");
    std::vector<std::pair<int, std::string>> ranked;
    for (const auto& [word, n] : count) ranked.emplace_back(n, word);
    std::sort(ranked.rbegin(), ranked.rend());
    ASSERT_GT(ranked.size(), 3u);
    EXPECT_GT(ranked[2].first, ranked[3].first);
    EXPECT_EQ(s.references, (std::vector<std::string>{ranked[0].second, ranked[1].second, ranked[2].second}));
  }
}

TEST(EvalRuler, QaPutsTheGoldDocumentAmongDistractors) {
  const Tokenizer& tok = stories_tokenizer();
  for (const std::string task : {"qa_1", "qa_2"}) {
    for (const auto& s : ruler_samples(task, with_qa_file(ruler_options(2048, 3), task), tok)) {
      EXPECT_EQ(s.context.rfind("Answer the question based on the given documents.", 0), 0u);
      EXPECT_EQ(s.question.rfind("Answer the question based on the given documents.", 0), 0u);
      EXPECT_EQ(s.answer_prefix, "Answer:");
      EXPECT_NE(s.context.find("Document 1:\n"), std::string::npos);
      EXPECT_NE(s.context.find("Document 4:\n"), std::string::npos);
      ASSERT_EQ(s.references.size(), 1u);
      EXPECT_NE(s.context.find(s.references[0]), std::string::npos);
      // The asked question's own gold document is there (its tag is in the question).
      const std::string tag = s.question.substr(s.question.find_last_of(' ', s.question.find('?')) + 1,
                                                s.question.find('?') - s.question.find_last_of(' ', s.question.find('?')) - 1);
      EXPECT_NE(s.context.find(tag), std::string::npos);
    }
  }
}

TEST(EvalRuler, QaFileErrors) {
  const Tokenizer& tok = stories_tokenizer();
  expect_error([&] { ruler_samples("qa_1", ruler_options(1024), tok); }, {"qa_1", "SQuAD"});
  expect_error([&] { ruler_samples("qa_2", ruler_options(1024), tok); }, {"qa_2", "HotpotQA"});
  auto dir = scratch("qa-bad");
  auto options = ruler_options(1024);
  options.qa_file = (dir / "absent.json").string();
  expect_error([&] { ruler_samples("qa_1", options, tok); }, {"absent.json"});
  write_file(dir / "broken.json", "{\"data\": [");
  options.qa_file = (dir / "broken.json").string();
  expect_error([&] { ruler_samples("qa_1", options, tok); }, {"broken.json", "SQuAD"});
  write_file(dir / "shape.json", "{\"data\": [{\"paragraphs\": [{\"context\": \"x\"}]}]}");
  options.qa_file = (dir / "shape.json").string();
  expect_error([&] { ruler_samples("qa_1", options, tok); }, {"shape.json", "qas"});
  // A HotpotQA question without documents is not answerable (it divided by zero, found by fuzzing).
  write_file(dir / "no_documents.json", "[{\"_id\":\"h\",\"question\":\"Q?\",\"answer\":\"A\",\"context\":[]}]");
  options.qa_file = (dir / "no_documents.json").string();
  expect_error([&] { ruler_samples("qa_2", options, tok); }, {"no_documents.json", "no answerable question"});
  // A SQuAD file given for HotpotQA.
  options.qa_file = squad_file();
  expect_error([&] { ruler_samples("qa_2", options, tok); }, {"HotpotQA"});
}

TEST(EvalRuler, TooShortLengthAndMissingHaystackAreErrors) {
  const Tokenizer& tok = stories_tokenizer();
  expect_error([&] { ruler_samples("niah_single_1", ruler_options(150), tok); }, {"niah_single_1", "150", "too small"});
  expect_error([&] { ruler_samples("fwe", ruler_options(200), tok); }, {"fwe", "200", "too small"});
  auto options = ruler_options(2048);
  options.haystack_dir = (scratch("ruler-missing") / "essays").string();
  expect_error([&] { ruler_samples("niah_single_2", options, tok); }, {"essays"});
}

TEST(EvalTasksDefaultModel, GemmaPromptsFitAt4096) {
  const std::string path = test_paths::gemma_model();
  if (path.empty()) GTEST_SKIP() << "default model not downloaded (scripts/get_default_model.sh)";
  auto file = GgufFile::open(path);
  auto tok = Tokenizer::from_gguf(*file);
  for (const std::string task : {"niah_single_2", "niah_multikey_3", "vt", "cwe", "fwe"}) {
    for (const auto& s : ruler_samples(task, ruler_options(4096, 1), *tok)) {
      const int64_t tokens = prompt_tokens(*tok, s);
      EXPECT_LE(tokens + s.max_new_tokens, 4096) << task;
      EXPECT_GE(tokens + s.max_new_tokens, 3072) << task;
      for (const auto& ref : s.references) EXPECT_NE(s.context.find(ref), std::string::npos) << task;
    }
  }
  const NiahOptions options{.lengths = {4096}, .depths = {0, 50, 100}};
  for (const auto& s : niah_samples(options, *tok)) {
    EXPECT_LE(prompt_tokens(*tok, s), 4096);
    EXPECT_GE(prompt_tokens(*tok, s), 4096 - 200);
    EXPECT_NE(s.context.find(s.references[0]), std::string::npos);
  }
}
