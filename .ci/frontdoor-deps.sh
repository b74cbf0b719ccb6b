#!/usr/bin/env bash
# What the front-door tests need (sourced by .ci/run; owned by the front-door work):
#   nginx, openssl                  - Debian packages: the gateway and its generated CA
#   libnginx-mod-stream, tcpdump    - the replica link's TLS (nginx stream, a module in Debian) and the
#                                     capture that proves nothing crosses between hosts in clear
#   @anthropic-ai/claude-code, @openai/codex, opencode-ai - pinned npm CLIs, into the project-local prefix
#                                     .coderig/npm (git-ignored); tests look there
#   LiteLLM                         - the pinned litellm[proxy] in its own venv under
#                                     ~/.cache/coderig (never in the project venv)
# Installs only what is missing, so a warm machine pays nothing.
CLAUDE_CODE_VERSION="2.1.330"
CODEX_VERSION="0.169.0"
OPENCODE_VERSION="1.18.33"

_fd_missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || _fd_missing+=(nginx)
command -v openssl >/dev/null 2>&1 || _fd_missing+=(openssl)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || _fd_missing+=(libnginx-mod-stream)
command -v tcpdump >/dev/null 2>&1 || [ -x /usr/bin/tcpdump ] || _fd_missing+=(tcpdump)
if [ "${#_fd_missing[@]}" -gt 0 ]; then
  echo "frontdoor-deps: installing ${_fd_missing[*]}"
  if [ "$(id -u)" = 0 ]; then _fd_sudo=(); else _fd_sudo=(sudo -n); fi
  # shellcheck source=.ci/apt.sh
  source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
  ci_apt update -q
  ci_apt install -y -q --no-install-recommends \
    "${_fd_missing[@]}"
  # The package enables the system service; the tests run their own nginx, so stop it if started.
  "${_fd_sudo[@]}" service nginx stop >/dev/null 2>&1 || true
fi

_fd_prefix="$(pwd)/.coderig/npm"
_fd_npm=()
[ "$("$_fd_prefix/bin/claude" --version 2>/dev/null | cut -d' ' -f1)" = "$CLAUDE_CODE_VERSION" ] \
  || _fd_npm+=("@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION")
[ "$("$_fd_prefix/bin/codex" --version 2>/dev/null | cut -d' ' -f2)" = "$CODEX_VERSION" ] \
  || _fd_npm+=("@openai/codex@$CODEX_VERSION")
[ "$("$_fd_prefix/bin/opencode" --version 2>/dev/null)" = "$OPENCODE_VERSION" ] \
  || _fd_npm+=("opencode-ai@$OPENCODE_VERSION")
if [ "${#_fd_npm[@]}" -gt 0 ]; then
  echo "frontdoor-deps: npm installing ${_fd_npm[*]} into $_fd_prefix"
  # Claude Code's postinstall copies its native binary (an optional npm dependency) into place.
  npm install -g --silent --no-fund --no-audit --prefix "$_fd_prefix" "${_fd_npm[@]}" \
    --allow-scripts=@anthropic-ai/claude-code 2>/dev/null \
    || npm install -g --silent --no-fund --no-audit --prefix "$_fd_prefix" "${_fd_npm[@]}"
fi

# LiteLLM in its own cached venv, so the first front-door test does not pay for it.
uv run --frozen --quiet coderig frontdoor install-litellm >/dev/null

unset _fd_missing _fd_sudo _fd_prefix _fd_npm
