// RULER's 13 tasks (NVIDIA/RULER scripts/synthetic.yaml): names and dispatch to the generators.
#include <algorithm>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/tasks.h"
#include "ruler_common.h"
#include "task_text.h"

namespace kvsqueeze::eval {

std::vector<std::string> ruler_task_names() {
  return {"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
          "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2"};
}

std::vector<Sample> ruler_samples(const std::string& task, const RulerOptions& options, const Tokenizer& tokenizer) {
  const auto names = ruler_task_names();
  if (std::find(names.begin(), names.end(), task) == names.end())
    throw Error("unknown RULER task '" + task + "' (valid: " + join(names, ", ") + ")");
  if (options.length <= 0) throw Error("RULER length " + std::to_string(options.length) + " must be positive");
  if (options.samples_per_task < 0)
    throw Error("RULER samples per task " + std::to_string(options.samples_per_task) + " must not be negative");

  RulerTaskSpec spec;
  spec.name = task;
  RulerGenerator generate;
  if (task.rfind("niah_", 0) == 0) generate = ruler_niah_generator(task, options, spec);
  else if (task == "vt") generate = ruler_vt_generator(options, tokenizer, spec);
  else if (task == "cwe") generate = ruler_cwe_generator(options, spec);
  else if (task == "fwe") generate = ruler_fwe_generator(options, spec);
  else generate = ruler_qa_generator(task, options, spec);
  return generate_ruler_samples(spec, options, tokenizer, generate);
}

}  // namespace kvsqueeze::eval
