// Long-context question answering with a compressed KV cache: what kvsqueeze is for.
//
// The document is prefilled once. Each setting then answers every question greedily from its own
// cache, in one of kvpress's two settings:
//   PRESS@RATIO      question-agnostic: the context alone is compressed, once, and every
//                    question is appended to that compressed cache (then rolled back);
//   PRESS@RATIO+q    query-aware: each question is appended to its own copy of the full context
//                    and the press compresses context and question together (the question's
//                    tokens are the press's observation window).
// For each setting it prints the answers, the bytes the KV cache really holds against the
// uncompressed cache, and the speeds.
//
//   long_context_qa MODEL.gguf DOCUMENT.txt QUESTIONS.txt [SETTING ...]
//     QUESTIONS.txt: one question per line; SETTING as above
//     (default: chunkkv(snapkv)@0.5+q chunkkv(snapkv)@0.75+q expected_attention@0.5)
//
// Why ChunkKV by default: answers copied from the document ("ORANGE MARMALADE") need every token
// of the phrase; per-token eviction at 2x can keep "MAR" and drop the next piece, and the model
// then copies the wrong continuation ("ORANGE MARMADE" with snapkv, adakv, tova or
// expected_attention on this model), where ChunkKV keeps whole runs of 20 consecutive tokens.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kvsqueeze/engine.h"

namespace {

using namespace kvsqueeze;
constexpr int64_t kMaxAnswerTokens = 48;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError("cannot read '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  if (lines.empty()) throw Error("'" + path + "' holds no question");
  return lines;
}

std::string bytes_text(size_t bytes) {
  char text[32];
  if (bytes >= (size_t{1} << 20)) std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / 1048576.0);
  else std::snprintf(text, sizeof text, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
  return text;
}

// "PRESS@RATIO" or "PRESS@RATIO+q" as a compression plan (validated by the engine).
CompressionPlan parse_setting(std::string text) {
  CompressionPlan plan;
  const std::string suffix = "+q";
  if (text.size() > suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0) {
    plan.query_aware = true;
    text.resize(text.size() - suffix.size());
  }
  const size_t at = text.rfind('@');
  if (at == std::string::npos) throw Error("setting '" + text + "' is not PRESS@RATIO or PRESS@RATIO+q");
  plan.press = text.substr(0, at);
  try {
    plan.ratio = std::stod(text.substr(at + 1));
  } catch (const std::exception&) {
    throw Error("setting '" + text + "': ratio '" + text.substr(at + 1) + "' is not a number");
  }
  validate_plan(plan);
  return plan;
}

std::string label(const CompressionPlan& p) {
  if (p.press == "none") return "no compression";
  char text[160];
  std::snprintf(text, sizeof text, "%s at ratio %.2f, %s", p.press.c_str(), p.ratio,
                p.query_aware ? "query-aware (compressed with each question)" : "question-agnostic (compressed once)");
  return text;
}

int run(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL.gguf DOCUMENT.txt QUESTIONS.txt [PRESS@RATIO[+q] ...]\n", argv[0]);
    return 2;
  }
  const std::string document = read_file(argv[2]);
  const std::vector<std::string> questions = read_lines(argv[3]);
  std::vector<std::string> specs(argv + 4, argv + argc);
  if (specs.empty()) specs = {"chunkkv(snapkv)@0.5+q", "chunkkv(snapkv)@0.75+q", "expected_attention@0.5"};
  std::vector<CompressionPlan> plans(1);  // the uncompressed cache first
  for (const auto& spec : specs) plans.push_back(parse_setting(spec));

  const auto model = Model::load(argv[1]);
  Engine engine(*model);
  // kvpress's prompt: the chat template around context + question, cut after the context. Only
  // the context part is shared (and compressed); each question adds its own tokens.
  const std::vector<int32_t> context = engine.context_ids(document);
  std::vector<std::vector<int32_t>> question_ids;
  for (const auto& q : questions) question_ids.push_back(engine.question_ids(document, "\n" + q));
  std::printf("document: %zu tokens, %zu questions\n", context.size(), questions.size());

  // One forward pass over the context feeds every setting: the uncompressed copy (also the
  // start of every query-aware question) and each question-agnostic setting's compressed copy.
  const auto shared = engine.prefill_shared(context, plans);
  std::printf("prefill: %.1f s (%.0f tok/s), one pass shared by every setting below\n", shared->prefill_ms() / 1000.0,
              static_cast<double>(context.size()) * 1000.0 / shared->prefill_ms());
  engine.use_shared(*shared, 0);
  const size_t full_bytes = engine.accounting().kv_bytes_held;  // the uncompressed cache, slots and positions

  GenerateParams greedy;
  greedy.max_tokens = kMaxAnswerTokens;
  for (size_t i = 0; i < plans.size(); ++i) {
    std::printf("\n== %s\n", label(plans[i]).c_str());
    engine.use_shared(*shared, i);
    const size_t held = engine.accounting().kv_bytes_held;
    size_t most_used = 0, decoded = 0;
    double decode_ms = 0.0, question_ms = 0.0;
    for (size_t q = 0; q < questions.size(); ++q) {
      const Completion a = engine.answer(question_ids[q], greedy, q + 1 < questions.size());
      most_used = std::max(most_used, a.kv_bytes_used);
      decoded += a.tokens.size();
      decode_ms += a.timings.decode_ms;
      question_ms += a.timings.prefill_ms - shared->prefill_ms();
      std::string answer = a.text;
      while (!answer.empty() && (answer.back() == '\n' || answer.back() == ' ')) answer.pop_back();
      std::printf("  Q: %s\n  A: %s\n", questions[q].c_str(), answer.c_str());
    }
    if (!plans[i].query_aware) {
      std::printf("  KV cache: %s held, uncompressed %s (%.2fx smaller); compression took %.0f ms\n", bytes_text(held).c_str(),
                  bytes_text(full_bytes).c_str(), static_cast<double>(full_bytes) / static_cast<double>(held), shared->compress_ms(i));
    } else {
      std::printf("  KV cache: at most %s held per question, uncompressed context %s (%.2fx smaller); "
                  "question + compression %.0f ms per question\n",
                  bytes_text(most_used).c_str(), bytes_text(full_bytes).c_str(),
                  static_cast<double>(full_bytes) / static_cast<double>(most_used), question_ms / static_cast<double>(questions.size()));
    }
    std::printf("  decode: %.1f tok/s over %zu answer tokens\n", decoded ? static_cast<double>(decoded) * 1000.0 / decode_ms : 0.0, decoded);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
