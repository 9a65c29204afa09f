// Every registered press on every architecture: stories260K and the synthetic tiny llama,
// mistral, qwen2, qwen3 and gemma3 models, f16 and f32 caches, ratios 0.25 and 0.75, whole and
// chunked prefill, then a few decoding steps. No valid configuration may throw; logits stay
// finite; no run grows past its uncompressed length; positions stay strictly ascending; and the
// cache holds exactly the bytes of what it keeps once the slack is released.
// A press without an entry in the table below fails the test: new presses cannot be forgotten.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "fixture_models.h"
#include "head_scores_writer.h"
#include "kv_bytes_formula.h"
#include "kvsqueeze/error.h"
#include "kvsqueeze/press.h"
#include "kvsqueeze/press_pipeline.h"
#include "kvsqueeze/session.h"
#include "safetensors_writer.h"
#include "test_inputs.h"
#include "test_paths.h"

using namespace kvsqueeze;

namespace {

// One way to run a press: its expression (and --press-opt options) and the pipeline's budget,
// for a model at the matrix's ratio. Where the press refuses the model by design, `refused`
// is (part of) the kvsqueeze::Error the run must end in.
struct PressSetup {
  std::string expr;
  std::vector<std::string> opts;
  Budget budget;
  std::string refused;
};
using Maker = std::function<PressSetup(const ModelConfig& config, double ratio)>;

Maker with_ratio(const std::string& expr) {
  return [expr](const ModelConfig&, double r) { return PressSetup{expr, {}, Budget{r}, ""}; };
}

bool has_sliding_layers(const ModelConfig& c) { return std::find(c.layer_sliding.begin(), c.layer_sliding.end(), true) != c.layer_sliding.end(); }

// Two short calibration texts: the built-in 50 make duo_attention the matrix's slowest press.
std::string duo_calibration_file() {
  static const std::string path = [] {
    const std::string p = test_paths::scratch_dir() + "/duo_calibration" + test_paths::process_tag() + ".txt";
    std::ofstream(p) << "Once upon a time there was a little girl named Lily. She loved to play outside.\n---\n"
                        "The dog took the big red ball and ran to the pond, and Lily ran after it.\n";
    return p;
  }();
  return path;
}

// Small windows and chunks so that a ~100-token prompt exercises every press.
const std::map<std::string, std::vector<Maker>>& press_table() {
  static const std::map<std::string, std::vector<Maker>> table = {
      {"adakv", {with_ratio("adakv(snapkv(window_size=8))"), with_ratio("adakv(keydiff)"),
                 with_ratio("adakv(snapkv(window_size=8), rule=original)")}},
      {"block", {with_ratio("block(knorm, block_size=16)")}},
      {"cam", {with_ratio("cam(snapkv(window_size=8), merge_budget=4)"), with_ratio("cam(adakv(keydiff))"),
               with_ratio("cam(knorm, parity=true)")}},
      {"cap", {with_ratio("cap(n_future_positions=16)")}},
      {"chunk", {with_ratio("chunk(keydiff, chunk_length=32)")}},
      {"chunkkv", {with_ratio("chunkkv(snapkv(window_size=8), chunk_length=10)")}},
      {"compactor", {with_ratio("compactor(chunk_size=32, sketch_dimension=16)")}},
      {"composed", {with_ratio("composed(snapkv(window_size=8), knorm)"),
                    [](const ModelConfig&, double r) {
                      return PressSetup{"composed(think(key_channel_compression_ratio=0.5, window_size=8), knorm)", {}, Budget{r}, ""};
                    }}},
      {"critical", {with_ratio("critical(snapkv(window_size=8))")}},
      {"critical_adakv", {with_ratio("critical_adakv(snapkv(window_size=8))")}},
      {"cur", {with_ratio("cur(local_window_size=8)")}},
      {"duo_attention", {[](const ModelConfig&, double r) {
         return PressSetup{"duo_attention(sink_size=4, recent_size=16, positions=64)", {"calibration_file=" + duo_calibration_file()}, Budget{r}, ""};
       }}},
      // Head-score files of the model's shape (layers x query heads); the maths is in allocators_test.
      {"dililazykv", {[](const ModelConfig& c, double r) {
         const std::string file = test_head_scores::write("matrix-" + std::to_string(c.n_layer) + "-" + std::to_string(c.n_head), c.n_layer, c.n_head, c.name);
         return PressSetup{"dililazykv(snapkv(window_size=8))", {"head_scores=" + file}, Budget{r}, ""};
       }}},
      {"expected_attention", {with_ratio("expected_attention(n_future_positions=16)")}},
      {"finch", {with_ratio("finch(window_size=8, rerotate_keys=false)"), with_ratio("finch(window_size=8, rerotate_keys=false, chunk_length=48)")}},
      // Renumbering positions is refused where sliding-window layers keep the original ones.
      {"key_rerotation", {[](const ModelConfig& c, double r) {
         return PressSetup{"key_rerotation(knorm)", {}, Budget{r}, has_sliding_layers(c) ? "sliding-window layers" : ""};
       }}},
      {"global_topk", {with_ratio("global_topk(snapkv(window_size=8))"), with_ratio("global_topk(keydiff)")}},
      {"headkv", {[](const ModelConfig& c, double r) {
         const std::string file = test_head_scores::write("matrix-" + std::to_string(c.n_layer) + "-" + std::to_string(c.n_head), c.n_layer, c.n_head, c.name);
         return PressSetup{"headkv(snapkv(window_size=8))", {"head_scores=" + file}, Budget{r}, ""};
       }}},
      {"keydiff", {with_ratio("keydiff")}},
      {"knorm", {with_ratio("knorm")}},
      {"kvcompose", {with_ratio("kvcompose"), with_ratio("kvcompose(structured=false)")}},
      {"kvzip", {with_ratio("kvzip(chunk_size=48)"), with_ratio("kvzip(chunk_size=64, layerwise=true)")}},
      {"merging", {with_ratio("merging(snapkv(window_size=8))"),
                   with_ratio("merging(adakv(keydiff), similarity_threshold=0.2, merge_fraction=0.5)"),
                   with_ratio("merging(global_topk(keydiff))")}},
      {"lagkv", {with_ratio("lagkv(lag_size=16)"), with_ratio("lagkv(lag_size=16, mode=lagkv)")}},
      {"leverage_score", {with_ratio("leverage_score(sketch_dimension=16)")}},
      {"non_causal_attn", {with_ratio("non_causal_attn(chunk_size=32)")}},
      {"observed_attention", {with_ratio("observed_attention")}},
      {"per_layer", {[](const ModelConfig& c, double r) {
         std::string ratios;
         for (int64_t l = 0; l < c.n_layer; ++l) ratios += (l ? ":" : "") + std::to_string(l % 2 ? r : r / 2);
         return PressSetup{"per_layer(snapkv(window_size=8))", {"ratios=" + ratios}, Budget{}, ""};
       }}},
      {"pyramidkv", {with_ratio("pyramidkv(window_size=8)")}},
      // Sets its own budget (the ratio is unused) and keeps pooling while decoding.
      {"pyramid_merge", {with_ratio("pyramid_merge(initial_local_window=16)"),
                         with_ratio("pyramid_merge(initial_local_window=8, steepness_coefficient=0.5, sink_tokens=2, seq_pooling_type=weighted_mean)"),
                         with_ratio("pyramid_merge(initial_local_window=8, seq_pooling_type=best, skip_prefill_compression=true)")}},
      // Learned filters: a deterministic file of the model's shape (the maths is in qfilter_test).
      {"qfilter", {[](const ModelConfig& c, double r) {
         std::vector<float> f(static_cast<size_t>(c.n_layer * c.n_head_kv * c.head_dim_k));
         for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(static_cast<int>(i * 37 % 17) - 8) / 8.0f;
         const std::string tag = "matrix-" + std::to_string(c.n_layer) + "-" + std::to_string(c.n_head_kv) + "-" + std::to_string(c.head_dim_k);
         return PressSetup{"qfilter", {"file=" + test_safetensors::write(tag, "q_filters", {c.n_layer, c.n_head_kv, c.head_dim_k}, f)}, Budget{r}, ""};
       }}},
      {"random", {with_ratio("random")}},
      {"simlayerkv", {with_ratio("simlayerkv(lazy_threshold=0.3, n_recent=16, n_initial=4)")}},
      {"snapkv", {with_ratio("snapkv(window_size=8)")}},
      {"streaming_llm", {with_ratio("streaming_llm")}},
      {"think", {[](const ModelConfig&, double r) {
         return PressSetup{"think(window_size=8)", {"key_channel_compression_ratio=" + std::to_string(r)}, Budget{}, ""};
       }}},
      {"tova", {with_ratio("tova")}},
  };
  return table;
}

// "stories260k" or the name of a synthetic logits fixture; loaded once per process.
const Model* load(const std::string& name, std::string* why) {
  static std::map<std::string, std::unique_ptr<Model>> cache;
  if (auto it = cache.find(name); it != cache.end()) return it->second.get();
  const std::string path = fixture_models::test_model_path(name, why);
  if (path.empty()) return nullptr;
  return (cache[name] = Model::load(path)).get();
}

std::vector<int32_t> prompt_ids(const Model& m, size_t n) { return test_inputs::story_prompt(m, n); }

constexpr size_t kPromptTokens = 100;
const std::vector<int32_t> kDecodeIds = {5, 17, 9};  // fixed so that lengths compare with the reference

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// Checks the cache against the uncompressed run lengths; returns "" or what is wrong.
std::string check_cache(KvCache& cache, const std::vector<std::vector<int64_t>>& full) {
  std::ostringstream err;
  const auto& sh = cache.shape();
  for (int64_t l = 0; l < sh.n_layer; ++l)
    for (int64_t h = 0; h < sh.n_head_kv; ++h) {
      const int64_t len = cache.length(l, h);
      if (len > full[static_cast<size_t>(l)][static_cast<size_t>(h)])
        err << "layer " << l << " head " << h << " holds " << len << " slots, more than the uncompressed "
            << full[static_cast<size_t>(l)][static_cast<size_t>(h)] << "; ";
      const auto pos = cache.positions(l, h);
      for (size_t i = 1; i < pos.size(); ++i)
        if (pos[i] <= pos[i - 1]) {
          err << "layer " << l << " head " << h << " positions not ascending at slot " << i << " (" << pos[i - 1] << ", " << pos[i]
              << "); ";
          break;
        }
    }
  cache.release_slack(0);
  const size_t want = test_bytes::cache_bytes(cache);
  if (cache.bytes_held() != want) err << "bytes_held " << cache.bytes_held() << " != " << want << " for the slots kept; ";
  return err.str();
}

struct Reference {
  std::vector<std::vector<int64_t>> after_prefill, after_decode;
};

int64_t total(const std::vector<std::vector<int64_t>>& lengths) {
  int64_t n = 0;
  for (const auto& layer : lengths)
    for (int64_t len : layer) n += len;
  return n;
}

// Run lengths without compression, the context evaluated in the same chunks as with the press
// (sliding-window layers trim by chunk, and a press's query window shapes the last chunk).
// The cache's key and value types and whether keys are stored rotated.
struct CacheTypes {
  KvType k = KvType::F32, v = KvType::F32;
  KvTransform rotation = KvTransform::Auto;
  KvTransform centering = KvTransform::Auto;
  SessionOptions options(int64_t chunk) const {
    SessionOptions o;
    o.threads = 1;
    o.kv_type_k = k;
    o.kv_type_v = v;
    o.kv_rotation = rotation;
    o.kv_centering = centering;
    o.chunk = chunk;
    return o;
  }
  std::string label() const {
    return kv_types_label(k, v) + (kv_keys_rotated(rotation, k) || kv_rows_rotated(rotation, v) ? "_rotated" : "") +
           (kv_keys_centered(centering, k) ? "_centred" : "");
  }
};

Reference reference_lengths(const Model& m, const CacheTypes& types, const std::vector<int32_t>& ids, int64_t chunk,
                            const StatsRequest& needs) {
  const SessionOptions o = types.options(chunk);
  Session s(m, o);
  s.set_stats_request(needs);
  Reference r;
  s.eval(ids);
  r.after_prefill = s.cache().lengths();
  s.set_stats_request({});
  for (int32_t t : kDecodeIds) s.eval({t});
  r.after_decode = s.cache().lengths();
  return r;
}

// One run; returns "" or what went wrong.
std::string run_one(const Model& m, const CacheTypes& types, const std::vector<int32_t>& ids, const PressSetup& setup, int64_t chunk,
                    int* evicted) {
  try {
    auto press = make_press(setup.expr, setup.opts);
    const Reference ref = reference_lengths(m, types, ids, chunk, press->needs());
    Session s(m, types.options(chunk));
    PressRunner runner(s, press.get(), setup.budget, nullptr, CompressionPolicy{});
    runner.prefill(ids, 0);
    if (!all_finite(s.last_logits())) return "non-finite logits after prefill";
    if (evicted && total(s.cache().lengths()) < total(ref.after_prefill)) ++*evicted;
    if (auto e = check_cache(s.cache(), ref.after_prefill); !e.empty()) return "after prefill: " + e;
    runner.start_decoding();
    for (int32_t t : kDecodeIds)
      if (!all_finite(s.eval({t}))) return "non-finite logits while decoding";
    if (auto e = check_cache(s.cache(), ref.after_decode); !e.empty()) return "after decoding: " + e;
    return setup.refused.empty() ? "" : "accepted, but should be refused with '" + setup.refused + "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    if (!setup.refused.empty() && what.find(setup.refused) != std::string::npos && what.find('\n') == std::string::npos) return "";
    return "kvsqueeze::Error: " + what;
  } catch (const std::exception& e) {
    return std::string("std::exception: ") + e.what();
  }
}

struct MatrixParam {
  std::string model;
  CacheTypes types;
};
void PrintTo(const MatrixParam& p, std::ostream* os) { *os << p.model << " " << p.types.label(); }

class PressMatrix : public ::testing::TestWithParam<MatrixParam> {};

}  // namespace

