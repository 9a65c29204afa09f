#pragma once
// Answer metrics (docs/METHODS.md §8): RULER's string matching, LongBench's metrics as the official
// THUDM/LongBench metrics.py computes them, and the ROUGE used by kvpress's needle benchmark.
// Every function returns a score in [0, 1] for one prediction; callers report x100.
#include <string>
#include <vector>

#include "kvsqueeze/eval/sample.h"

namespace kvsqueeze::eval {

// RULER: the fraction of references found as case-insensitive substrings (control characters stripped).
double string_match_all(const std::string& prediction, const std::vector<std::string>& references);
// RULER qa tasks: 1 if any reference is found.
double string_match_part(const std::string& prediction, const std::vector<std::string>& references);

// LongBench (each the max over references where LongBench takes the max).
std::string normalize_answer(const std::string& s);  // lower, drop punctuation and a/an/the, collapse spaces
double qa_f1(const std::string& prediction, const std::string& reference);      // true F1, not recall
double rouge_l(const std::string& prediction, const std::string& reference);    // `rouge` package ROUGE-L F
double classification_score(const std::string& prediction, const std::string& reference,
                            const std::vector<std::string>& all_classes);
double retrieval_score(const std::string& prediction, const std::string& reference);  // "Paragraph N"
double count_score(const std::string& prediction, const std::string& reference);
double code_sim_score(const std::string& prediction, const std::string& reference);  // fuzz.ratio of the first code line
double retrieval_zh_score(const std::string& prediction, const std::string& reference);  // "段落N" (no jieba needed)
// eval.py's cut for trec, triviaqa, samsum and lsht: prediction.lstrip('\n').split('\n')[0].
std::string longbench_first_line(const std::string& prediction);

// kvpress needle_in_haystack: ROUGE-L F of Rouge().get_scores(needle.strip(), answer.strip()) (the
// needle is the package's hypothesis); 0 where the package raises (empty answer).
double niah_rouge(const std::string& prediction, const std::string& needle);

// Scores by metric name (metric_names()); throws kvsqueeze::Error for an unknown name, and for
// "qa_f1_zh"/"rouge_zh", which need jieba segmentation. LongBench and niah metrics take the max over
// references (0 with none); string_match_* score the references together.
double score_answer(const std::string& metric, const std::string& prediction, const std::vector<std::string>& references,
                    const std::vector<std::string>& all_classes = {});
std::vector<std::string> metric_names();
// score_answer(sample.metric, ...) of the answer cut at its first line when sample.first_line_only.
double score_sample(const Sample& sample, const std::string& prediction);

}  // namespace kvsqueeze::eval
