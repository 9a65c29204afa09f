#!/usr/bin/env bash
# Fails when code outside a press's own file (src/press/NAME_press.cpp) names that press: a string
# literal that is exactly a press's name ("snapkv") in src/, tools/ or include/. Such code would
# branch on a press instead of reading its declared traits (PressTraits, PressInfo). Press names
# inside longer text (docs, help, examples such as "adakv(snapkv)") are fine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Literals that are not press names there: the session option "chunk" (also a wrapper's name)
# outside src/press/, and the bench command's default press, a user-facing default, not behaviour.
ALLOWED='^((src/(runtime|eval|engine|profile)|tools)/[^:]*:[0-9]+:.*"chunk"|tools/kvsqueeze/cmd_bench\.cpp:[0-9]+:.*"streaming_llm")'

status=0
for file in src/press/*_press.cpp; do
  name=$(basename "$file" _press.cpp)
  # Code only: what follows // on a line is a comment.
  hits=$(grep -rnF --include='*.cpp' --include='*.h' "\"$name\"" src tools include | grep -v "^$file:" |
         awk -v lit="\"$name\"" '{ code = $0; sub(/^[^:]*:[0-9]+:/, "", code); sub(/\/\/.*/, "", code); if (index(code, lit)) print }' |
         grep -vE "$ALLOWED" || true)
  if [ -n "$hits" ]; then
    echo "press '$name' is named outside $file:"
    echo "$hits"
    status=1
  fi
done
[ $status = 0 ] && echo "press names: only in their own files"
exit $status
