// Engine: one sequence on a shared Model (engine.h). Native work runs without the GIL and stops
// cleanly on Ctrl-C (interruptible.h); one Engine serves one thread at a time, and a second
// thread using it at once gets a RuntimeError instead of undefined behaviour.
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <mutex>
#include <stdexcept>

#include "bindings.h"
#include "cache_views.h"
#include "interruptible.h"
#include "kvsqueeze/engine.h"
#include "kvsqueeze/press.h"
#include "plan_args.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvsqueeze::python {
namespace {

struct PyEngine {
  std::unique_ptr<Engine> engine;
  std::atomic<bool> cancel{false};
  std::mutex busy;  // held while native work runs: one thread at a time

  PyEngine(const Model& model, const SessionOptions& options) : engine(std::make_unique<Engine>(model, options)) {
    engine->set_cancel_flag(&cancel);
  }
};

// Holds the engine for one call; a concurrent call from another thread is refused.
class Busy {
 public:
  explicit Busy(PyEngine& e) : lock_(e.busy, std::try_to_lock) {
    if (!lock_.owns_lock())
      throw std::runtime_error("this Engine is in use by another thread: use one Engine per thread (they may share a Model)");
    e.cancel.store(false);
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

nb::dict timings_dict(const Timings& t) {
  nb::dict d;
  d["prompt_tokens"] = t.prompt_tokens;
  d["generated_tokens"] = t.generated_tokens;
  d["prefill_ms"] = t.prefill_ms;
  d["decode_ms"] = t.decode_ms;
  d["prefill_tok_s"] = t.prefill_tok_s();
  d["decode_tok_s"] = t.decode_tok_s();
  return d;
}

nb::dict completion_dict(const Completion& c) {
  nb::dict d;
  d["text"] = c.text;
  d["tokens"] = c.tokens;
  d["stop_reason"] = stop_reason_name(c.stop_reason);
  d["kv_bytes_used"] = c.kv_bytes_used;
  d["timings"] = timings_dict(c.timings);
  return d;
}

nb::dict accounting_dict(const Accounting& a) {
  nb::dict d;
  d["kv_bytes_held"] = a.kv_bytes_held;
  d["kv_bytes_used"] = a.kv_bytes_used;
  d["kv_bytes_full"] = a.kv_bytes_full;
  d["context_tokens"] = a.context_tokens;
  d["layer_compressions"] = a.layer_compressions;
  d["slots_removed"] = a.slots_removed;
  std::vector<int64_t> flat;
  const size_t layers = a.kv_lengths.size(), heads = layers ? a.kv_lengths[0].size() : 0;
  for (const auto& row : a.kv_lengths) flat.insert(flat.end(), row.begin(), row.end());
  d["kv_lengths"] = owned_array(std::move(flat), {layers, heads});
  return d;
}

// Sampling, stop strings and streaming as GenerateParams. on_text runs on the engine's thread:
// it takes the GIL, and a Python exception it raises stops generation and is re-raised.
struct TextCallback {
  nb::object fn;
  std::shared_ptr<std::exception_ptr> error = std::make_shared<std::exception_ptr>();
  bool operator()(const std::string& piece) const {
    nb::gil_scoped_acquire gil;
    try {
      nb::object r = fn(nb::str(piece.data(), piece.size()));
      return r.is_none() || nb::cast<bool>(r);
    } catch (...) {
      *error = std::current_exception();
      return false;
    }
  }
};

GenerateParams generate_params(PyEngine& e, int64_t max_tokens, float temperature, int32_t top_k, float top_p, float min_p,
                               uint64_t seed, const std::vector<std::string>& stop, bool ignore_eos) {
  GenerateParams p;
  p.max_tokens = max_tokens;
  p.sampling = {.temperature = temperature, .top_k = top_k, .top_p = top_p, .min_p = min_p, .seed = seed};
  Sampler::validate(p.sampling);
  if (max_tokens < 0) throw ParameterError("max_tokens", "`max_tokens` must be >= 0, got " + std::to_string(max_tokens));
  p.stop = stop;
  p.ignore_eos = ignore_eos;
  p.cancel = &e.cancel;
  return p;
}

// Runs a generation with an optional Python streaming callback, re-raising what it raised.
template <class F>
nb::dict run_generation(PyEngine& e, GenerateParams& params, nb::object on_text, F&& call) {
  TextCallback cb{on_text};
  if (!on_text.is_none()) params.on_text = cb;
  Busy busy(e);
  Completion c = run_interruptible(e.cancel, [&] { return call(params); });
  if (*cb.error) std::rethrow_exception(*cb.error);
  return completion_dict(c);
}

#define KVSQ_GENERATE_ARGS                                                                                             \
  "max_tokens"_a = 128, "temperature"_a = 0.0f, "top_k"_a = 40, "top_p"_a = 0.95f, "min_p"_a = 0.05f, "seed"_a = 42, \
  "stop"_a = std::vector<std::string>{}, "on_text"_a = nb::none(), "ignore_eos"_a = false

}  // namespace

void bind_engine(nb::module_& m) {
  nb::class_<CacheSnapshot>(m, "CacheSnapshot", "The cache's runs at one moment (Engine.cache_snapshot()).")
      .def("keys", [](const CacheSnapshot& c, int64_t l, int64_t h) { return c.get(CachePart::Keys, l, h); }, "layer"_a, "head"_a,
           cache_array_doc(CachePart::Keys))
      .def("values", [](const CacheSnapshot& c, int64_t l, int64_t h) { return c.get(CachePart::Values, l, h); }, "layer"_a,
           "head"_a, cache_array_doc(CachePart::Values))
      .def("positions", [](const CacheSnapshot& c, int64_t l, int64_t h) { return c.get(CachePart::Positions, l, h); },
           "layer"_a, "head"_a, cache_array_doc(CachePart::Positions));

  nb::class_<PyEngine>(m, "Engine", nb::dynamic_attr(),
                       "One sequence on a shared Model: a compression plan, a context prefilled (and compressed) once, "
                       "questions answered from it, or plain generation. Use one Engine per thread.")
      .def(
          "__init__",
          [](PyEngine* self, const Model& model, int64_t ctx_size, int64_t chunk, int threads, const std::string& kv_type,
             const std::optional<std::string>& type_k, const std::optional<std::string>& type_v,
             const std::string& kv_rotation, const std::string& kv_centering) {
            SessionOptions so;
            so.ctx_size = ctx_size;
            so.chunk = chunk;
            so.threads = threads;
            so.kv_type_k = type_k ? parse_kv_type(*type_k, "type_k") : parse_kv_type(kv_type);
            so.kv_type_v = type_v ? parse_kv_type(*type_v, "type_v") : parse_kv_type(kv_type);
            so.kv_rotation = parse_kv_transform(kv_rotation, "kv_rotation");
            so.kv_centering = parse_kv_transform(kv_centering, "kv_centering");
            new (self) PyEngine(model, so);
          },
          "model"_a, "ctx_size"_a = 0, "chunk"_a = 512, "threads"_a = 0, "kv_type"_a = "f16", "type_k"_a = nb::none(),
          "type_v"_a = nb::none(), "kv_rotation"_a = "auto", "kv_centering"_a = "auto",
          nb::keep_alive<1, 2>(),
          "ctx_size: most positions (0: the model's trained context); chunk: prefill chunk in tokens; threads: 0 for "
          "one per core; kv_type: the KV cache type of keys and values (f16, bf16, f32, q8_0, q4_0, kivi2); type_k, type_v: "
          "the keys' or the values' own type (llama.cpp's cache-type-k / cache-type-v); kv_rotation: store keys "
          "and values Walsh-Hadamard rotated: auto (quantized types), on or off; kv_centering: store keys centred "
          "(exact for attention): auto (quantized keys), on or off.")
      .def(
          "set_plan",
          [](PyEngine& e, const std::string& press, double ratio, const std::vector<std::string>& options, bool query_aware,
             bool every_chunk, int64_t decode_interval, int64_t decode_target, double decode_ratio, const std::string& decode_press,
             const std::vector<std::string>& decode_options) {
            Busy busy(e);
            return report_dict(e.engine->set_plan(make_plan(press, ratio, options, query_aware, every_chunk, decode_interval,
                                                            decode_target, decode_ratio, decode_press, decode_options)));
          },
          KVSQ_PLAN_ARGS, "Validates and adopts a compression plan for the next context; returns the plan as validated.")
      .def("plan", [](PyEngine& e) { return report_dict(e.engine->plan()); })
      .def(
          "context_ids", [](PyEngine& e, const std::string& context, bool chat) { return e.engine->context_ids(context, chat); },
          "context"_a, "chat"_a = true, "The context's tokens: the chat template's part before the question (kvpress's split).")
      .def(
          "question_ids",
          [](PyEngine& e, const std::string& context, const std::string& question, bool chat) {
            return e.engine->question_ids(context, question, chat);
          },
          "context"_a, "question"_a, "chat"_a = true, "A question's tokens after that context, the template's closing part included.")
      .def(
          "check_fits", [](PyEngine& e, int64_t tokens) { e.engine->check_fits(tokens); }, "tokens"_a,
          "Raises ContextFullError unless `tokens` positions fit the context size.")
      .def(
          "prefill_context",
          [](PyEngine& e, const std::vector<int32_t>& ids, int64_t reserve_tokens) {
            Busy busy(e);
            return run_interruptible(e.cancel, [&] { return e.engine->prefill_context(ids, reserve_tokens); });
          },
          "ids"_a, "reserve_tokens"_a = 0,
          "Evaluates the context, compressed as planned (Ctrl-C stops it between chunks). Returns milliseconds.")
      .def(
          "answer",
          [](PyEngine& e, const std::vector<int32_t>& question_ids, int64_t max_tokens, float temperature, int32_t top_k,
             float top_p, float min_p, uint64_t seed, const std::vector<std::string>& stop, nb::object on_text, bool ignore_eos,
             bool keep_context) {
            GenerateParams p = generate_params(e, max_tokens, temperature, top_k, top_p, min_p, seed, stop, ignore_eos);
            return run_generation(e, p, on_text, [&](const GenerateParams& params) {
              return e.engine->answer(question_ids, params, keep_context);
            });
          },
          "question_ids"_a, KVSQ_GENERATE_ARGS, "keep_context"_a = true,
          "Answers a question from the context, then restores the context for the next one. on_text(piece) streams "
          "the text; returning False stops.")
      .def(
          "generate",
          [](PyEngine& e, const std::vector<int32_t>& prompt, int64_t max_tokens, float temperature, int32_t top_k, float top_p,
             float min_p, uint64_t seed, const std::vector<std::string>& stop, nb::object on_text, bool ignore_eos) {
            GenerateParams p = generate_params(e, max_tokens, temperature, top_k, top_p, min_p, seed, stop, ignore_eos);
            return run_generation(e, p, on_text,
                                  [&](const GenerateParams& params) { return e.engine->generate(prompt, params); });
          },
          "prompt"_a, KVSQ_GENERATE_ARGS,
          "The prompt is the context (compressed as planned), then generation continues it; an empty prompt continues "
          "from the last logits (a loaded cache).")
      .def(
          "cancel", [](PyEngine& e) { e.cancel.store(true); },
          "Stops the work in progress (from any thread): prefill raises CancelledError, generation ends with "
          "stop_reason 'cancelled'.")
      .def(
          "save_prompt_cache",
          [](PyEngine& e, const std::string& path, const std::string& meta_json) {
            Busy busy(e);
            nb::gil_scoped_release release;
            e.engine->save_prompt_cache(path, meta_json);
          },
          "path"_a, "meta_json"_a = "", "Saves the context's (compressed) cache with its tokens and the model's fingerprint.")
      .def(
          "load_prompt_cache",
          [](PyEngine& e, const std::string& path, const std::vector<int32_t>& ids) {
            Busy busy(e);
            nb::gil_scoped_release release;
            return e.engine->load_prompt_cache(path, ids);
          },
          "path"_a, "ids"_a = std::vector<int32_t>{},
          "Loads a saved cache as the context (its tokens must be `ids` when given); returns the cached tokens.")
      .def_prop_ro("context_tokens", [](PyEngine& e) { return e.engine->context_tokens(); })
      .def_prop_ro("context_ms", [](PyEngine& e) { return e.engine->context_ms(); })
      .def_prop_ro("n_past", [](PyEngine& e) { return e.engine->session().next_position(); },
                   "The position the next token takes.")
      .def_prop_ro("ctx_size", [](PyEngine& e) { return e.engine->session().options().ctx_size; })
      .def_prop_ro("kv_type", [](PyEngine& e) {
        const SessionOptions& o = e.engine->session().options();
        return kv_types_label(o.kv_type_k, o.kv_type_v);
      }, "\"f16\" when keys and values share a type, else \"KEYS/VALUES\" (e.g. \"q8_0/f16\").")
      .def_prop_ro("type_k", [](PyEngine& e) { return std::string(kv_type_name(e.engine->session().options().kv_type_k)); })
      .def_prop_ro("type_v", [](PyEngine& e) { return std::string(kv_type_name(e.engine->session().options().kv_type_v)); })
      .def("accounting", [](PyEngine& e) { return accounting_dict(e.engine->accounting()); },
           "What the cache holds: kv_bytes_held (allocated), kv_bytes_used, kv_bytes_full (an uncompressed f16 cache), "
           "kv_lengths (n_layer x n_head_kv slots kept), context_tokens, layer_compressions, slots_removed.")
      .def(
          "cache_keys",
          [](PyEngine& e, int64_t layer, int64_t head) { return RunArrays(e.engine->session().cache(), layer, head).get(CachePart::Keys); },
          "layer"_a, "head"_a, cache_array_doc(CachePart::Keys))
      .def(
          "cache_values",
          [](PyEngine& e, int64_t layer, int64_t head) { return RunArrays(e.engine->session().cache(), layer, head).get(CachePart::Values); },
          "layer"_a, "head"_a, cache_array_doc(CachePart::Values))
      .def(
          "cache_positions",
          [](PyEngine& e, int64_t layer, int64_t head) { return RunArrays(e.engine->session().cache(), layer, head).get(CachePart::Positions); },
          "layer"_a, "head"_a, cache_array_doc(CachePart::Positions))
      .def(
          "cache_snapshot",
          [](PyEngine& e) {
            Busy busy(e);
            return CacheSnapshot(e.engine->session().cache());
          },
          "Every run of the cache now, held: its arrays (as cache_keys/cache_values/cache_positions give them) stay "
          "what they are while the engine goes on, which then writes to copies of the runs this holds.");
}

}  // namespace kvsqueeze::python
