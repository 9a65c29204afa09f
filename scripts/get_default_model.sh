#!/usr/bin/env bash
# The default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M); kept for scripts that call it by this name.
exec "$(dirname "$0")/get_model.sh" qwen2.5-0.5b-instruct
