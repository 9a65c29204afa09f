// RULER's question answering (scripts/data/synthetic/qa.py): the documents of one question (its
// gold paragraph, for SQuAD also the other paragraphs of its article) among random distractor
// documents, as many as the length allows. qa_1 reads SQuAD v2 JSON, qa_2 HotpotQA dev JSON.
// Template reproduced from RULER's constants.py (Apache-2.0, NVIDIA).
#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "kvsqueeze/error.h"
#include "ruler_common.h"
#include "task_text.h"

namespace kvsqueeze::eval {

namespace {

constexpr const char* kTemplate =
    "Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\n"
    "The following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only give "
    "me the answer and do not output any other words.\n\nQuestion: {query}";
constexpr const char* kAnswerPrefix = " Answer:";

struct QaItem {
  std::string question;
  std::vector<std::string> answers;
  std::vector<int64_t> gold;   // document indices
  std::vector<int64_t> more;   // SQuAD: the article's other paragraphs
};

struct QaSet {
  std::vector<std::string> documents;  // sorted, distinct (RULER: sorted(set(...)))
  std::vector<QaItem> items;
};

std::map<std::string, int64_t> index_documents(std::vector<std::string>& documents) {
  std::sort(documents.begin(), documents.end());
  documents.erase(std::unique(documents.begin(), documents.end()), documents.end());
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < documents.size(); ++i) index[documents[i]] = static_cast<int64_t>(i);
  return index;
}

// SQuAD v2: {"data": [{"paragraphs": [{"context", "qas": [{"question", "answers": [{"text"}], "is_impossible"}]}]}]}
QaSet read_squad(const nlohmann::json& root) {
  QaSet set;
  const auto& data = root.at("data");
  for (const auto& article : data)
    for (const auto& paragraph : article.at("paragraphs")) set.documents.push_back(paragraph.at("context").get<std::string>());
  const auto index = index_documents(set.documents);
  for (const auto& article : data) {
    std::vector<int64_t> article_docs;
    for (const auto& paragraph : article.at("paragraphs"))
      article_docs.push_back(index.at(paragraph.at("context").get<std::string>()));
    for (const auto& paragraph : article.at("paragraphs")) {
      const int64_t gold = index.at(paragraph.at("context").get<std::string>());
      for (const auto& qa : paragraph.at("qas")) {
        if (qa.value("is_impossible", false)) continue;
        QaItem item;
        item.question = qa.at("question").get<std::string>();
        for (const auto& answer : qa.at("answers")) item.answers.push_back(answer.at("text").get<std::string>());
        if (item.answers.empty()) continue;
        item.gold = {gold};
        for (int64_t doc : article_docs)
          if (doc != gold) item.more.push_back(doc);
        set.items.push_back(std::move(item));
      }
    }
  }
  return set;
}

// HotpotQA: [{"question", "answer", "context": [[title, [sentence, ...]], ...]}]
QaSet read_hotpotqa(const nlohmann::json& root) {
  QaSet set;
  auto document = [](const nlohmann::json& entry) {
    std::string text = entry.at(0).get<std::string>() + "\n";
    for (const auto& sentence : entry.at(1)) text += sentence.get<std::string>();
    return text;
  };
  for (const auto& item : root)
    for (const auto& entry : item.at("context")) set.documents.push_back(document(entry));
  const auto index = index_documents(set.documents);
  for (const auto& entry : root) {
    QaItem item;
    item.question = entry.at("question").get<std::string>();
    item.answers = {entry.at("answer").get<std::string>()};
    for (const auto& doc : entry.at("context")) item.gold.push_back(index.at(document(doc)));
    if (item.gold.empty()) continue;  // no document to find the answer in
    set.items.push_back(std::move(item));
  }
  return set;
}

std::shared_ptr<const QaSet> load_qa(const std::string& task, const std::string& path) {
  const bool squad = task == "qa_1";
  const std::string format = squad ? "SQuAD v2 JSON ({\"data\": [{\"paragraphs\": [{\"context\", \"qas\"}]}]})"
                                   : "HotpotQA dev JSON ([{\"question\", \"answer\", \"context\"}])";
  if (path.empty()) throw Error("RULER " + task + " needs a question file: give a " + format + " as the qa file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("RULER " + task + ": cannot read the qa file '" + path + "' (expected " + format + ")");
  auto set = std::make_shared<QaSet>();
  try {
    const nlohmann::json root = nlohmann::json::parse(in);
    if (!squad && !root.is_array())
      throw Error("RULER " + task + ": the qa file '" + path + "' is not " + format + ": its top level is not a list");
    *set = squad ? read_squad(root) : read_hotpotqa(root);
  } catch (const nlohmann::json::exception& e) {
    throw Error("RULER " + task + ": the qa file '" + path + "' is not " + format + ": " + e.what());
  }
  if (set->items.empty())
    throw Error("RULER " + task + ": the qa file '" + path + "' has no answerable question (expected " + format + ")");
  return set;
}

}  // namespace

RulerGenerator ruler_qa_generator(const std::string& task, const RulerOptions& options, RulerTaskSpec& spec) {
  spec.family = "qa";
  spec.max_new_tokens = 32;
  spec.metric = "string_match_part";
  spec.increment = 10;
  std::shared_ptr<const QaSet> set = load_qa(task, options.qa_file);

  return [set](int64_t units, TaskRng& rng) {
    const QaItem& item = set->items[rng.below(set->items.size())];
    const int64_t total = static_cast<int64_t>(set->documents.size());
    std::vector<int64_t> chosen = item.gold;
    const int64_t wanted = std::max<int64_t>(units, static_cast<int64_t>(item.gold.size()));
    if (wanted < total) {
      const int64_t missing = wanted - static_cast<int64_t>(item.gold.size());
      if (missing > static_cast<int64_t>(item.more.size())) {
        // The article's paragraphs and then random others.
        chosen.insert(chosen.end(), item.more.begin(), item.more.end());
        std::vector<char> taken(static_cast<size_t>(total), 0);
        for (int64_t doc : chosen) taken[static_cast<size_t>(doc)] = 1;
        std::vector<int64_t> others;
        for (int64_t doc = 0; doc < total; ++doc)
          if (!taken[static_cast<size_t>(doc)]) others.push_back(doc);
        const int64_t extra = std::min<int64_t>(wanted - static_cast<int64_t>(chosen.size()), static_cast<int64_t>(others.size()));
        for (int64_t i : rng.sample_indices(static_cast<int64_t>(others.size()), extra))
          chosen.push_back(others[static_cast<size_t>(i)]);
      } else {
        for (int64_t i : rng.sample_indices(static_cast<int64_t>(item.more.size()), missing))
          chosen.push_back(item.more[static_cast<size_t>(i)]);
      }
    } else {
      // More documents than the file has: all of them, repeated (as RULER does).
      chosen.clear();
      for (int64_t i = 0; i < wanted; ++i) chosen.push_back(i % total);
    }
    rng.shuffle(chosen);

    std::vector<std::string> parts;
    for (size_t i = 0; i < chosen.size(); ++i)
      parts.push_back("Document " + std::to_string(i + 1) + ":\n" + set->documents[static_cast<size_t>(chosen[i])]);
    const std::string full = replace_all(std::string(kTemplate) + kAnswerPrefix, "{query}", item.question);
    const size_t at = full.find("{context}");
    return RulerPrompt{full.substr(0, at) + join(parts, "\n\n") + full.substr(at + 9), item.answers};
  };
}

}  // namespace kvsqueeze::eval
