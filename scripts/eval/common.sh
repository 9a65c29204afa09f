# Sourced by the scripts that make the docs' figures: works from the repository root, builds the
# CLI when it is missing and sets MODEL to the default model (fetched on first use).
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ -x build/kvsqueeze ] || scripts/setup.sh
MODEL="$(scripts/get_model.sh qwen2.5-0.5b-instruct)"