TEST(PressMatrixTable, EveryRegisteredPressHasAnEntry) {
  const auto& table = press_table();
  std::vector<std::string> names;
  for (const auto& info : list_presses()) {
    names.push_back(info.name);
    EXPECT_TRUE(table.count(info.name)) << "press '" << info.name
                                        << "' has no entry in press_matrix_test.cpp's press_table(): add one so that it is tested";
  }
  for (const auto& [name, makers] : table) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << "table entry '" << name << "' is not a registered press";
    EXPECT_FALSE(makers.empty()) << name;
  }
}

TEST_P(PressMatrix, EveryPressCompressesSafely) {
  const auto& p = GetParam();
  std::string why;
  const Model* m = load(p.model, &why);
  if (!m) GTEST_SKIP() << why;
  const auto ids = prompt_ids(*m, kPromptTokens);
  int runs = 0, evicted = 0;
  std::map<std::string, double> seconds;  // per press, printed: keeps the matrix's cost visible
  for (const auto& info : list_presses()) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto it = press_table().find(info.name);
    if (it == press_table().end()) continue;  // EveryRegisteredPressHasAnEntry fails
    for (const auto& make : it->second)
      for (double ratio : {0.25, 0.75})
        for (int64_t chunk : {int64_t{512}, int64_t{16}}) {
          const PressSetup setup = make(m->config(), ratio);
          const std::string err = run_one(*m, p.types, ids, setup, chunk, &evicted);
          ++runs;
          std::string opts;
          for (const auto& o : setup.opts) opts += " " + o;
          EXPECT_EQ(err, "") << p.model << " " << p.types.label() << " '" << setup.expr << "'" << opts << " ratio " << ratio
                             << " chunk " << chunk;
        }
    seconds[info.name] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  // Most presses evict slots here (think prunes channels, simlayerkv only lazy layers, ...):
  // the checks above must not be vacuous.
  EXPECT_GT(evicted, runs * 3 / 4);
  std::ostringstream times;
  for (const auto& [name, sec] : seconds) times << " " << name << "=" << static_cast<int>(sec * 1000) << "ms";
  std::printf("[ matrix   ] %d runs, %d evicting:%s\n", runs, evicted, times.str().c_str());
}

