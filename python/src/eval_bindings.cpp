// kvsqueeze.evaluate's native part: eval::evaluate (the CLI's `eval`) with keyword arguments, built
// when the evaluation suite's libraries (cairo, ICU) were found; the module says which with
// HAVE_EVALUATE. Results go to OUT/results.jsonl (resumable); python/kvsqueeze/evaluate.py reads
// them back as rows.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>

#include "bindings.h"
#include "kvsqueeze/kv_cache.h"

#ifdef KVSQ_PYTHON_EVAL
#include "kvsqueeze/eval/evaluate.h"
#include "kvsqueeze/eval/report.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace kvsqueeze::python {

void bind_evaluate(nb::module_& m) {
#ifdef KVSQ_PYTHON_EVAL
  m.attr("HAVE_EVALUATE") = true;
  m.def(
      "evaluate",
      [](const std::string& kind, const std::string& model, const std::string& out_dir, const std::vector<std::string>& presses,
         const std::vector<double>& ratios, const std::vector<std::string>& options, const std::vector<int64_t>& lengths,
         const std::vector<double>& depths, const std::vector<std::string>& tasks, int64_t samples, const std::string& variant,
         int64_t needles, const std::string& haystack_dir, const std::string& qa_file, const std::string& longbench_dir,
         const std::vector<std::string>& datasets, int64_t limit, const std::string& text_file, int64_t continuation,
         const std::string& windows, bool chat, bool query_aware, bool every_chunk, int64_t decode_interval, int64_t decode_target,
         double decode_ratio, int64_t ctx_size, int64_t chunk, int threads, const std::string& kv_type,
         const std::optional<std::string>& reference_kv_type, uint64_t seed, bool resume, bool report) {
        eval::EvalSettings s;
        s.kind = kind;
        s.model_path = model;
        s.out_dir = out_dir;
        s.presses = presses;
        s.ratios = ratios;
        s.press_opts = options;
        s.chat = chat;
        s.query_aware = query_aware;
        s.policy.every_chunk = every_chunk;
        s.policy.decode_interval = decode_interval;
        s.policy.decode_target = decode_target;
        s.policy.decode_ratio = decode_ratio;
        s.session.ctx_size = ctx_size;
        s.session.chunk = chunk;
        s.session.threads = threads;
        s.session.kv_type_k = s.session.kv_type_v = parse_kv_type(kv_type);
        if (reference_kv_type) s.reference_kv_type = parse_kv_type(*reference_kv_type, "reference_kv_type");
        s.seed = seed;
        s.resume = resume;
        eval::TaskOptions t;
        t.lengths = lengths;
        t.depths = depths;
        t.tasks = tasks;
        t.samples = samples;
        t.variant = variant;
        t.needles = needles;
        t.haystack_dir = haystack_dir;
        t.qa_file = qa_file;
        t.longbench_dir = longbench_dir;
        t.datasets = datasets;
        t.limit = limit;
        t.text_file = text_file;
        t.continuation = continuation;
        t.windows = windows;
        int64_t appended = 0;
        {
          nb::gil_scoped_release release;
          appended = eval::evaluate(s, t);
          if (report) eval::write_report(eval::read_results(out_dir + "/results.jsonl"), out_dir);
        }
        return appended;
      },
      "kind"_a, "model"_a, "out_dir"_a, "presses"_a = std::vector<std::string>{}, "ratios"_a = std::vector<double>{},
      "options"_a = std::vector<std::string>{}, "lengths"_a = std::vector<int64_t>{}, "depths"_a = std::vector<double>{},
      "tasks"_a = std::vector<std::string>{}, "samples"_a = 0, "variant"_a = "single", "needles"_a = 3, "haystack_dir"_a = "",
      "qa_file"_a = "", "longbench_dir"_a = "", "datasets"_a = std::vector<std::string>{}, "limit"_a = 0, "text_file"_a = "",
      "continuation"_a = 256, "windows"_a = "seeded", "chat"_a = true, "query_aware"_a = false, "every_chunk"_a = false,
      "decode_interval"_a = 0, "decode_target"_a = 0, "decode_ratio"_a = 0.0, "ctx_size"_a = 0, "chunk"_a = 512, "threads"_a = 0,
      "kv_type"_a = "f16", "reference_kv_type"_a = nb::none(), "seed"_a = 42, "resume"_a = true, "report"_a = false,
      "Runs an evaluation grid as `kvsqueeze eval` does, appending to OUT_DIR/results.jsonl (cells already there are "
      "skipped); returns the number of results appended. kvsqueeze.evaluate() wraps it.");
#else
  m.attr("HAVE_EVALUATE") = false;
#endif
}

}  // namespace kvsqueeze::python
