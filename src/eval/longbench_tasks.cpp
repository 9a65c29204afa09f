// LongBench samples from the official JSONL files: the official prompt, truncated in the middle
// as LongBench pred.py does, split at the end of the context text (kvpress style: the context is
// compressed, the instructions and question after it are not).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "eval/longbench_config.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"

namespace kvsqueeze::eval {
namespace {

// Datasets whose metric needs jieba word segmentation (no C++ port here).
bool needs_jieba(const LongBenchConfig& config) { return config.metric == "qa_f1_zh" || config.metric == "rouge_zh"; }

// LongBench-E ("<name>_e.jsonl"): the same prompts and metrics on length-balanced samples.
const std::set<std::string>& longbench_e_datasets() {
  static const std::set<std::string> names = {"qasper",   "multifieldqa_en", "hotpotqa", "2wikimqa",
                                              "gov_report", "multi_news",    "trec",     "triviaqa",
                                              "samsum",   "passage_count",   "passage_retrieval_en",
                                              "lcc",      "repobench-p"};
  return names;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

const LongBenchConfig& config_for(const std::string& dataset) {
  std::string base = dataset;
  if (base.size() > 2 && base.ends_with("_e") && longbench_e_datasets().count(base.substr(0, base.size() - 2)))
    base = base.substr(0, base.size() - 2);
  for (const auto& config : longbench_configs()) {
    if (config.name != base) continue;
    if (needs_jieba(config))
      throw Error("LongBench dataset '" + dataset + "' (metric " + config.metric +
                  ") needs jieba segmentation, not supported; supported: " + joined(longbench_dataset_names()));
    return config;
  }
  throw Error("unknown LongBench dataset '" + dataset + "'; valid: " + joined(longbench_dataset_names()) +
              " (and NAME_e for the LongBench-E files of " + std::to_string(longbench_e_datasets().size()) + " of them)");
}

// The prompt template filled in one pass (as str.format: inserted text is never re-scanned), and
// where the context text ends in the result.
struct FilledPrompt {
  std::string text;
  size_t context_end = 0;
};

FilledPrompt fill_template(const std::string& tmpl, const std::string& context, const std::string& input) {
  FilledPrompt out;
  size_t pos = 0;
  while (pos < tmpl.size()) {
    const size_t brace = tmpl.find('{', pos);
    if (brace == std::string::npos) {
      out.text.append(tmpl, pos, std::string::npos);
      break;
    }
    out.text.append(tmpl, pos, brace - pos);
    if (tmpl.compare(brace, 9, "{context}") == 0) {
      out.text += context;
      out.context_end = out.text.size();
      pos = brace + 9;
    } else if (tmpl.compare(brace, 7, "{input}") == 0) {
      out.text += input;
      pos = brace + 7;
    } else {
      out.text += '{';
      pos = brace + 1;
    }
  }
  return out;
}

struct Record {
  std::string id, input, context, language;
  std::vector<std::string> answers, all_classes;
  nlohmann::json length;  // null when absent
};

std::string where(const std::string& path, size_t line_number) { return path + ":" + std::to_string(line_number); }

std::string string_field(const nlohmann::json& obj, const char* key, const std::string& at) {
  const auto it = obj.find(key);
  if (it == obj.end()) throw Error(at + ": missing field \"" + key + "\" (LongBench lines need input, context, answers, _id)");
  if (!it->is_string()) throw Error(at + ": field \"" + key + "\" must be a string, got " + it->type_name());
  return it->get<std::string>();
}

std::vector<std::string> string_list(const nlohmann::json& value, const char* key, const std::string& at) {
  if (!value.is_array()) throw Error(at + ": field \"" + key + "\" must be a list of strings, got " + value.type_name());
  std::vector<std::string> out;
  for (const auto& v : value) {
    if (!v.is_string()) throw Error(at + ": field \"" + key + "\" must hold only strings, found " + v.type_name());
    out.push_back(v.get<std::string>());
  }
  return out;
}

Record parse_record(const std::string& line, const std::string& at, bool needs_classes) {
  nlohmann::json obj;
  try {
    obj = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error(at + ": malformed JSON line (" + std::string(e.what()) + ")");
  }
  if (!obj.is_object()) throw Error(at + ": a LongBench line must be a JSON object, got " + obj.type_name());
  Record r;
  r.id = string_field(obj, "_id", at);
  r.input = string_field(obj, "input", at);
  r.context = string_field(obj, "context", at);
  const auto answers = obj.find("answers");
  if (answers == obj.end()) throw Error(at + ": missing field \"answers\" (LongBench lines need input, context, answers, _id)");
  r.answers = string_list(*answers, "answers", at);
  if (r.answers.empty()) throw Error(at + ": field \"answers\" is empty");
  const auto classes = obj.find("all_classes");
  if (classes != obj.end() && !classes->is_null()) r.all_classes = string_list(*classes, "all_classes", at);
  if (needs_classes && r.all_classes.empty())
    throw Error(at + ": field \"all_classes\" must list the class names for a classification dataset");
  if (const auto it = obj.find("language"); it != obj.end() && it->is_string()) r.language = it->get<std::string>();
  if (const auto it = obj.find("length"); it != obj.end() && it->is_number()) r.length = *it;
  return r;
}

}  // namespace

std::vector<std::string> longbench_dataset_names() {
  std::vector<std::string> names;
  for (const auto& config : longbench_configs())
    if (!needs_jieba(config)) names.push_back(config.name);
  return names;
}

std::vector<Sample> longbench_samples(const std::string& dataset, const LongBenchOptions& options,
                                      const Tokenizer& tokenizer) {
  const LongBenchConfig& config = config_for(dataset);
  namespace fs = std::filesystem;
  if (options.folder.empty()) throw Error("LongBench: no data folder given (it must hold DATASET.jsonl files)");
  if (!fs::is_directory(options.folder))
    throw Error("LongBench folder '" + options.folder + "' does not exist or is not a directory");
  const std::string path = (fs::path(options.folder) / (dataset + ".jsonl")).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("LongBench file '" + path + "' not found (expected the official " + dataset + ".jsonl)");
  if (options.max_length < 0) throw Error("LongBench max_length must be >= 0, got " + std::to_string(options.max_length));

  std::vector<Sample> samples;
  std::set<std::string> ids;
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (options.limit > 0 && static_cast<int64_t>(samples.size()) >= options.limit) break;
    const std::string at = where(path, line_number);
    const Record r = parse_record(line, at, config.metric == "classification");
    if (!ids.insert(r.id).second) throw Error(at + ": duplicate _id '" + r.id + "'");

    FilledPrompt prompt = fill_template(config.prompt_template, r.context, r.input);
    const std::string question = prompt.text.substr(prompt.context_end);
    Sample s;
    s.task = "longbench/" + dataset;
    s.id = r.id;
    s.references = r.answers;
    s.all_classes = r.all_classes;
    s.metric = config.metric;
    s.max_new_tokens = config.max_new_tokens;
    s.first_line_only = config.first_line_only;
    s.meta = {{"dataset", dataset}, {"chat_template", config.chat_template}, {"truncated", false}};
    if (!r.length.is_null()) s.meta["length"] = r.length;
    if (!r.language.empty()) s.meta["language"] = r.language;

    if (options.max_length > 0) {
      // pred.py: tokenizer(prompt) (special tokens added, so BOS counts), and when longer than
      // max_length, decode(first int(max_length/2)) + decode(last int(max_length/2)), skipping specials.
      const std::vector<int32_t> ids_all = tokenizer.encode(prompt.text, tokenizer.add_bos_by_default());
      s.meta["prompt_tokens"] = ids_all.size();
      if (static_cast<int64_t>(ids_all.size()) > options.max_length) {
        // Joining the halves can re-tokenize a few tokens longer at the seam (the tail's first
        // piece loses its leading space in decode); pred.py ignores that, but a prompt that must fit
        // the session's context cannot, so both halves shrink until the joined text fits.
        auto half = static_cast<size_t>(options.max_length / 2);
        std::string head, tail;
        while (true) {
          head = tokenizer.decode(std::vector<int32_t>(ids_all.begin(), ids_all.begin() + half), true);
          tail = tokenizer.decode(std::vector<int32_t>(ids_all.end() - half, ids_all.end()), true);
          const auto joined = static_cast<int64_t>(tokenizer.encode(head + tail, tokenizer.add_bos_by_default()).size());
          if (joined <= options.max_length || half == 0) break;
          half -= std::min(half, static_cast<size_t>((joined - options.max_length + 1) / 2));
        }
        s.meta["truncated"] = true;
        s.meta["kept_half_tokens"] = half;
        if (tail.size() >= question.size() && tail.ends_with(question)) {
          s.context = head + tail.substr(0, tail.size() - question.size());
          s.question = question;
        } else {
          // The cut reached into the question: keep the official text, split at the cut.
          s.context = head;
          s.question = tail;
          s.meta["question_truncated"] = true;
        }
        samples.push_back(std::move(s));
        continue;
      }
    }
    s.context = prompt.text.substr(0, prompt.context_end);
    s.question = question;
    samples.push_back(std::move(s));
  }
  if (in.bad()) throw Error("LongBench file '" + path + "': read error");
  return samples;
}

}  // namespace kvsqueeze::eval
