#!/usr/bin/env bash
# vLLM itself, so a test can run its own `vllm serve` argument parser and validators over every command
# coderig renders (tests/vllm/). Sourced by .ci/run (set -euo pipefail, repo root).
#   vllm==VLLM_VERSION   from PyPI into its own venv under ~/.cache/coderig (never the project venv),
#                        VLLM_TARGET_DEVICE=cpu: nothing here needs a GPU; only the parser, the
#                        config validators and the parser registries are used. ~4 GB, ~1-2 min cold.
# The version is the one coderig pins (coderig/core/versions.py VLLM_VERSION); a warm run costs nothing.
# CODERIG_VLLM_PYTHON is exported for the tests.
_vllm_deps() {
  local version extra cache_root venv t0 overrides
  version=$(sed -n 's/^VLLM_VERSION = "\(.*\)"$/\1/p' coderig/core/versions.py)
  if [ -z "$version" ]; then
    echo "vllm-deps: no VLLM_VERSION in coderig/core/versions.py" >&2
    return 1
  fi
  # Overrides a given vLLM needs to resolve from PyPI with uv (space separated), from versions.py.
  extra=$(sed -n 's/^VLLM_PIP_OVERRIDES = "\(.*\)"$/\1/p' coderig/core/versions.py)
  cache_root=${CODERIG_TOOLS_CACHE_ROOT:-$HOME/.cache/coderig}
  venv="$cache_root/vllm-$version${extra:+-$(echo "$extra" | sha256sum | cut -c1-8)}"
  if ! [ -e "$venv/.complete" ]; then
    rm -rf "$venv"
    t0=$SECONDS
    echo "vllm-deps: installing vllm==$version into $venv"
    uv venv --quiet --python-preference only-system "$venv" || return 1
    overrides="$venv/overrides.txt"
    # shellcheck disable=SC2086  # one override per word
    printf '%s\n' $extra >"$overrides"
    VLLM_TARGET_DEVICE=cpu uv pip install --quiet --python "$venv/bin/python" "vllm==$version" \
      --override "$overrides" || return 1
    touch "$venv/.complete"
    echo "vllm-deps: installed vllm==$version in $((SECONDS - t0))s"
  fi
  export CODERIG_VLLM_PYTHON="$venv/bin/python"
}
_vllm_deps
unset -f _vllm_deps
