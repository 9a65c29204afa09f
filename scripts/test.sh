#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, a warnings-as-errors build, every test, the
# same tests under ASan/UBSan, and short libFuzzer runs of the GGUF parser, the prompt cache loader,
# the press expression parser, the evaluation file readers and the server's request parser; the
# HTTP server through the openai client.
set -euo pipefail
cd "$(dirname "$0")/.."
export KVSQ_CACHE="${KVSQ_CACHE:-$HOME/.cache/kvsqueeze}"
export KVSQ_PYTHON="$KVSQ_CACHE/venv/bin/python"
JOBS="${KVSQ_JOBS:-$(nproc)}"

KVSQ_CMAKE_ARGS="-DKVSQ_WERROR=ON" scripts/setup.sh
# The same compiler cache as setup.sh for the sanitizer and fuzzing builds.
export CCACHE_DIR="${CCACHE_DIR:-$KVSQ_CACHE/ccache}" CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
LAUNCHER="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"
export KVSQ_DEFAULT_MODEL="$(scripts/get_model.sh qwen2.5-0.5b-instruct)"
export KVSQ_QWEN15_MODEL="$(scripts/get_model.sh qwen2.5-1.5b-instruct)"
export KVSQ_GEMMA_MODEL="$(scripts/get_model.sh gemma3-270m)"

echo "== tests (Release, -Werror)"
# Test processes run side by side, one thread each: oversubscribed OpenMP teams crawl.
OMP_NUM_THREADS=1 ctest --test-dir build --output-on-failure -j "$JOBS"

echo "== the example program built against the installed engine (cmake --install, find_package(kvsqueeze))"
example="$(mktemp -d)"
cmake --install build --prefix "$example/prefix" >/dev/null
cmake -S examples/installed -B "$example/build" -G Ninja -DCMAKE_PREFIX_PATH="$example/prefix" $LAUNCHER >/dev/null
ninja -C "$example/build" >/dev/null
printf 'Lily lived in a small house by the sea with her dog Max. Every morning they walked to the market, where the baker gave Max a bone. One day the baker was sick, so Lily baked bread for the whole town.\n' >"$example/doc.txt"
printf 'Who baked bread?\nWhat did the baker give Max?\n' >"$example/questions.txt"
"$example/build/long_context_qa" ../shared/models/stories260K.gguf "$example/doc.txt" "$example/questions.txt" \
  'knorm@0.5' 'snapkv(window_size=8)@0.5+q' >"$example/out.txt"
grep -c "KV cache:" "$example/out.txt" | grep -qx 3 || { cat "$example/out.txt"; echo "the installed example did not run every setting" >&2; exit 1; }
rm -rf "$example"

echo "== the Python package: pip install . (scikit-build-core + nanobind), then pytest"
# Built in build-py with the compiler cache and the same flags as build/ (-Werror), so the engine's
# objects come from ccache; without build isolation, the venv's pinned backend does the build.
"$KVSQ_PYTHON" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  -C build-dir=build-py -C cmake.define.KVSQ_WERROR=ON \
  -C cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache -C cmake.define.CMAKE_C_COMPILER_LAUNCHER=ccache .
# From outside the source tree, so that the installed package (not python/kvsqueeze) is imported.
(cd python/tests && OMP_NUM_THREADS=2 "$KVSQ_PYTHON" -m pytest -q -rs -p no:cacheprovider -c ../../pyproject.toml --rootdir ../.. .)
# The same wheel on a CPU without AVX-512: where this one has it, the stories260K tests again with the
# AVX2 kernels pinned (the run-time dispatch a wheel relies on; scalar is covered by test_kernel_variants).
if grep -q avx512_vnni /proc/cpuinfo; then
  echo "== the Python tests on stories260K with the AVX2 kernels (KVSQ_ISA=avx2)"
  (cd python/tests && KVSQ_ISA=avx2 OMP_NUM_THREADS=2 "$KVSQ_PYTHON" -m pytest -q -rs -p no:cacheprovider -m "not default_model" \
     -c ../../pyproject.toml --rootdir ../.. .)
fi

echo "== the HTTP server: kvsqueeze serve through the openai client (tests/server)"
(cd tests/server && OMP_NUM_THREADS=1 "$KVSQ_PYTHON" -m pytest -q -rs -p no:cacheprovider -c ../../pyproject.toml --rootdir ../.. .)

echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer (clang; the libFuzzer targets come from the same build)"
# One sanitizer build serves the tests and the fuzzers: compiling the engine once more for a separate
# fuzzing build doubled the CI's compile time. -Werror stays with the gcc build above (clang 14
# warns where gcc does not, e.g. on unvectorizable `omp simd` loops).
CC=clang CXX=clang++ cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSQ_SANITIZE=ON -DKVSQ_FUZZ=ON \
  -DKVSQ_BUILD_BENCH=OFF $LAUNCHER >/dev/null
ninja -C build-sanitize >/dev/null
# The slowest end-to-end checks on the default model run only in the optimised build.
OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-sanitize --output-on-failure -j "$JOBS" -E "DefaultModel"