// Prompts shorter than the presses' windows, sinks and partitions: each press either compresses
// within the invariants or refuses with a one-line kvsqueeze::Error; nothing else.
TEST(PressMatrixShortPrompts, EveryPressHandlesTinyContexts) {
  for (const std::string name : {"stories260k", "synth_gemma3_f32"}) {
    std::string why;
    const Model* m = load(name, &why);
    if (!m) GTEST_SKIP() << why;
    for (size_t n : {size_t{1}, size_t{5}}) {
      const auto ids = prompt_ids(*m, n);
      for (const auto& info : list_presses()) {
        const auto it = press_table().find(info.name);
        if (it == press_table().end()) continue;
        for (const auto& make : it->second) {
          const PressSetup setup = make(m->config(), 0.75);
          const std::string err = run_one(*m, CacheTypes{}, ids, setup, 4, nullptr);
          const bool clean_refusal = err.rfind("kvsqueeze::Error: ", 0) == 0 && err.find('\n') == std::string::npos;
          EXPECT_TRUE(err.empty() || clean_refusal) << name << " " << n << " tokens '" << setup.expr << "': " << err;
          if (!err.empty()) std::printf("[ refused  ] %s %zu tokens '%s': %s\n", name.c_str(), n, setup.expr.c_str(), err.c_str());
        }
      }
    }
  }
}

