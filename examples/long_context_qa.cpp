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
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kvsqueeze/chat_template.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/generation.h"
#include "kvsqueeze/kv_cache.h"
#include "kvsqueeze/model.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/sampler.h"
#include "kvsqueeze/session.h"
#include "kvsqueeze/shared_prefill.h"
#include "kvsqueeze/tokenizer.h"

namespace {

using namespace kvsqueeze;
using Clock = std::chrono::steady_clock;
constexpr int64_t kMaxAnswerTokens = 48;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path + "'");
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

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }
std::string bytes_text(size_t bytes) {
  char text[32];
  if (bytes >= (size_t{1} << 20)) std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / 1048576.0);
  else std::snprintf(text, sizeof text, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
  return text;
}

struct Setting {
  std::string expression;
  double ratio = 0.0;
  bool query_aware = false;
  std::unique_ptr<Press> press;  // null: the uncompressed cache
  Budget budget;
  std::string label() const {
    if (!press) return "no compression";
    char text[160];
    std::snprintf(text, sizeof text, "%s at ratio %.2f, %s", expression.c_str(), ratio,
                  query_aware ? "query-aware (compressed with each question)" : "question-agnostic (compressed once)");
    return text;
  }
};

Setting parse_setting(const Model& model, std::string text) {
  Setting s;
  const std::string suffix = "+q";
  if (text.size() > suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0) {
    s.query_aware = true;
    text.resize(text.size() - suffix.size());
  }
  const size_t at = text.rfind('@');
  if (at == std::string::npos) throw Error("setting '" + text + "' is not PRESS@RATIO or PRESS@RATIO+q");
  s.expression = text.substr(0, at);
  try {
    s.ratio = std::stod(text.substr(at + 1));
  } catch (const std::exception&) {
    throw Error("setting '" + text + "': ratio '" + text.substr(at + 1) + "' is not a number");
  }
  std::vector<std::string> opts;
  s.budget = take_budget_options(model.config(), KvType::F16, s.ratio, opts);  // checks the ratio's range
  s.press = make_press(s.expression, opts);
  return s;
}

struct Answers {
  double decode_ms = 0.0;
  size_t decoded = 0;
  size_t bytes_held = 0;  // the largest cache a question was answered from
  void add(const std::string& question, const GenerationResult& r) {
    decode_ms += r.decode_ms;
    decoded += r.tokens.size();
    std::string answer = r.text;
    while (!answer.empty() && (answer.back() == '\n' || answer.back() == ' ')) answer.pop_back();
    std::printf("  Q: %s\n  A: %s\n", question.c_str(), answer.c_str());
  }
};

int run(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL.gguf DOCUMENT.txt QUESTIONS.txt [PRESS@RATIO[+q] ...]\n", argv[0]);
    return 2;
  }
  const std::string document = read_file(argv[2]);
  const std::vector<std::string> questions = read_lines(argv[3]);
  std::vector<std::string> specs(argv + 4, argv + argc);
  if (specs.empty()) specs = {"chunkkv(snapkv)@0.5+q", "chunkkv(snapkv)@0.75+q", "expected_attention@0.5"};

  const auto model = Model::load(argv[1]);
  const Tokenizer& tok = model->tokenizer();
  const ChatTemplate& tmpl = model->chat_template();
  std::vector<Setting> settings(1);  // the uncompressed cache first
  for (const auto& spec : specs) settings.push_back(parse_setting(*model, spec));

  // kvpress's prompt: the chat template around context + question, cut after the context. Only
  // the context part is shared (and compressed); each question adds its own tokens.
  const std::vector<int32_t> context = tok.encode(tmpl.split(document, "\n" + questions[0]).context_part, tok.add_bos_by_default());
  std::vector<std::vector<int32_t>> question_ids;
  for (const auto& q : questions) question_ids.push_back(tok.encode(tmpl.split(document, "\n" + q).question_part, false));
  const auto context_end = static_cast<int32_t>(context.size());

  // One forward pass over the context feeds the uncompressed copy (also the start of every
  // query-aware question) and every question-agnostic setting.
  std::vector<PrefillCell> cells;
  std::vector<size_t> cell_of(settings.size(), 0);
  for (size_t i = 0; i < settings.size(); ++i)
    if (i == 0 || !settings[i].query_aware) {
      cell_of[i] = cells.size();
      cells.push_back({settings[i].press.get(), settings[i].budget});
    }
  Session session(*model, SessionOptions{});
  std::printf("document: %zu tokens, %zu questions\n", context.size(), questions.size());
  const auto t0 = Clock::now();
  auto copies = shared_prefill(session, context, cells);
  const double prefill_ms = ms_since(t0);
  const std::vector<float> context_logits = session.last_logits();
  std::printf("prefill: %.1f s (%.0f tok/s), one pass shared by every setting below\n", prefill_ms / 1000.0,
              static_cast<double>(context.size()) * 1000.0 / prefill_ms);
  KvCache full_context = clone_cache(*copies[0].cache);  // kept for the query-aware settings
  const size_t full_bytes = full_context.bytes_held();    // the uncompressed cache, slots and positions

  SamplerOptions greedy;
  for (size_t i = 0; i < settings.size(); ++i) {
    Setting& s = settings[i];
    std::printf("\n== %s\n", s.label().c_str());
    Answers out;
    if (!s.query_aware) {
      CompressedContext& copy = copies[cell_of[i]];
      install_context(session, copy, cells[cell_of[i]], context_end, context_logits, 0);
      session.cache().release_slack(0);  // measure what the context holds, then make room per question
      out.bytes_held = session.cache().bytes_held();
      std::printf("  KV cache: %s held, uncompressed %s (%.2fx smaller); compression took %.0f ms\n",
                  bytes_text(out.bytes_held).c_str(), bytes_text(full_bytes).c_str(), static_cast<double>(full_bytes) / static_cast<double>(out.bytes_held),
                  copy.compress_ms);
      session.cache().protect_query_position(context_end);  // each answer is rolled back to here
      for (size_t q = 0; q < questions.size(); ++q) {
        Sampler sampler(greedy);
        session.reserve(static_cast<int64_t>(question_ids[q].size()) + kMaxAnswerTokens);
        out.add(questions[q], generate(session, question_ids[q], kMaxAnswerTokens, sampler));
        session.rollback_to(context_end);
      }
    } else {
      double compress_ms = 0.0;
      for (size_t q = 0; q < questions.size(); ++q) {
        session.restore(clone_cache(full_context), context_end, context_logits);
        const auto tq = Clock::now();
        PressRunner runner(session, s.press.get(), s.budget, nullptr, CompressionPolicy{});
        runner.prefill(question_ids[q], kMaxAnswerTokens);
        compress_ms += ms_since(tq);
        out.bytes_held = std::max(out.bytes_held, session.cache().bytes_used());
        runner.start_decoding();
        Sampler sampler(greedy);
        out.add(questions[q], generate(session, {}, kMaxAnswerTokens, sampler));
      }
      std::printf("  KV cache: at most %s held per question, uncompressed context %s (%.2fx smaller); "
                  "question + compression %.0f ms per question\n",
                  bytes_text(out.bytes_held).c_str(), bytes_text(full_bytes).c_str(), static_cast<double>(full_bytes) / static_cast<double>(out.bytes_held),
                  compress_ms / static_cast<double>(questions.size()));
    }
    std::printf("  decode: %.1f tok/s over %zu answer tokens\n",
                out.decoded ? static_cast<double>(out.decoded) * 1000.0 / out.decode_ms : 0.0, out.decoded);
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