# Runs the libFuzzer target TARGET for SECONDS from the seeds in CORPUS (removed after).
fuzz() {
  local target="$1" seconds="$2" max_len="$3" corpus="$4"
  build-sanitize/fuzz/"$target" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=4096 \
    -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
  rm -rf "$corpus"
}

echo "== fuzzing the GGUF parser and tokenizer builder (libFuzzer, ${KVSQ_FUZZ_SECONDS:-60}s)"
corpus="$(mktemp -d)"
cp ../shared/models/stories260K.gguf "$corpus/" 2>/dev/null || true
fuzz gguf_fuzz "${KVSQ_FUZZ_SECONDS:-60}" 65536 "$corpus"

echo "== fuzzing the prompt cache loader (libFuzzer, ${KVSQ_FUZZ_CACHE_SECONDS:-30}s)"
corpus="$(mktemp -d)"
# Seeds: small real cache files (plain and -q context, f16 and f32) saved by the CLI.
build/kvsqueeze generate -m ../shared/models/stories260K.gguf -p "Once upon a time" -n 0 --json \
  --save-cache "$corpus/plain.kvc" >/dev/null 2>&1 || true
build/kvsqueeze generate -m ../shared/models/stories260K.gguf -p "Lily had a ball." -q "What?" -n 0 --json --kv-type f32 \
  --save-cache "$corpus/context.kvc" >/dev/null 2>&1 || true
fuzz cache_file_fuzz "${KVSQ_FUZZ_CACHE_SECONDS:-30}" 65536 "$corpus"
echo "== fuzzing the press expression and option parser (libFuzzer, ${KVSQ_FUZZ_PRESS_SECONDS:-20}s)"
corpus="$(mktemp -d)"
# Seeds: expressions (first line) with --press-opt options (further lines).
printf 'snapkv(window_size=8, kernel_size=3)' >"$corpus/scorer"
printf 'adakv(expected_attention(epsilon=0.01))\nalpha_safeguard=0.3' >"$corpus/wrapper"
printf 'composed(snapkv,think, ratios=0.2:0.1)\nthink.key_channel_compression_ratio=0.5' >"$corpus/composed"
printf 'per_layer(knorm)\nratios=0.1,0.2,0.3' >"$corpus/per_layer"
printf 'lagkv(mode=lagkv, lag_size=16)\nlagkv.n_sink=2' >"$corpus/choice"
fuzz press_expression_fuzz "${KVSQ_FUZZ_PRESS_SECONDS:-20}" 512 "$corpus"
echo "== fuzzing the evaluation file readers: results, LongBench JSONL, RULER QA sources (libFuzzer, ${KVSQ_FUZZ_EVAL_SECONDS:-20}s)"
corpus="$(mktemp -d)"
# Seeds: the first byte picks the reader (0 results, 1 LongBench trec, 2 SQuAD, 3 HotpotQA).
printf '\x00{"kind":"kld","key":"a","score":1}\n{"kind":"kld"' >"$corpus/results"
printf '\x01{"input": "Q?", "context": "Question: x\\nType: City\\n", "answers": ["City"], "length": 20, "dataset": "trec", "language": "en", "all_classes": ["City", "Individual"], "_id": "t1"}\n' >"$corpus/longbench"
printf '\x02{"data":[{"title":"T","paragraphs":[{"context":"Paris is in France.","qas":[{"question":"Where is Paris?","id":"1","answers":[{"text":"France","answer_start":12}],"is_impossible":false}]}]}]}' >"$corpus/squad"
printf '\x03[{"_id":"h","question":"Q?","answer":"A","context":[["T",["A is here."]]],"supporting_facts":[["T",0]]}]' >"$corpus/hotpotqa"
fuzz eval_inputs_fuzz "${KVSQ_FUZZ_EVAL_SECONDS:-20}" 4096 "$corpus"
echo "== fuzzing the server's request parser (libFuzzer, ${KVSQ_FUZZ_SERVER_SECONDS:-15}s)"
corpus="$(mktemp -d)"
# Seeds: the first byte picks the endpoint (0 completions, 1 chat, 2 a /contexts file name), the rest is the JSON body.
printf '\x00{"prompt":"Once","max_tokens":8,"temperature":0,"stop":["."],"logprobs":2,"ignore_eos":true,"kv_press":"snapkv","kv_ratio":0.5}' >"$corpus/completion"
printf '\x01{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":3}' >"$corpus/chat"
printf '\x00{"prompt":["x"],"kv_press":"adakv(expected_attention)","kv_budget":64,"kv_press_options":{"alpha_safeguard":0.3},"kv_decode_interval":8,"kv_decode_target":32}' >"$corpus/press"
printf '\x02{"filename":"doc-1.kvc"}' >"$corpus/context_file"
fuzz server_request_fuzz "${KVSQ_FUZZ_SERVER_SECONDS:-15}" 2048 "$corpus"
echo "== all test stages passed"