// Float caches on every model; the quantized ones (K and V chosen apart, keys rotated or not) on
// the synthetic models, whose head sizes are whole blocks of 32 (stories260K's 8 are not);
// KIVI2 (its groups of 32 slots fill within the context) with its defaults and plainly.
constexpr KvType F16 = KvType::F16, F32 = KvType::F32, BF16 = KvType::BF16, Q8 = KvType::Q8_0, Q4 = KvType::Q4_0,
                 KIVI = KvType::KIVI2;
INSTANTIATE_TEST_SUITE_P(Models, PressMatrix,
                         ::testing::Values(MatrixParam{"stories260k", {F16, F16}}, MatrixParam{"stories260k", {F32, F32}},
                                           MatrixParam{"synth_llama_f32", {F16, F16}}, MatrixParam{"synth_llama_f32", {F32, F32}},
                                           MatrixParam{"synth_mistral_f32", {F16, F16}}, MatrixParam{"synth_mistral_f32", {F32, F32}},
                                           MatrixParam{"synth_qwen2_f32", {F16, F16}}, MatrixParam{"synth_qwen2_f32", {F32, F32}},
                                           MatrixParam{"synth_qwen3_f32", {F16, F16}}, MatrixParam{"synth_qwen3_f32", {F32, F32}},
                                           MatrixParam{"synth_gemma3_f32", {F16, F16}}, MatrixParam{"synth_gemma3_f32", {F32, F32}},
                                           MatrixParam{"synth_llama_f32", {Q8, Q8}}, MatrixParam{"synth_qwen2_f32", {Q4, Q4}},
                                           MatrixParam{"synth_mistral_f32", {Q4, F16, KvTransform::Off}},
                                           MatrixParam{"synth_qwen3_f32", {BF16, Q8, KvTransform::On, KvTransform::On}},
                                           MatrixParam{"synth_gemma3_f32", {Q8, Q4, KvTransform::On}},
                                           MatrixParam{"synth_qwen2_f32", {KIVI, KIVI}},
                                           MatrixParam{"synth_llama_f32", {KIVI, Q8, KvTransform::Off, KvTransform::Off}}),
                         [](const ::testing::TestParamInfo<MatrixParam>& info) {
                           std::string name = info.param.model + "_" + info.param.types.label();
                           for (char& c : name)
                             if (c == '/') c = '_';
                           return name;
                         });
